// XLA FFI handlers: decode buffers and attributes, check shapes, call the driver. One
// template per op; one macro line instantiates it for every dtype.
#include "handlers.hpp"

#include <cstdint>
#include <functional>
#include <new>
#include <string>

#include "driver.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace klujax {
namespace {

//== Plumbing ==//

class PoolExecutor final : public Executor {
 public:
  explicit PoolExecutor(ffi::ThreadPool& pool) : pool_(pool) {}
  int64_t num_threads() override { return pool_.num_threads(); }
  void schedule(std::function<void()> task) override { pool_.Schedule(std::move(task)); }

 private:
  ffi::ThreadPool& pool_;
};

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

// Checks the canonical shapes Ai, Aj (nnz,), Ax (la, nnz), b (lb, n, nrhs), x (l, n, nrhs).
template <class A, class B, class X>
BatchShape batch_shape(const char* op, int64_t nnz_i, int64_t nnz_j, const A& ax, const B& b,
                       const X& x) {
  auto ad = ax.dimensions(), bd = b.dimensions(), xd = x.dimensions();
  if (ad.size() != 2 || bd.size() != 3 || xd.size() != 3)
    shape_error(op, "internal rank mismatch (expected Ax 2D, b and x 3D)");
  BatchShape s{ad[0], bd[0], xd[0], xd[1], xd[2]};
  if (nnz_i != ad[1] || nnz_j != ad[1])
    shape_error(op, "Ai, Aj and Ax disagree on n_nz: " + std::to_string(nnz_i) + ", " +
                        std::to_string(nnz_j) + ", " + std::to_string(ad[1]));
  if (bd[1] != s.n || bd[2] != s.nrhs || (s.la != 1 && s.la != s.l) || (s.lb != 1 && s.lb != s.l))
    shape_error(op, "internal batch shape mismatch");
  if (s.n > INT32_MAX || s.n * s.nrhs * (s.la == 1 ? s.l : 1) > INT32_MAX)
    shape_error(op, "n_col or the number of right-hand sides exceeds 2^31-1");
  return s;
}

//== solve ==//

template <ffi::DataType DT>
ffi::Error SolveImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::S32, 1> ai,
                     ffi::Buffer<ffi::S32, 1> aj, ffi::Buffer<DT> ax, ffi::Buffer<DT> b,
                     ffi::ResultBuffer<DT> x, bool transpose, bool retain) {
  constexpr const char* op = "klujax.solve";
  return guarded(op, [&] {
    BatchShape s = batch_shape(op, ai.element_count(), aj.element_count(), ax, b, *x);
    auto p = Cache::instance().pattern(ai.typed_data(), aj.typed_data(), ai.element_count(),
                                       static_cast<int32_t>(s.n), op);
    PoolExecutor ex(pool);
    solve_batch(&ex, *p, ax.typed_data(), b.typed_data(), x->typed_data(), s, transpose, retain,
                op);
  });
}

template <ffi::DataType DT>
auto SolveBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .template Arg<ffi::Buffer<ffi::S32, 1>>()  // Ai
      .template Arg<ffi::Buffer<ffi::S32, 1>>()  // Aj
      .template Arg<ffi::Buffer<DT>>()           // Ax (la, nnz)
      .template Arg<ffi::Buffer<DT>>()           // b (lb, n, nrhs), rows minor
      .template Ret<ffi::Buffer<DT>>()           // x (l, n, nrhs), rows minor
      .template Attr<bool>("transpose")
      .template Attr<bool>("retain");
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
      .template Arg<ffi::Buffer<ffi::S32, 1>>()  // Ai
      .template Arg<ffi::Buffer<ffi::S32, 1>>()  // Aj
      .template Arg<ffi::Buffer<DT>>()           // Ax (la, nnz)
      .template Arg<ffi::Buffer<DT>>()           // x (lx, n, nrhs), rows minor
      .template Ret<ffi::Buffer<DT>>();          // y (l, n, nrhs), rows minor
}

}  // namespace

//== Handler symbols: one line per op, expanded per dtype ==//

#define KLUJAX_DTYPES(X, op, Op) X(op, Op, f32, F32) X(op, Op, f64, F64) \
  X(op, Op, c64, C64) X(op, Op, c128, C128)
#define KLUJAX_OPS(X) KLUJAX_DTYPES(X, solve, Solve) KLUJAX_DTYPES(X, dot, Dot)

#define KLUJAX_DEFINE(op, Op, sfx, DT) \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(klujax_##op##_##sfx, Op##Impl<ffi::DT>, Op##Binding<ffi::DT>());
KLUJAX_OPS(KLUJAX_DEFINE)
#undef KLUJAX_DEFINE

std::vector<std::pair<std::string, void*>> registrations() {
  std::vector<std::pair<std::string, void*>> out;
#define KLUJAX_REGISTER(op, Op, sfx, DT) \
  out.emplace_back("klujax_" #op "_" #sfx, reinterpret_cast<void*>(klujax_##op##_##sfx));
  KLUJAX_OPS(KLUJAX_REGISTER)
#undef KLUJAX_REGISTER
  return out;
}

}  // namespace klujax
