#pragma once

#include <string>
#include <utility>
#include <vector>

namespace klujax {
// One FFI target: an op key ("solve_f64", "analyze"), its version and its
// XLA_FFI_Handler*. klujax/_ops.py names it klujax.<op>.v<version>.
struct Target {
  std::string op;
  int version;
  void* handler;
};

// Every FFI target this library defines, old versions included.
std::vector<Target> registrations();
}  // namespace klujax
