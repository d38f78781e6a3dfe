// The process-wide cache: what is keyed by what, what is evicted when, what is pinned.
//
//   patterns   keyed by (COO indices compared in full, n, analysis options incl. method);
//              a hash of a sample of the indices only pre-filters. Most recent first;
//              at most 64, and within the byte limit.
//   sets       per pattern, most recent first:
//                keyed:   the factorizations of one exact block of values (raw bytes of
//                         Ax, element size, real/complex, factor options). A call with the
//                         same values only solves. At most 8 per pattern; with new values
//                         every call, the two most recent blocks of each batch size stay
//                         (see recycling below).
//                unkeyed: one factorization kept for its pivot order only (the next call
//                         with new values refactors it instead of pivoting afresh). At
//                         most 4 per pattern.
//              A call that needs numeric objects for new values takes the oldest unkeyed
//              set, or the oldest keyed set when the pattern keeps two or more (the newest
//              keyed set always stays), and refactors its objects. A keyed set whose
//              values were found again twice (a matrix solved again and again) is taken
//              only when the pattern holds 8 keyed sets: a stream of new values on the
//              same pattern recycles its own sets around it.
//   eviction   over the byte limit: sets of the least recently used patterns go first
//              (oldest first; sets found again twice only after all others), then
//              unpinned patterns (least recent first); the most recent pattern keeps
//              its analysis even when it alone exceeds the limit.
//   pinned     a pattern with live symbolic handles is never evicted (its sets may be):
//              every analyze() of one pattern yields the same Pattern while a handle
//              lives, so numeric handles factored through one work with every other.
//              clear() and a limit of 0 drop everything else.
// Every reuse is exact: a keyed hit compares the full value bytes, and a reused pivot
// order is checked by the accuracy check (driver.hpp), which falls back to fresh pivots.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string_view>

#include "pattern.hpp"

namespace klujax {

struct CacheInfo {
  int64_t patterns, numeric_sets, spares, bytes, limit_bytes;
  int64_t pattern_hits, pattern_misses, numeric_hits, numeric_misses;
  int64_t refine_steps, refactor_fallbacks, tightenings;
};

// Process-wide counters of the accuracy check (reported by cache_info).
struct CheckStats {
  std::atomic<int64_t> refine_steps{0};        // iterative refinement steps taken
  std::atomic<int64_t> refactor_fallbacks{0};  // reused pivot orders replaced by fresh ones
  std::atomic<int64_t> tightenings{0};  // loose factorizations replaced by strict ones
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

  // Removes and returns the keyed set of exactly `key` (`members` factorizations made
  // with the factor options of `opts`), or null. `hash` receives the key's hash (for a
  // new set of these values).
  std::unique_ptr<NumericSet> take_set(Pattern& p, bool is_complex, size_t elem_size,
                                       size_t members, const Options& opts,
                                       std::string_view key, uint64_t& hash);
  // A set of `members` factorizations whose objects may be refactored for new values
  // (see above), or null.
  std::unique_ptr<NumericSet> recycle_set(Pattern& p, bool is_complex, size_t members);
  // Keeps a set (keyed or not) if the pattern is cached and the set fits half the limit.
  void put_set(Pattern& p, std::unique_ptr<NumericSet> set);
  // One factorization to refactor (num null if there is none) / to keep for its pivots.
  Fact take_spare(Pattern& p, bool is_complex);
  void put_spare(Pattern& p, bool is_complex, Fact f);

  // Whether `members` factorizations of p are expected to take at most a quarter of the
  // limit (false until one factorization of p has been seen), and recording their size.
  bool fits(Pattern& p, int64_t members);
  void note_member_bytes(Pattern& p, size_t bytes);

  // Pins p (or the cached pattern equal to it, if p was evicted meanwhile) and returns
  // the pattern pinned.
  std::shared_ptr<Pattern> pin(const std::shared_ptr<Pattern>& p);
  void unpin(Pattern& p);

  void clear();
  void set_limit(int64_t bytes);
  CacheInfo info();

 private:
  Cache();
  void admit_locked(const std::shared_ptr<Pattern>& p);
  void drop_sets_locked(Pattern& p);
  void enforce_limit_locked();

  std::mutex mu_;
  std::list<std::shared_ptr<Pattern>> patterns_;  // most recent first
  int64_t used_ = 0;
  int64_t limit_;
  int64_t pattern_hits_ = 0, pattern_misses_ = 0, numeric_hits_ = 0, numeric_misses_ = 0;
};

}  // namespace klujax
