#include "csc.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "errors.hpp"

namespace klujax {

void validate_indices(const int32_t* idx, int64_t nnz, int64_t n, const char* op,
                      const char* name) {
  for (int64_t k = 0; k < nnz; ++k) {
    if (idx[k] < 0 || idx[k] >= n) {
      throw InvalidArgument(std::string(op) + ": " + name + "[" + std::to_string(k) +
                            "] = " + std::to_string(idx[k]) + " is outside [0, n_col=" +
                            std::to_string(n) + ")" +
                            (idx[k] < 0 ? " (negative, or too large for int32)" : ""));
    }
  }
}

uint64_t hash_bytes(const void* data, size_t size, uint64_t seed) {
  // Four independent multiply-xor lanes (instruction-level parallelism): only a
  // pre-filter before a full comparison, so speed matters more than quality.
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ULL;
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h[4] = {seed ^ size, seed + kMul, seed ^ 0x5555, seed * kMul + 1};
  size_t i = 0;
  for (; i + 32 <= size; i += 32) {
    uint64_t w[4];
    std::memcpy(w, p + i, 32);
    for (int l = 0; l < 4; ++l) h[l] = (h[l] ^ w[l]) * kMul;
  }
  uint64_t out = h[0] ^ (h[1] >> 7) ^ (h[2] << 11) ^ (h[3] >> 23);
  for (; i < size; ++i) out = (out ^ p[i]) * 0x100000001B3ULL;
  out ^= out >> 29;
  return out * kMul;
}

uint64_t hash_sample(const void* data, size_t size, uint64_t seed) {
  // Keys are compared in full on a hash match, so the hash may look at a sample: 512
  // words spread over the buffer (plus its end). Distinct matrices of a sweep or an
  // optimisation step differ nearly everywhere; two that collide cost one memcmp.
  constexpr size_t kFull = 8192, kSamples = 512;
  if (size <= kFull) return hash_bytes(data, size, seed);
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t words[kSamples + 1];
  const size_t stride = (size - 8) / kSamples;
  for (size_t k = 0; k < kSamples; ++k) std::memcpy(&words[k], p + k * stride, 8);
  std::memcpy(&words[kSamples], p + size - 8, 8);
  return hash_bytes(words, sizeof(words), seed ^ size);
}

Csc coo_to_csc(const int32_t* ai, const int32_t* aj, int64_t nnz, int32_t n) {
  Csc out;
  out.n = n;
  out.nnz = nnz;
  // Two stable counting sorts (by row, then by column) order the entries by (col, row);
  // equal neighbours are duplicates and share one CSC slot.
  std::vector<int32_t> count(static_cast<size_t>(n) + 1, 0), by_row(nnz), order(nnz);
  for (int64_t k = 0; k < nnz; ++k) ++count[ai[k] + 1];
  std::partial_sum(count.begin(), count.end(), count.begin());
  for (int64_t k = 0; k < nnz; ++k) by_row[count[ai[k]]++] = static_cast<int32_t>(k);
  std::fill(count.begin(), count.end(), 0);
  for (int64_t k = 0; k < nnz; ++k) ++count[aj[k] + 1];
  std::partial_sum(count.begin(), count.end(), count.begin());
  for (int64_t t = 0; t < nnz; ++t) {
    int32_t k = by_row[t];
    order[count[aj[k]]++] = k;
  }
  out.ap.assign(static_cast<size_t>(n) + 1, 0);
  out.slot.resize(nnz);
  out.ai.reserve(nnz);
  int32_t prev_i = -1, prev_j = -1;
  for (int64_t t = 0; t < nnz; ++t) {
    int32_t k = order[t];
    if (ai[k] != prev_i || aj[k] != prev_j) {
      out.ai.push_back(ai[k]);
      ++out.ap[aj[k] + 1];
      prev_i = ai[k];
      prev_j = aj[k];
    }
    out.slot[k] = static_cast<int32_t>(out.ai.size()) - 1;
  }
  std::partial_sum(out.ap.begin(), out.ap.end(), out.ap.begin());
  out.ai.shrink_to_fit();
  return out;
}

}  // namespace klujax
