// XLA FFI handlers: decode buffers and attributes, check shapes, call the driver. One
// template per op; one macro line instantiates it for every dtype.
#include "handlers.hpp"

#include <cstdint>
#include <functional>
#include <new>
#include <string>

#include "diagnostics.hpp"
#include "driver.hpp"
#include "split.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace klujax {
namespace {

//== Plumbing ==//


// Runs fn, turning every C++ exception into an ffi::Error: nothing unwinds into XLA.
template <class Fn>
ffi::Error guarded(const char* op, Fn&& fn) {
  try {
    fn();
    return ffi::Error::Success();
  } catch (const InvalidArgument& e) {
    return ffi::Error::InvalidArgument(e.what());
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::string(op) + ": out of memory");
  } catch (const std::exception& e) {
    return ffi::Error::Internal(e.what());
  } catch (...) {
    return ffi::Error::Internal(std::string(op) + ": unknown native error");
  }
}

[[noreturn]] void shape_error(const char* op, const std::string& msg) {
  throw InvalidArgument(std::string(op) + ": " + msg);
}

template <class B, class X>
BatchShape rhs_shape(const char* op, int64_t la, const B& b, const X& x);

// Checks the canonical shapes Ai, Aj (nnz,), Ax (la, nnz), b (lb, n, nrhs), x (l, n, nrhs).
template <class A, class B, class X>
BatchShape batch_shape(const char* op, int64_t nnz_i, int64_t nnz_j, const A& ax, const B& b,
                       const X& x) {
  auto ad = ax.dimensions();
  if (ad.size() != 2) shape_error(op, "internal rank mismatch (expected Ax 2D)");
  if (nnz_i != ad[1] || nnz_j != ad[1])
    shape_error(op, "Ai, Aj and Ax disagree on n_nz: " + std::to_string(nnz_i) + ", " +
                        std::to_string(nnz_j) + ", " + std::to_string(ad[1]));
  return rhs_shape(op, ad[0], b, x);
}

// The same with la given directly (numeric handles instead of Ax).
template <class B, class X>
BatchShape rhs_shape(const char* op, int64_t la, const B& b, const X& x) {
  auto bd = b.dimensions(), xd = x.dimensions();
  if (bd.size() != 3 || xd.size() != 3) shape_error(op, "internal rank mismatch (b, x 3D)");
  BatchShape s{la, bd[0], xd[0], xd[1], xd[2]};
  if (bd[1] != s.n || bd[2] != s.nrhs || (s.la != 1 && s.la != s.l) || (s.lb != 1 && s.lb != s.l))
    shape_error(op, "internal batch shape mismatch");
  if (s.n > INT32_MAX || s.n * s.nrhs * (s.la == 1 ? s.l : 1) > INT32_MAX)
    shape_error(op, "n_col or the number of right-hand sides exceeds 2^31-1");
  return s;
}

// Buffer types shared by the bindings, and the prefix every pattern-taking op binds.
using Index = ffi::Buffer<ffi::S32, 1>;  // Ai or Aj (n_nz,)
using Handles = ffi::Buffer<ffi::U64>;   // symbolic () or numeric (n,) handles
using OptionsAttr = ffi::Span<const double>;  // klujax.KLUOptions, see options.hpp

Options options(OptionsAttr a, const char* op) { return Options::decode(a.begin(), a.size(), op); }

auto PatternBinding() { return ffi::Ffi::Bind().Arg<Index>().Arg<Index>(); }

//== solve ==//

template <ffi::DataType DT>
ffi::Error SolveImpl(ffi::Buffer<ffi::S32, 1> ai,
                     ffi::Buffer<ffi::S32, 1> aj, ffi::Buffer<DT> ax, ffi::Buffer<DT> b,
                     ffi::RemainingArgs /*dependency: ordering only*/,
                     ffi::ResultBuffer<DT> x, bool transpose, bool retain, OptionsAttr opts) {
  constexpr const char* op = "klujax.solve";
  return guarded(op, [&] {
    const Options o = options(opts, op);
    BatchShape s = batch_shape(op, ai.element_count(), aj.element_count(), ax, b, *x);
    auto p = Cache::instance().pattern(ai.typed_data(), aj.typed_data(), ai.element_count(),
                                       static_cast<int32_t>(s.n), o, op);
    solve_batch(&WorkerPool::instance(), *p, ax.typed_data(), b.typed_data(), x->typed_data(),
                s, transpose, retain, o, op);
  });
}

template <ffi::DataType DT>
auto SolveBinding() {
  return PatternBinding()
      .template Arg<ffi::Buffer<DT>>()           // Ax (la, nnz)
      .template Arg<ffi::Buffer<DT>>()           // b (lb, n, nrhs), rows minor
      .RemainingArgs()                           // dependency (ordering only)
      .template Ret<ffi::Buffer<DT>>()           // x (l, n, nrhs), rows minor
      .template Attr<bool>("transpose")
      .template Attr<bool>("retain")
      .template Attr<OptionsAttr>("options");
}

//== dot ==//

template <ffi::DataType DT>
ffi::Error DotImpl(ffi::Buffer<ffi::S32, 1> ai, ffi::Buffer<ffi::S32, 1> aj, ffi::Buffer<DT> ax,
                   ffi::Buffer<DT> x, ffi::ResultBuffer<DT> y) {
  constexpr const char* op = "klujax.dot";
  return guarded(op, [&] {
    BatchShape s = batch_shape(op, ai.element_count(), aj.element_count(), ax, x, *y);
    dot_batch(ai.typed_data(), aj.typed_data(), ai.element_count(), ax.typed_data(),
              x.typed_data(), y->typed_data(), s, op);
  });
}

template <ffi::DataType DT>
auto DotBinding() {
  return ffi::Ffi::Bind()
      .Arg<Index>()                              // Ai
      .Arg<Index>()                              // Aj
      .template Arg<ffi::Buffer<DT>>()           // Ax (la, nnz)
      .template Arg<ffi::Buffer<DT>>()           // x (lx, n, nrhs), rows minor
      .template Ret<ffi::Buffer<DT>>();          // y (l, n, nrhs), rows minor
}


//== split API ==//

std::shared_ptr<Pattern> symbolic_pattern(ffi::Buffer<ffi::U64> sym, const char* op) {
  if (sym.element_count() != 1) shape_error(op, "symbolic must be a single handle");
  return Registry::instance().symbolic(sym.typed_data()[0], op, "symbolic")->pattern;
}

ffi::Error AnalyzeImpl(ffi::Buffer<ffi::S32, 1> ai, ffi::Buffer<ffi::S32, 1> aj,
                       ffi::ResultBuffer<ffi::U64> out, int64_t n_col, OptionsAttr opts) {
  constexpr const char* op = "klujax.analyze";
  return guarded(op, [&] {
    const Options o = options(opts, op);
    if (ai.element_count() != aj.element_count()) shape_error(op, "Ai and Aj differ in length");
    if (n_col < 0 || n_col > INT32_MAX) shape_error(op, "n_col must be in [0, 2^31)");
    auto p = Cache::instance().pattern(ai.typed_data(), aj.typed_data(), ai.element_count(),
                                       static_cast<int32_t>(n_col), o, op);
    out->typed_data()[0] = Registry::instance().add_symbolic(std::move(p));
  });
}

template <ffi::DataType DT>
ffi::Error FactorImpl(ffi::Buffer<ffi::S32, 1> ai,
                      ffi::Buffer<ffi::S32, 1> aj, ffi::Buffer<DT, 2> ax,
                      ffi::Buffer<ffi::U64> sym, ffi::ResultBuffer<ffi::U64> out,
                      OptionsAttr opts) {
  constexpr const char* op = "klujax.factor";
  return guarded(op, [&] {
    const Options o = options(opts, op);
    auto p = symbolic_pattern(sym, op);
    const int64_t la = ax.dimensions()[0];
    check_same_pattern(*p, ai.typed_data(), aj.typed_data(), ai.element_count(), p->n, op);
    if (ax.dimensions()[1] != static_cast<int64_t>(ai.element_count())) shape_error(op, "Ax and Ai differ in n_nz");
    NumericObjs objs = factor_new(&WorkerPool::instance(), p, ax.typed_data(), la, o, op);
    for (int64_t m = 0; m < la; ++m)
      out->typed_data()[m] = Registry::instance().add_numeric(std::move(objs[m]));
  });
}

template <ffi::DataType DT>
ffi::Error RefactorImpl(ffi::Buffer<ffi::S32, 1> ai,
                        ffi::Buffer<ffi::S32, 1> aj, ffi::Buffer<DT, 2> ax,
                        ffi::Buffer<ffi::U64> num, ffi::Buffer<ffi::U64> sym,
                        ffi::RemainingArgs /*dependency: ordering only*/,
                        ffi::ResultBuffer<ffi::U64> out, OptionsAttr opts) {
  constexpr const char* op = "klujax.refactor";
  return guarded(op, [&] {
    const Options o = options(opts, op);
    using S = compute_t<ffi::NativeType<DT>>;
    auto p = symbolic_pattern(sym, op);
    const int64_t la = ax.dimensions()[0], ln = num.element_count();
    check_same_pattern(*p, ai.typed_data(), aj.typed_data(), ai.element_count(), p->n, op);
    if (ax.dimensions()[1] != static_cast<int64_t>(ai.element_count())) shape_error(op, "Ax and Ai differ in n_nz");
    if (la != ln && la != 1)
      shape_error(op, "Ax has " + std::to_string(la) + " batch members but numeric has " +
                          std::to_string(ln) + " handles");
    NumericObjs objs = lookup_numerics(num.typed_data(), ln, *p, is_complex_v<S>, op);
    if (p->n > 0) factor_into(&WorkerPool::instance(), ax.typed_data(), la, objs, o, op);
    // The same ids, as a new value: later uses consume it, which orders them after this.
    std::copy(num.typed_data(), num.typed_data() + ln, out->typed_data());
  });
}

template <ffi::DataType DT>
ffi::Error SolveWithSymbolImpl(ffi::Buffer<ffi::S32, 1> ai,
                               ffi::Buffer<ffi::S32, 1> aj, ffi::Buffer<DT> ax,
                               ffi::Buffer<DT> b, ffi::Buffer<ffi::U64> sym,
                               ffi::RemainingArgs /*dependency: ordering only*/,
                               ffi::ResultBuffer<DT> x, bool transpose, bool retain,
                               OptionsAttr opts) {
  constexpr const char* op = "klujax.solve_with_symbol";
  return guarded(op, [&] {
    const Options o = options(opts, op);
    BatchShape s = batch_shape(op, ai.element_count(), aj.element_count(), ax, b, *x);
    auto p = symbolic_pattern(sym, op);
    check_same_pattern(*p, ai.typed_data(), aj.typed_data(), ai.element_count(), s.n, op);
    solve_batch(&WorkerPool::instance(), *p, ax.typed_data(), b.typed_data(), x->typed_data(),
                s, transpose, retain, o, op);
  });
}

template <ffi::DataType DT>
ffi::Error SolveWithNumericImpl(ffi::Buffer<ffi::U64> num,
                                ffi::Buffer<DT> b, ffi::Buffer<ffi::U64> sym,
                                ffi::ResultBuffer<DT> x, bool transpose, OptionsAttr opts) {
  constexpr const char* op = "klujax.solve_with_numeric";
  return guarded(op, [&] {
    const Options o = options(opts, op);
    using S = compute_t<ffi::NativeType<DT>>;
    BatchShape s = rhs_shape(op, num.element_count(), b, *x);
    auto p = symbolic_pattern(sym, op);
    if (s.n != p->n)
      shape_error(op, "b has n_col=" + std::to_string(s.n) + " but the symbolic handle is for "
                      "n_col=" + std::to_string(p->n));
    NumericObjs objs =
        lookup_numerics(num.typed_data(), s.la, *p, is_complex_v<S>, op);
    solve_with_numerics(&WorkerPool::instance(), objs, b.typed_data(), x->typed_data(), s,
                        transpose, o, op);
  });
}

template <bool Numeric>
ffi::Error FreeImpl(ffi::Buffer<ffi::U64> h, ffi::RemainingArgs /*dependency: ordering only*/,
                    ffi::ResultBuffer<ffi::S32> out) {
  return guarded(Numeric ? "klujax.free_numeric" : "klujax.free_symbolic", [&] {
    int32_t freed = 0;
    for (size_t m = 0; m < h.element_count(); ++m)
      freed += static_cast<int32_t>(Numeric ? Registry::instance().free_numeric(h.typed_data()[m])
                                            : Registry::instance().free_symbolic(h.typed_data()[m]));
    out->typed_data()[0] = freed;
  });
}

template <ffi::DataType DT>
auto FactorBinding() {  // Ai, Aj, Ax (la, nnz), symbolic -> numeric (la,)
  return PatternBinding()
      .template Arg<ffi::Buffer<DT, 2>>()
      .template Arg<Handles>()
      .template Ret<Handles>()
      .template Attr<OptionsAttr>("options");
}

template <ffi::DataType DT>
auto RefactorBinding() {  // Ai, Aj, Ax, numeric, symbolic, dependency... -> numeric
  return PatternBinding()
      .template Arg<ffi::Buffer<DT, 2>>()
      .template Arg<Handles>()
      .template Arg<Handles>()
      .RemainingArgs()
      .template Ret<Handles>()
      .template Attr<OptionsAttr>("options");
}

template <ffi::DataType DT>
auto SolveWithSymbolBinding() {  // Ai, Aj, Ax, b, symbolic -> x
  return PatternBinding()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<Handles>()
      .RemainingArgs()
      .template Ret<ffi::Buffer<DT>>()
      .template Attr<bool>("transpose")
      .template Attr<bool>("retain")
      .template Attr<OptionsAttr>("options");
}

template <ffi::DataType DT>
auto SolveWithNumericBinding() {  // numeric, b, symbolic -> x
  return ffi::Ffi::Bind()
      .template Arg<Handles>()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<Handles>()
      .template Ret<ffi::Buffer<DT>>()
      .template Attr<bool>("transpose")
      .template Attr<OptionsAttr>("options");
}

auto AnalyzeBinding() {  // Ai, Aj -> symbolic
  return PatternBinding().Ret<Handles>().Attr<int64_t>("n_col").Attr<OptionsAttr>("options");
}

//== diagnostics ==//

// The pattern of a diagnostics call: Ai/Aj validated against n_col, from the cache.
std::shared_ptr<Pattern> pattern_for(const Index& ai, const Index& aj, int64_t n_col,
                                     const Options& o, const char* op) {
  if (ai.element_count() != aj.element_count()) shape_error(op, "Ai and Aj differ in length");
  if (n_col < 0 || n_col > INT32_MAX) shape_error(op, "n_col must be in [0, 2^31)");
  return Cache::instance().pattern(ai.typed_data(), aj.typed_data(), ai.element_count(),
                                   static_cast<int32_t>(n_col), o, op);
}

template <ffi::DataType DT>
ffi::Error DiagnoseImpl(Index ai, Index aj, ffi::Buffer<DT, 2> ax, ffi::ResultBuffer<DT, 2> out,
                        int64_t n_col, int64_t what, OptionsAttr opts) {
  constexpr const char* op = "klujax.diagnostics";
  return guarded(op, [&] {
    const Options o = options(opts, op);
    if (what < 0 || what > 2) shape_error(op, "unknown diagnostic");
    auto p = pattern_for(ai, aj, n_col, o, op);
    diagnose_batch(&WorkerPool::instance(), *p, ax.typed_data(), ax.dimensions()[0],
                   static_cast<Diag>(what), o, out->typed_data(), op);
  });
}

template <ffi::DataType DT>
auto DiagnoseBinding() {  // Ai, Aj, Ax (la, nnz) -> (la, 2)
  return PatternBinding()
      .template Arg<ffi::Buffer<DT, 2>>()
      .template Ret<ffi::Buffer<DT, 2>>()
      .template Attr<int64_t>("n_col")
      .template Attr<int64_t>("what")
      .template Attr<OptionsAttr>("options");
}

// rcond / condest of existing numeric objects (their current factorization).
template <ffi::DataType DT>
ffi::Error DiagnoseNumericImpl(Handles num, ffi::ResultBuffer<DT, 2> out, int64_t what) {
  constexpr const char* op = "klujax.diagnostics";
  return guarded(op, [&] {
    if (what != static_cast<int64_t>(Diag::kRcond) && what != static_cast<int64_t>(Diag::kCondest))
      shape_error(op, "only rcond and condest are available for a numeric handle");
    auto* res = out->typed_data();
    for (size_t m = 0; m < num.element_count(); ++m) {
      auto obj = Registry::instance().numeric(num.typed_data()[m], op, "numeric");
      const Diag d = static_cast<Diag>(what);
      const double v = obj->is_complex ? numeric_diagnostic<cplx>(*obj, d, op)
                                       : numeric_diagnostic<double>(*obj, d, op);
      res[2 * m] = static_cast<ffi::NativeType<DT>>(v);
      res[2 * m + 1] = 0;
    }
  });
}

template <ffi::DataType DT>
auto DiagnoseNumericBinding() {  // numeric (ln,) -> (ln, 2)
  return ffi::Ffi::Bind().Arg<Handles>().template Ret<ffi::Buffer<DT, 2>>().template Attr<int64_t>("what");
}

template <ffi::DataType DT>
ffi::Error InverseEntriesImpl(Index ai, Index aj, ffi::Buffer<DT, 2> ax,
                              ffi::ResultBuffer<DT, 2> g, int64_t n_col, OptionsAttr opts) {
  constexpr const char* op = "klujax.slogdet";
  return guarded(op, [&] {
    const Options o = options(opts, op);
    auto p = pattern_for(ai, aj, n_col, o, op);
    inverse_entries_batch(&WorkerPool::instance(), *p, ax.typed_data(), ax.dimensions()[0], o,
                          g->typed_data(), op);
  });
}

template <ffi::DataType DT>
auto InverseEntriesBinding() {  // Ai, Aj, Ax (la, nnz) -> (la, nnz)
  return PatternBinding()
      .template Arg<ffi::Buffer<DT, 2>>()
      .template Ret<ffi::Buffer<DT, 2>>()
      .template Attr<int64_t>("n_col")
      .template Attr<OptionsAttr>("options");
}

auto FreeBinding() {  // handles, dependency... -> count
  return ffi::Ffi::Bind().Arg<Handles>().RemainingArgs().Ret<ffi::Buffer<ffi::S32>>();
}

}  // namespace

//== Handler symbols: one line per op and version, expanded per dtype ==//
// A target's version is part of its name (klujax/_ops.py: target_name) and never
// changes meaning: a new behaviour is a new version, listed next to the old one, which
// stays registered so that exported computations that call it keep working.

#define KLUJAX_DTYPES(X, op, Op, v) X(op, Op, v, f32, F32) X(op, Op, v, f64, F64) \
  X(op, Op, v, c64, C64) X(op, Op, v, c128, C128)
#define KLUJAX_OPS(X) KLUJAX_DTYPES(X, solve, Solve, 1) KLUJAX_DTYPES(X, dot, Dot, 1) \
  KLUJAX_DTYPES(X, factor, Factor, 1) KLUJAX_DTYPES(X, refactor, Refactor, 1)        \
  KLUJAX_DTYPES(X, solve_with_symbol, SolveWithSymbol, 1)                           \
  KLUJAX_DTYPES(X, solve_with_numeric, SolveWithNumeric, 1)                         \
  KLUJAX_DTYPES(X, diagnostics, Diagnose, 1)                                        \
  KLUJAX_DTYPES(X, diagnostics_numeric, DiagnoseNumeric, 1)                         \
  KLUJAX_DTYPES(X, inverse_entries, InverseEntries, 1)

#define KLUJAX_DEFINE(op, Op, v, sfx, DT)                                  \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(klujax_##op##_##sfx##_v##v, Op##Impl<ffi::DT>, \
                                Op##Binding<ffi::DT>());
KLUJAX_OPS(KLUJAX_DEFINE)
#undef KLUJAX_DEFINE
XLA_FFI_DEFINE_HANDLER_SYMBOL(klujax_analyze_v1, AnalyzeImpl, AnalyzeBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(klujax_free_symbolic_v1, FreeImpl<false>, FreeBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(klujax_free_numeric_v1, FreeImpl<true>, FreeBinding());

std::vector<Target> registrations() {
  std::vector<Target> out;
#define KLUJAX_REGISTER(op, Op, v, sfx, DT) \
  out.push_back({#op "_" #sfx, v, reinterpret_cast<void*>(klujax_##op##_##sfx##_v##v)});
  KLUJAX_OPS(KLUJAX_REGISTER)
#undef KLUJAX_REGISTER
  out.push_back({"analyze", 1, reinterpret_cast<void*>(klujax_analyze_v1)});
  out.push_back({"free_symbolic", 1, reinterpret_cast<void*>(klujax_free_symbolic_v1)});
  out.push_back({"free_numeric", 1, reinterpret_cast<void*>(klujax_free_numeric_v1)});
  return out;
}

}  // namespace klujax
