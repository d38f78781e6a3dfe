// The exception types of the native code. Exceptions never cross the FFI boundary:
// handlers.cpp turns them into ffi::Error.
#pragma once

#include <stdexcept>

namespace klujax {

// Bad user input (shape, index, handle): ffi::Error::InvalidArgument.
struct InvalidArgument : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Solver or system failure (out of memory, integer overflow): ffi::Error::Internal.
struct InternalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace klujax
