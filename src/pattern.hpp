// A sparsity pattern: the COO indices it was given (its cache key), their CSC form, and
// the symbolic analyses of the backend that serves it. Immutable once build_pattern()
// returns, so calls, handles and the cache share it freely; the cache's bookkeeping on it
// is private to the cache (cache.hpp).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "csc.hpp"
#include "options.hpp"
#include "solver.hpp"

namespace klujax {

// Factorizations of one block of values (all members of a batched Ax). A keyed set holds
// the factorizations of exactly the values in `key` (raw bytes of the Ax block, made with
// factor options `opts`): a later call with the same values only solves. An unkeyed set
// holds one factorization whose values no longer matter: only its pivot order is reused.
struct NumericSet {
  bool keyed = false;
  bool is_complex = false;
  Options opts;          // factor options (tol, scale) the members were made with
  size_t elem_size = 0;  // bytes per value of the input dtype (f32 and f64 blocks differ)
  std::string key;
  uint64_t hash = 0;
  int64_t hits = 0;  // calls that found these values (Cache::take_set) since they were keyed
  std::vector<Fact> members;
  size_t bytes = 0;
  void count_bytes() {
    bytes = sizeof(NumericSet) + key.capacity();
    for (auto& f : members) bytes += f.total_bytes();
  }
};

class Cache;

struct Pattern : Csc {
  Options opts;                       // analysis options (ordering, btf, method): the key
  std::vector<int32_t> key_i, key_j;  // the COO indices: the cache key
  uint64_t hash = 0;
  Method method = Method::kKlu;       // the backend serving this pattern (never kAuto)
  std::unique_ptr<Analysis> klu;      // KLU's analysis; null when n == 0 or no entries
  std::unique_ptr<Analysis> other;    // the analysis of a non-KLU backend serving it
  size_t bytes = 0;

  // The analysis of the serving backend (null: no entries, the matrix is singular).
  const Analysis* analysis() const { return other ? other.get() : klu.get(); }
  template <class S>
  const Solver<S>& solver(const char* op) const { return klujax::solver<S>(method, op); }

 private:
  friend class Cache;
  // Guarded by the cache mutex.
  bool cached_ = false;
  int64_t pins_ = 0;          // live symbolic handles on this pattern
  size_t member_bytes_ = 0;   // size of one member's factorization, last seen
  std::list<std::unique_ptr<NumericSet>> sets_;  // most recent first
};

// Validates the indices, builds the CSC form and runs the analyses.
std::shared_ptr<Pattern> build_pattern(const int32_t* ai, const int32_t* aj, int64_t nnz,
                                       int32_t n, const Options& opts, const char* op);

uint64_t pattern_hash(const int32_t* ai, const int32_t* aj, int64_t nnz, int32_t n);

// Whether p was built from exactly these indices (its analysis options aside).
bool same_indices(const Pattern& p, const int32_t* ai, const int32_t* aj, int64_t nnz, int64_t n);
inline bool same_indices(const Pattern& p, const Pattern& q) {
  return &p == &q || same_indices(p, q.key_i.data(), q.key_j.data(), q.nnz, q.n);
}

}  // namespace klujax
