// COO -> CSC: index validation, the conversion KLU and UMFPACK take their input in, and
// the hashes that pre-filter cache lookups. Nothing here knows about solvers or caches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace klujax {

// Throws InvalidArgument naming `op` and `name` unless every index is in [0, n).
void validate_indices(const int32_t* idx, int64_t nnz, int64_t n, const char* op,
                      const char* name);

uint64_t hash_bytes(const void* data, size_t size, uint64_t seed);
// A hash of a sample of the buffer: only ever a pre-filter before a full comparison.
uint64_t hash_sample(const void* data, size_t size, uint64_t seed);

// The compressed-column form of a COO pattern: unique entries, rows ascending within each
// column, and where each COO entry went (duplicates share a slot).
struct Csc {
  int32_t n = 0;
  int64_t nnz = 0;             // COO entries as given (duplicates included)
  std::vector<int32_t> ap;     // (n + 1,) column pointers
  std::vector<int32_t> ai;     // (nnz_csc,) row indices
  std::vector<int32_t> slot;   // (nnz,) COO position -> CSC position

  int64_t nnz_csc() const { return static_cast<int64_t>(ai.size()); }

  // vals[slot[k]] += ax[k]: COO values -> CSC values, duplicates summed.
  template <class In, class S>
  void scatter(const In* ax, S* vals) const {
    const int64_t m = nnz_csc();
    for (int64_t p = 0; p < m; ++p) vals[p] = S(0);
    for (int64_t k = 0; k < nnz; ++k) vals[slot[k]] += static_cast<S>(ax[k]);
  }
};

// Indices must be validated first (validate_indices).
Csc coo_to_csc(const int32_t* ai, const int32_t* aj, int64_t nnz, int32_t n);

}  // namespace klujax
