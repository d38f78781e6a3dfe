// Recycling of SuiteSparse's large work blocks (recycle.cpp).
//
// A factorization allocates its factors and workspace in a few large blocks (UMFPACK: the
// numeric object's memory and the frontal work arrays, megabytes at n = 1000) and frees
// them when it is replaced. glibc hands blocks that large back to the operating system on
// free (munmap, or a trimmed heap top), so the next factorization page-faults the same
// amount of memory in again: 15-18% of a UMFPACK factorization of a random n = 1000
// matrix. klujax installs SuiteSparse allocation hooks that keep up to a bounded number
// of bytes of freed large blocks and hand them out again. Every block is an ordinary
// malloc block, so blocks may be freed by either allocator.
#pragma once

#include <cstddef>
#include <cstdint>

namespace klujax {

struct RecycleInfo {
  bool installed = false;  // the hooks are SuiteSparse's allocator
  size_t limit_bytes = 0;  // most bytes kept (KLUJAX_RECYCLE_MB, default 64)
  size_t bytes = 0;        // bytes kept now
  size_t blocks = 0;       // blocks kept now
  uint64_t hits = 0;       // large requests served from kept blocks
  uint64_t misses = 0;     // large requests that went to malloc
};

// Installs the hooks once, unless KLUJAX_RECYCLE_MB is 0 or another allocator is
// already installed in SuiteSparse (then it stays).
void install_block_recycler();
RecycleInfo recycle_info();
// Frees the kept blocks (klujax.clear_cache).
void release_recycled_blocks();

}  // namespace klujax
