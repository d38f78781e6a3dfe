// Owning wrappers for KLU objects, and KLU status checks. Only the KLU backend
// (solver_klu.*) and klujax.lu's extraction include this.
#pragma once

#include <klu.h>

#include <memory>
#include <string>

#include "errors.hpp"
#include "options.hpp"

namespace klujax {

struct Common {
  klu_common c;
  Common() { klu_defaults(&c); }
  klu_common* get() { return &c; }
};

struct SymbolicDeleter {
  void operator()(klu_symbolic* s) const {
    Common c;
    klu_free_symbolic(&s, c.get());
  }
};
// klu_free_numeric and klu_z_free_numeric are the same function (klu.h says so).
struct NumericDeleter {
  void operator()(klu_numeric* n) const {
    Common c;
    klu_free_numeric(&n, c.get());
  }
};
using SymbolicPtr = std::unique_ptr<klu_symbolic, SymbolicDeleter>;
using NumericPtr = std::unique_ptr<klu_numeric, NumericDeleter>;

// Throws for KLU statuses that are failures of the library, not of the matrix.
inline void check_klu_status(const klu_common& c, const char* what) {
  switch (c.status) {
    case KLU_OK:
    case KLU_SINGULAR:
      return;
    case KLU_OUT_OF_MEMORY:
      throw InternalError(std::string(what) + ": KLU ran out of memory");
    case KLU_TOO_LARGE:
      throw InternalError(std::string(what) + ": integer overflow inside KLU (matrix too large)");
    case KLU_INVALID:
      throw InternalError(std::string(what) + ": KLU rejected its input (KLU_INVALID)");
    default:
      throw InternalError(std::string(what) + ": KLU failed with status " +
                          std::to_string(c.status));
  }
}

// A klu_common set up for these options.
inline Common make_common(const Options& o) {
  Common c;
  c.c.tol = o.tol;
  c.c.ordering = o.ordering;
  c.c.scale = o.scale;
  c.c.btf = o.btf ? 1 : 0;
  return c;
}

}  // namespace klujax
