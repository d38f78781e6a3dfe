// Driver functions of the split API (analyze -> factor/refactor -> solve with handles).
// They reuse the batched driver's pieces: factorize(), solve_in_place(), RhsBlocks.
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
  const size_t sz = sizeof(int32_t) * nnz;
  if (p.n != n || p.nnz != nnz ||
      (nnz && (std::memcmp(p.key_i.data(), ai, sz) || std::memcmp(p.key_j.data(), aj, sz))))
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
    if (out[m]->pattern.get() != &p)
      throw InvalidArgument(std::string(op) + ": numeric handle " + std::to_string(ids[m]) +
                            " was factored for another symbolic analysis");
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
void factor_into(Executor* ex, Pattern& p, const In* ax, int64_t la, const NumericObjs& objs,
                 const char* op) {
  using S = compute_t<In>;
  const int64_t count = static_cast<int64_t>(objs.size());
  parallel_chunks(ex, count, max_chunks_for(40.0 * p.nnz_csc(), count),
                  [&](int64_t lo, int64_t hi) {
                    Common c;
                    std::vector<S> vals(p.nnz_csc());
                    for (int64_t m = lo; m < hi; ++m) {
                      NumericObj& o = *objs[m];
                      std::lock_guard<std::mutex> lock(o.mu);
                      p.scatter(ax + (la == 1 ? 0 : m) * p.nnz, vals.data());
                      factorize(p, vals.data(), o.fact, c, op);
                    }
                  });
}

template <class In>
NumericObjs factor_new(Executor* ex, const std::shared_ptr<Pattern>& p, const In* ax,
                       int64_t la, const char* op) {
  NumericObjs objs(la);
  for (auto& o : objs) {
    o = std::make_shared<NumericObj>();
    o->pattern = p;
    o->is_complex = KluTraits<compute_t<In>>::is_complex;
  }
  if (p->n > 0) factor_into(ex, *p, ax, la, objs, op);
  return objs;
}

template <class In>
void solve_with_numerics(Executor* ex, Pattern& p, const NumericObjs& objs, const In* b, In* x,
                         const BatchShape& s, bool transpose, const char* op) {
  using S = compute_t<In>;
  if (s.l == 0 || s.n == 0 || s.nrhs == 0) return;
  const RhsBlocks<In> rhs(b, x, s);
  parallel_chunks(ex, s.la, max_chunks_for(8.0 * p.nnz_csc() * rhs.cols(), s.la),
                  [&](int64_t lo, int64_t hi) {
                    Common c;
                    std::vector<S> scratch = rhs.scratch();
                    for (int64_t m = lo; m < hi; ++m) {
                      NumericObj& o = *objs[m];
                      S* w = rhs.load(m, scratch);
                      {
                        std::lock_guard<std::mutex> lock(o.mu);
                        solve_in_place(p, o.fact, o.fact.ok, transpose, rhs.cols(), w, c, op);
                      }
                      rhs.store(m, w);
                    }
                  });
}

}  // namespace klujax
