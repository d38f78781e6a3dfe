// Owning wrappers for KLU objects and the exception types used inside the native code.
// Exceptions never cross the FFI boundary: handlers.cpp turns them into ffi::Error.
#pragma once

#include <klu.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace klujax {

// Bad user input (shape, index, handle): ffi::Error::InvalidArgument.
struct InvalidArgument : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// KLU or system failure (out of memory, integer overflow): ffi::Error::Internal.
struct InternalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

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

}  // namespace klujax
