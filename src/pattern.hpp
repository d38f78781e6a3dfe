// A sparsity pattern in COO form, validated and converted once to KLU's CSC form, with
// its symbolic analysis; and the process-wide cache that lets repeated calls on the same
// pattern (compared by content, never by pointer or hash alone) skip all of that, and
// keeps recent numeric factorizations for reuse (reverse mode, repeated matrices) and
// spare numeric objects whose pivot order later calls refactor with.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "klu_raii.hpp"
#include "options.hpp"

namespace klujax {

// Throws InvalidArgument naming `op` and `name` unless every index is in [0, n).
void validate_indices(const int32_t* idx, int64_t nnz, int64_t n, const char* op,
                      const char* name);

uint64_t hash_bytes(const void* data, size_t size, uint64_t seed);
// A hash of a sample of the buffer: only ever a pre-filter before a full comparison.
uint64_t hash_sample(const void* data, size_t size, uint64_t seed);

// One factorization, the values it was made from (the residuals of the accuracy check and
// a fresh refactorization need them), and the quality reference its refactorizations are
// checked against.
struct Fact {
  NumericPtr num;           // may be null (never factored, or singular from the start)
  double ref_rcond = 0.0;   // klu_rcond of the last fresh klu_factor (+inf: trust no refactor)
  size_t bytes = 0;         // of the KLU numeric object
  bool ok = false;          // the last (re)factorization succeeded: num holds these values
  bool fresh = false;       // num came from klu_factor of these values (pivots not reused)
  Options opts;             // tol and scale num was factored with
  std::vector<double> vals; // CSC values (complex: interleaved re, im), duplicates summed
  double norm_inf = 0.0;    // ||A||inf (max row sum of |a_ij|) and ||A||1 (max column sum),
  double norm_one = 0.0;    // |re|+|im| for complex entries
  size_t total_bytes() const { return bytes + sizeof(double) * vals.capacity(); }
};

// Factorizations of one block of values (all members of a batched Ax), keyed by content.
struct NumericSet {
  bool is_complex = false;
  Options opts;          // factor options (tol, scale) the members were made with
  size_t elem_size = 0;  // bytes per value of the input dtype (f32 and f64 blocks differ)
  std::string key;       // raw bytes of the Ax block
  uint64_t hash = 0;
  std::vector<Fact> members;
  size_t bytes = 0;
};

struct Pattern {
  int32_t n = 0;
  Options opts;                      // analysis options (ordering, btf): part of the key
  int64_t nnz = 0;                   // COO entries as given (duplicates included)
  std::vector<int32_t> key_i, key_j; // the COO indices: the cache key
  std::vector<int32_t> ap, ai;       // CSC of the unique entries, rows ascending
  std::vector<int32_t> slot;         // COO position -> CSC position (duplicates share)
  SymbolicPtr symbolic;              // null when n == 0 or there are no entries
  uint64_t hash = 0;
  size_t bytes = 0;

  // Guarded by the cache mutex.
  bool cached = false;
  int64_t pins = 0;  // live symbolic handles on this pattern
  size_t member_bytes = 0;  // size of one member's factorization, last seen
  std::list<std::unique_ptr<NumericSet>> sets;  // most recent first
  std::vector<Fact> spares[2];                  // [is_complex]

  int64_t nnz_csc() const { return static_cast<int64_t>(ai.size()); }
  int* ap_ptr() { return ap.data(); }
  int* ai_ptr() { return ai.data(); }

  // vals[slot[k]] += ax[k]: COO values -> CSC values, duplicates summed.
  template <class In, class S>
  void scatter(const In* ax, S* vals) const {
    const int64_t m = nnz_csc();
    for (int64_t p = 0; p < m; ++p) vals[p] = S(0);
    for (int64_t k = 0; k < nnz; ++k) vals[slot[k]] += static_cast<S>(ax[k]);
  }
};

// Validates the indices, builds the CSC form and runs klu_analyze.
std::shared_ptr<Pattern> build_pattern(const int32_t* ai, const int32_t* aj, int64_t nnz,
                                       int32_t n, const Options& opts, const char* op);

// Whether p was built from exactly these indices (its analysis options aside).
bool same_indices(const Pattern& p, const int32_t* ai, const int32_t* aj, int64_t nnz, int64_t n);
inline bool same_indices(const Pattern& p, const Pattern& q) {
  return &p == &q || same_indices(p, q.key_i.data(), q.key_j.data(), q.nnz, q.n);
}

struct CacheInfo {
  int64_t patterns, numeric_sets, spares, bytes, limit_bytes;
  int64_t pattern_hits, pattern_misses, numeric_hits, numeric_misses;
  int64_t refine_steps, refactor_fallbacks;
};

// Process-wide counters of the accuracy check (reported by cache_info).
struct CheckStats {
  std::atomic<int64_t> refine_steps{0};        // iterative refinement steps taken
  std::atomic<int64_t> refactor_fallbacks{0};  // reused pivot orders replaced by fresh ones
  static CheckStats& instance() {
    static CheckStats* s = new CheckStats();
    return *s;
  }
};

class Cache {
 public:
  static Cache& instance();

  // The pattern with exactly these indices and analysis options, from the cache or
  // freshly built.
  std::shared_ptr<Pattern> pattern(const int32_t* ai, const int32_t* aj, int64_t nnz,
                                   int32_t n, const Options& opts, const char* op);
  // Removes and returns the `members` factorizations of exactly `key` made with the
  // factor options of `opts`, or null.
  std::unique_ptr<NumericSet> take_set(Pattern& p, bool is_complex, size_t elem_size,
                                       size_t members, const Options& opts,
                                       std::string_view key, uint64_t hash);
  void put_set(Pattern& p, std::unique_ptr<NumericSet> set);
  // Whether `members` factorizations of p are expected to take at most a quarter of the
  // limit (false until one factorization of p has been seen), and recording their size.
  bool fits(Pattern& p, int64_t members);
  void note_member_bytes(Pattern& p, size_t bytes);
  // The oldest kept set of `members` factorizations, if the pattern keeps at least two
  // (the newest always stays): its objects are refactored for new values, not rebuilt.
  std::unique_ptr<NumericSet> recycle_set(Pattern& p, bool is_complex, size_t members);
  // A numeric object of this pattern to refactor (num is null if there is none).
  Fact take_spare(Pattern& p, bool is_complex);
  void put_spare(Pattern& p, bool is_complex, Fact f);

  // Symbolic handles pin their pattern: lookups find it even after eviction (and put it
  // back in the cache), so every analyze() of one pattern yields the same Pattern object
  // while a handle is live.
  void pin(const std::shared_ptr<Pattern>& p);
  void unpin(Pattern& p);

  void clear();
  void set_limit(int64_t bytes);
  CacheInfo info();

 private:
  Cache();
  void enforce_limit_locked();
  void admit_locked(const std::shared_ptr<Pattern>& p);
  void drop_pattern_locked(Pattern& p);

  std::mutex mu_;
  std::list<std::shared_ptr<Pattern>> patterns_;  // most recent first
  std::list<std::shared_ptr<Pattern>> pinned_;    // patterns with live symbolic handles
  int64_t used_ = 0;
  int64_t limit_;
  int64_t max_patterns_ = 64;
  int64_t pattern_hits_ = 0, pattern_misses_ = 0, numeric_hits_ = 0, numeric_misses_ = 0;
};

}  // namespace klujax
