// The Python extension: FFI handler capsules and cache controls. No numerics here.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <dlfcn.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include "diagnostics.hpp"
#include "handlers.hpp"
#include "handles.hpp"
#include "parallel.hpp"
#include "pattern.hpp"
#include "recycle.hpp"
#include "xla/ffi/api/c_api.h"

namespace py = pybind11;

namespace {
template <class T>
py::capsule encapsulate(T* fn) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, T, XLA_FFI_CallFrame*>,
                "an FFI handler must have the signature XLA_FFI_Error*(XLA_FFI_CallFrame*)");
  return py::capsule(reinterpret_cast<void*>(fn));
}

template <class T>
py::array_t<T> to_numpy(const std::vector<T>& v) {
  return py::array_t<T>(static_cast<py::ssize_t>(v.size()), v.data());
}

// A dict of counters: {name: value}, in the given order.
py::dict counters(std::initializer_list<std::pair<const char*, py::object>> items) {
  py::dict d;
  for (const auto& [name, value] : items) d[name] = value;
  return d;
}
using I = py::int_;

using Ints = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using Opts = py::array_t<double, py::array::c_style | py::array::forcecast>;

template <class S>
py::dict lu(Ints ai, Ints aj, py::array_t<S, py::array::c_style | py::array::forcecast> ax,
            int64_t n, Opts opts) {
  if (ai.size() != aj.size() || ai.size() != ax.size())
    throw klujax::InvalidArgument("klujax.lu: Ai, Aj and Ax differ in length");
  if (n < 0 || n > INT32_MAX) throw klujax::InvalidArgument("klujax.lu: n_col must be in [0, 2^31)");
  const klujax::Options o = klujax::Options::decode(opts.data(), opts.size(), "klujax.lu");
  klujax::LUFactors f;
  {
    py::gil_scoped_release release;
    f = klujax::lu_factors<S>(ai.data(), aj.data(), ai.size(), static_cast<int32_t>(n),
                              ax.data(), o);
  }
  if (f.n == 0 && n == 0) {
    f.Lp = f.Up = f.Fp = {0};
    f.R = {0};
  }
  py::dict d;
  d["Lp"] = to_numpy(f.Lp); d["Li"] = to_numpy(f.Li); d["Lx"] = to_numpy(f.Lx);
  d["Up"] = to_numpy(f.Up); d["Ui"] = to_numpy(f.Ui); d["Ux"] = to_numpy(f.Ux);
  d["Fp"] = to_numpy(f.Fp); d["Fi"] = to_numpy(f.Fi); d["Fx"] = to_numpy(f.Fx);
  d["P"] = to_numpy(f.P); d["Q"] = to_numpy(f.Q); d["Rs"] = to_numpy(f.Rs); d["R"] = to_numpy(f.R);
  return d;
}
}  // namespace

PYBIND11_MODULE(_klujax, m) {
  m.doc() = "klujax native backend: XLA FFI handlers over SuiteSparse KLU";
  klujax::install_block_recycler();  // before any SuiteSparse call of this process's klujax
  m.def("registrations", [] {  // [(op, version, capsule)]; names are made in klujax/_ops.py
    py::list out;
    for (auto& t : klujax::registrations())
      out.append(py::make_tuple(t.op, t.version,
                                encapsulate(reinterpret_cast<XLA_FFI_Handler*>(t.handler))));
    return out;
  });
  m.def("cache_info", [] {
    auto i = klujax::Cache::instance().info();
    return counters({{"patterns", I(i.patterns)}, {"numeric_sets", I(i.numeric_sets)},
                     {"spares", I(i.spares)}, {"bytes", I(i.bytes)}, {"limit_bytes", I(i.limit_bytes)},
                     {"pattern_hits", I(i.pattern_hits)}, {"pattern_misses", I(i.pattern_misses)},
                     {"numeric_hits", I(i.numeric_hits)}, {"numeric_misses", I(i.numeric_misses)},
                     {"refine_steps", I(i.refine_steps)}, {"refactor_fallbacks", I(i.refactor_fallbacks)},
                     {"tightenings", I(i.tightenings)},
                     {"plain_factors", I(klujax::SolverStats::instance().plain_factors.load())}});
  });
  // Threads doing klujax work inside parallel_chunks (callers + pool helpers): the cap
  // (core count or KLUJAX_NUM_THREADS), the count now, and peaks/counters since the last
  // reset_thread_stats(). For tests and benchmarks.
  m.def("thread_stats", [] {
    auto t = klujax::thread_stats();
    return counters({{"cap", I(t.cap)}, {"busy", I(t.busy)}, {"peak", I(t.peak)},
                     {"peak_callers", I(t.peak_callers)}, {"calls", I(t.callers_total)},
                     {"helpers_run", I(t.helpers_run)}, {"helpers_declined", I(t.helpers_declined)},
                     {"helpers_backed_off", I(t.helpers_backed_off)}});
  });
  m.def("reset_thread_stats", [] { klujax::reset_thread_stats(); });
  // Tests only: counts `delta` more (or, negative, fewer) busy threads, as if that many
  // callers were inside klujax, so that the slot admission is testable deterministically.
  m.def("_add_busy_for_tests", [](int64_t delta) {
    klujax::detail::thread_slots().busy.fetch_add(delta);
  });
  m.def("live_handles", [] {
    py::dict d;
    d["symbolic"] = klujax::Registry::instance().live_symbolic();
    d["numeric"] = klujax::Registry::instance().live_numeric();
    return d;
  });
  // Frees handles straight from Python (KLUHandleManager.close and its finalizer), with
  // no XLA dispatch: safe at interpreter shutdown, and cheap.
  m.def("free_handles", [](const std::string& kind, const std::vector<uint64_t>& ids) {
    int64_t freed = 0;
    auto& reg = klujax::Registry::instance();
    for (uint64_t id : ids) freed += kind == "numeric" ? reg.free_numeric(id) : reg.free_symbolic(id);
    return freed;
  });
  py::register_exception<klujax::InvalidArgument>(m, "InvalidArgument", PyExc_ValueError);
  // Real values first: pybind tries overloads in order, and complex never converts to real.
  m.def("lu", &lu<double>, py::arg("ai"), py::arg("aj"), py::arg("ax").noconvert(), py::arg("n"),
        py::arg("options"));
  m.def("lu", &lu<std::complex<double>>);
  m.def("clear_cache", [] {
    klujax::Cache::instance().clear();
    klujax::release_recycled_blocks();
  });
  // SuiteSparse's large freed blocks kept for the next factorization (recycle.hpp).
  m.def("recycle_info", [] {
    auto i = klujax::recycle_info();
    return counters({{"installed", py::bool_(i.installed)}, {"limit_bytes", I(i.limit_bytes)},
                     {"bytes", I(i.bytes)}, {"blocks", I(i.blocks)}, {"hits", I(i.hits)},
                     {"misses", I(i.misses)}});
  });
  m.def("set_cache_limit", [](int64_t bytes) { klujax::Cache::instance().set_limit(bytes); });
  // The XLA FFI API version of the headers this extension was compiled against, which
  // every handler reports to XLA at registration; XLA accepts it if it is not newer than
  // its own (same major, minor <= the runtime's).
  m.def("ffi_api_version", [] { return py::make_tuple(XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR); });
  // The solver backends this build has ("klu" always; "umfpack" when built with it).
  m.def("methods", [] {
    std::vector<std::string> out{"klu"};
    if (klujax::have_umfpack()) out.push_back("umfpack");
    return out;
  });
  // How a pattern is served: the backend "auto" resolves to and KLU's fill estimates.
  m.def("analysis_info", [](Ints ai, Ints aj, int64_t n, Opts opts) {
    if (ai.size() != aj.size()) throw klujax::InvalidArgument("analysis_info: Ai and Aj differ in length");
    if (n < 0 || n > INT32_MAX) throw klujax::InvalidArgument("analysis_info: n_col must be in [0, 2^31)");
    const klujax::Options o = klujax::Options::decode(opts.data(), opts.size(), "analysis_info");
    auto p = klujax::Cache::instance().pattern(ai.data(), aj.data(), ai.size(),
                                               static_cast<int32_t>(n), o, "analysis_info");
    py::dict d;
    d["method"] = p->method == klujax::Method::kUmfpack ? "umfpack" : "klu";
    klujax::FillEstimate e;
    if (p->klu) e = klujax::fill_estimate(*p->klu);
    d["flops"] = e.flops;
    d["lu_nnz"] = e.lu_nnz;
    d["nnz"] = p->nnz_csc();
    d["plan"] = p->other ? p->other->describe() : std::string();
    return d;
  });
  // The shared library that provides dgemm_ to this process (UMFPACK's BLAS), or "".
  m.def("blas_library", [] {
    Dl_info info;
    void* sym = dlsym(RTLD_DEFAULT, "dgemm_");
    if (sym && dladdr(sym, &info) && info.dli_fname) return std::string(info.dli_fname);
    return std::string();
  });
  m.attr("klu_version") = py::str(std::to_string(KLU_MAIN_VERSION) + "." +
                                  std::to_string(KLU_SUB_VERSION) + "." +
                                  std::to_string(KLU_SUBSUB_VERSION));
}
