// Driver functions of the split API (analyze -> factor/refactor -> solve with handles).
// They reuse the batched driver's pieces: load_values(), factorize(), solve_checked(),
// RhsBlocks. A numeric object always solves with the pattern (and symbolic analysis) it
// was factored with; the symbolic handle a call passes must be of the same indices, but
// may be another handle, or another analysis object of the same pattern.
#pragma once

#include <cstring>
#include <memory>
#include <vector>

#include "driver.hpp"
#include "handles.hpp"

namespace klujax {

using NumericObjs = std::vector<std::shared_ptr<NumericObj>>;

// Ai/Aj passed next to a symbolic handle must be the pattern it was analysed from.
inline void check_same_pattern(const Pattern& p, const int32_t* ai, const int32_t* aj,
                               int64_t nnz, int64_t n, const char* op) {
  if (!same_indices(p, ai, aj, nnz, n))
    throw InvalidArgument(
        std::string(op) + ": Ai/Aj/n_col are not the pattern the symbolic handle was analysed " +
        (p.n == n && p.nnz == nnz
             ? std::string("from (same n_col and n_nz, different indices)")
             : "from (got n_col=" + std::to_string(n) + ", n_nz=" + std::to_string(nnz) +
                   "; the handle has n_col=" + std::to_string(p.n) +
                   ", n_nz=" + std::to_string(p.nnz) + ")"));
}

inline NumericObjs lookup_numerics(const uint64_t* ids, int64_t count, const Pattern& p,
                                   bool is_complex, const char* op) {
  NumericObjs out(count);
  Registry& reg = Registry::instance();
  for (int64_t m = 0; m < count; ++m) {
    out[m] = reg.numeric(ids[m], op, "numeric");
    if (!same_indices(*out[m]->pattern, p))
      throw InvalidArgument(std::string(op) + ": numeric handle " + std::to_string(ids[m]) +
                            " was factored for another sparsity pattern than the symbolic "
                            "handle's");
    if (out[m]->is_complex != is_complex)
      throw InvalidArgument(std::string(op) + ": numeric handle " + std::to_string(ids[m]) +
                            " holds a " + (out[m]->is_complex ? "complex" : "real") +
                            " factorization but the values are " +
                            (is_complex ? "complex" : "real"));
  }
  return out;
}

// (Re)factors member m of ax (member 0 when la == 1) into objs[m], in parallel.
template <class In>
void factor_into(Executor* ex, const In* ax, int64_t la, const NumericObjs& objs,
                 const Options& o, const char* op) {
  using S = compute_t<In>;
  const int64_t count = static_cast<int64_t>(objs.size());
  if (count == 0) return;
  const double nnz = static_cast<double>(objs[0]->pattern->nnz_csc());
  parallel_chunks(ex, count, max_chunks_for(40.0 * nnz, count), [&](int64_t lo, int64_t hi) {
    for (int64_t m = lo; m < hi; ++m) {
      NumericObj& obj = *objs[m];
      Pattern& p = *obj.pattern;
      std::lock_guard<std::mutex> lock(obj.mu);
      load_values(p, ax + (la == 1 ? 0 : m) * p.nnz, obj.fact, o.check);
      factorize<S>(p, obj.fact, o, op);
    }
  });
}

template <class In>
NumericObjs factor_new(Executor* ex, const std::shared_ptr<Pattern>& p, const In* ax,
                       int64_t la, const Options& o, const char* op) {
  NumericObjs objs(la);
  for (auto& obj : objs) {
    obj = std::make_shared<NumericObj>();
    obj->pattern = p;
    obj->is_complex = is_complex_v<compute_t<In>>;
  }
  if (p->n > 0) factor_into(ex, ax, la, objs, o, op);
  return objs;
}

// Solves with existing factorizations; `o` gives the accuracy check (check, refine,
// target). A refactored object that misses the target is factored afresh (from the
// values it keeps, with its own tol and scale), under its lock.
template <class In>
void solve_with_numerics(Executor* ex, const NumericObjs& objs, const In* b, In* x,
                         const BatchShape& s, bool transpose, const Options& o, const char* op) {
  using S = compute_t<In>;
  if (s.l == 0 || s.n == 0 || s.nrhs == 0) return;
  const RhsBlocks<In> rhs(b, x, s);
  const double nnz = static_cast<double>(objs[0]->pattern->nnz_csc());
  parallel_chunks(ex, s.la, max_chunks_for(8.0 * nnz * rhs.cols(), s.la),
                  [&](int64_t lo, int64_t hi) {
                    SolveWork<S> ws;
                    std::vector<S> scratch = rhs.scratch();
                    for (int64_t m = lo; m < hi; ++m) {
                      NumericObj& obj = *objs[m];
                      S* w = rhs.load(m, scratch);
                      {
                        std::lock_guard<std::mutex> lock(obj.mu);
                        solve_checked(*obj.pattern, obj.fact, transpose, rhs.cols(), w, o, ws, op);
                      }
                      rhs.store(m, w);
                    }
                  });
}

}  // namespace klujax
