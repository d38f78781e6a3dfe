#pragma once

#include <string>
#include <utility>
#include <vector>

namespace klujax {
// (target name, XLA_FFI_Handler*) for every FFI target this library defines.
std::vector<std::pair<std::string, void*>> registrations();
}  // namespace klujax
