// The Python extension: FFI handler capsules and cache controls. No numerics here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <type_traits>
#include <vector>

#include "handlers.hpp"
#include "handles.hpp"
#include "pattern.hpp"
#include "xla/ffi/api/c_api.h"

namespace py = pybind11;

namespace {
template <class T>
py::capsule encapsulate(T* fn) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, T, XLA_FFI_CallFrame*>,
                "an FFI handler must have the signature XLA_FFI_Error*(XLA_FFI_CallFrame*)");
  return py::capsule(reinterpret_cast<void*>(fn));
}
}  // namespace

PYBIND11_MODULE(_klujax, m) {
  m.doc() = "klujax native backend: XLA FFI handlers over SuiteSparse KLU";
  m.def("registrations", [] {
    py::dict d;
    for (auto& [name, fn] : klujax::registrations())
      d[py::str(name)] = encapsulate(reinterpret_cast<XLA_FFI_Handler*>(fn));
    return d;
  });
  m.def("cache_info", [] {
    auto i = klujax::Cache::instance().info();
    py::dict d;
    d["patterns"] = i.patterns;
    d["numeric_sets"] = i.numeric_sets;
    d["spares"] = i.spares;
    d["bytes"] = i.bytes;
    d["limit_bytes"] = i.limit_bytes;
    d["pattern_hits"] = i.pattern_hits;
    d["pattern_misses"] = i.pattern_misses;
    d["numeric_hits"] = i.numeric_hits;
    d["numeric_misses"] = i.numeric_misses;
    return d;
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
  m.def("clear_cache", [] { klujax::Cache::instance().clear(); });
  m.def("set_cache_limit", [](int64_t bytes) { klujax::Cache::instance().set_limit(bytes); });
  // The XLA FFI API version of the headers this extension was compiled against, which
  // every handler reports to XLA at registration; XLA accepts it if it is not newer than
  // its own (same major, minor <= the runtime's).
  m.def("ffi_api_version", [] { return py::make_tuple(XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR); });
  m.attr("klu_version") = py::str(std::to_string(KLU_MAIN_VERSION) + "." +
                                  std::to_string(KLU_SUB_VERSION) + "." +
                                  std::to_string(KLU_SUBSUB_VERSION));
}
