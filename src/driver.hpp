// The one batched driver behind every handler: COO pattern from the cache (validated and
// analysed once per pattern), then per batch member factor-or-refactor + solve, in
// parallel chunks. Right-hand sides arrive laid out as KLU wants them (each system's
// columns contiguous: [member][rhs][row]); XLA does any layout change before the call.
#pragma once

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "klu_traits.hpp"
#include "parallel.hpp"
#include "pattern.hpp"

namespace klujax {

// A refactorization (old pivot order, new values) is kept only if its pivots stay as
// healthy as a fresh factorization's: the cheap estimate min|u_kk|/max|u_kk| (klu_rcond,
// O(n)) may not fall below this factor times what the last fresh klu_factor of that
// numeric object had, else the member is factored afresh with new pivots. The pivot
// order of one matrix can be unstable for another of the same pattern (e.g. after a solve
// of unrelated values) and this catches it. klu_rgrowth (pivot growth) was also tried:
// it caught no case this misses in our tests and cost 10-25% of refactor+solve on
// patterns with much fill.
constexpr double kRefactorRatio = 0.1;
// Below this much estimated work a chunk is not worth a thread hand-off.
constexpr double kMinChunkNs = 40e3;

// Shapes, all row-major in the logical sense: Ax (la, nnz); b (lb, n, nrhs); x (l, n, nrhs)
// with la, lb in {1, l}. Memory of b and x is [member][rhs][row].
struct BatchShape {
  int64_t la, lb, l, n, nrhs;
};

inline int64_t max_chunks_for(double ns_per_item, int64_t items) {
  double total = ns_per_item * static_cast<double>(items);
  return std::max<int64_t>(1, static_cast<int64_t>(total / kMinChunkNs));
}

// Factors `vals` into f, refactoring f's existing object when it has one and the result
// passes the pivot check. Returns false if the matrix is singular (f keeps any object it
// had, which klu_refactor may reuse later).
template <class S>
bool factorize_impl(Pattern& p, S* vals, Fact& f, Common& c, const char* op) {
  using K = KluTraits<S>;
  klu_symbolic* sym = p.symbolic.get();
  if (!sym) return false;  // no entries at all: singular
  if (f.num) {
    if (K::refactor(p.ap_ptr(), p.ai_ptr(), vals, sym, f.num.get(), c.get()) &&
        c.c.status == KLU_OK) {
      K::rcond(sym, f.num.get(), c.get());
      if (c.c.rcond >= kRefactorRatio * f.ref_rcond) return true;  // NaN fails too
    } else {
      check_klu_status(c.c, op);
    }
  }
  const size_t before = c.c.memusage;
  NumericPtr fresh(K::factor(p.ap_ptr(), p.ai_ptr(), vals, sym, c.get()));
  if (!fresh) {
    check_klu_status(c.c, op);
    return false;  // KLU_SINGULAR
  }
  K::rcond(sym, fresh.get(), c.get());
  const double rc = c.c.rcond;
  f.num = std::move(fresh);
  // Non-finite values (NaN/Inf in Ax) give a meaningless reference: then no later
  // refactorization of this object is trusted until a fresh one is sane again.
  f.ref_rcond = std::isfinite(rc) && rc > 0 ? rc : HUGE_VAL;
  f.bytes = c.c.memusage > before ? c.c.memusage - before : 0;
  return true;
}

template <class S>
bool factorize(Pattern& p, S* vals, Fact& f, Common& c, const char* op) {
  f.ok = factorize_impl(p, vals, f, c, op);
  return f.ok;
}

template <class S>
S nan_value() {
  constexpr double q = std::numeric_limits<double>::quiet_NaN();
  if constexpr (KluTraits<S>::is_complex) return S(q, q);
  else return S(q);
}

template <class S>
void solve_in_place(Pattern& p, Fact& f, bool ok, bool transpose, int64_t cols, S* w,
                    Common& c, const char* op) {
  const int64_t n = p.n;
  if (!ok) {
    std::fill(w, w + n * cols, nan_value<S>());
    return;
  }
  using K = KluTraits<S>;
  int done = transpose ? K::tsolve(p.symbolic.get(), f.num.get(), static_cast<int>(n),
                                   static_cast<int>(cols), w, c.get())
                       : K::solve(p.symbolic.get(), f.num.get(), static_cast<int>(n),
                                  static_cast<int>(cols), w, c.get());
  if (!done) check_klu_status(c.c, op);
}

// The right-hand sides and results of one call, seen per factorization member m: the
// columns KLU solves in place (all n_lhs blocks at once when one matrix serves them).
template <class In>
struct RhsBlocks {
  using S = compute_t<In>;
  static constexpr bool direct = std::is_same_v<In, S>;
  const In* b;
  In* x;
  BatchShape s;
  int64_t blocks;  // output blocks per member: l when la == 1, else 1

  RhsBlocks(const In* b_, In* x_, const BatchShape& s_)
      : b(b_), x(x_), s(s_), blocks(s_.la == 1 ? s_.l : 1) {}
  int64_t cols() const { return blocks * s.nrhs; }
  int64_t size() const { return s.n * cols(); }
  std::vector<S> scratch() const { return std::vector<S>(direct ? 0 : size()); }

  // Copies (converting) member m's right-hand sides into its work area and returns it.
  S* load(int64_t m, std::vector<S>& scratch) const {
    S* w = direct ? reinterpret_cast<S*>(x) + m * size() : scratch.data();
    const int64_t sz = s.n * s.nrhs;
    for (int64_t k = 0; k < blocks; ++k) {
      const int64_t blk = m * blocks + k;
      const In* src = b + (s.lb == 1 ? 0 : blk) * sz;
      for (int64_t i = 0; i < sz; ++i) w[k * sz + i] = static_cast<S>(src[i]);
    }
    return w;
  }
  void store(int64_t m, const S* w) const {
    if constexpr (!direct) {
      In* dst = x + m * size();
      for (int64_t i = 0; i < size(); ++i) dst[i] = static_cast<In>(w[i]);
    }
  }
};

// The cache key of a block of values: its raw bytes (with is_complex and the element
// size, which tell f32 from f64 and c64 blocks of equal byte length).
template <class In>
std::string_view values_key(const In* ax, int64_t count) {
  return {reinterpret_cast<const char*>(ax), sizeof(In) * static_cast<size_t>(count)};
}

// x = A^-1 b (or A^-T b) for every member. `retain` keeps every member's factorization in
// the cache (keyed by the content of Ax) so that a later call with the same matrix, such
// as the transposed solve of reverse mode, skips factoring; it is what the JVP rule asks
// for. Without it, each chunk refactors one numeric object along its members.
template <class In>
void solve_batch(Executor* ex, Pattern& p, const In* ax, const In* b, In* x,
                 const BatchShape& s, bool transpose, bool retain, const char* op) {
  using S = compute_t<In>;
  constexpr bool cplx = KluTraits<S>::is_complex;
  if (s.l == 0 || s.n == 0 || s.nrhs == 0) return;
  Cache& cache = Cache::instance();
  const int64_t nnz = p.nnz;
  const RhsBlocks<In> rhs(b, x, s);
  const int64_t cols = rhs.cols();

  std::unique_ptr<NumericSet> set;
  std::string_view key;
  uint64_t key_hash = 0;
  if (retain) {
    key = values_key(ax, s.la * nnz);
    key_hash = hash_sample(key.data(), key.size(), 17);
    set = cache.take_set(p, cplx, sizeof(In), key, key_hash);
  }
  const bool hit = set != nullptr;
  if (retain && !hit) {
    // Reuse a previous set of this pattern: its numeric objects are refactored in place
    // with the new values (pivot check included), and its key buffer is overwritten.
    set = cache.recycle_set(p, cplx, s.la);
    if (!set) {
      set = std::make_unique<NumericSet>();
      set->members.resize(s.la);
    }
    set->is_complex = cplx;
    set->elem_size = sizeof(In);
    set->key.assign(key.data(), key.size());
    set->hash = key_hash;
  }

  const double ns_per_member = (hit ? 0.0 : 40.0 * p.nnz_csc()) + 8.0 * p.nnz_csc() * cols;
  parallel_chunks(ex, s.la, max_chunks_for(ns_per_member, s.la), [&](int64_t lo, int64_t hi) {
    Common c;
    std::vector<S> vals(hit ? 0 : p.nnz_csc());
    std::vector<S> scratch = rhs.scratch();
    Fact chain = retain ? Fact{} : cache.take_spare(p, cplx);
    for (int64_t m = lo; m < hi; ++m) {
      S* w = rhs.load(m, scratch);
      if (hit) {
        Fact& f = set->members[m];
        solve_in_place(p, f, f.ok, transpose, cols, w, c, op);
      } else {
        p.scatter(ax + m * nnz, vals.data());
        if (retain && !set->members[m].num) set->members[m] = cache.take_spare(p, cplx);
        Fact& f = retain ? set->members[m] : chain;
        bool ok = factorize(p, vals.data(), f, c, op);
        solve_in_place(p, f, ok, transpose, cols, w, c, op);
      }
      rhs.store(m, w);
    }
    cache.put_spare(p, cplx, std::move(chain));
  });

  if (retain) {
    set->bytes = sizeof(NumericSet) + set->key.capacity();
    for (auto& f : set->members) set->bytes += f.bytes;
    cache.put_set(p, std::move(set));
  }
}

// y = A x (or A^T x when the caller swaps Ai and Aj). Duplicates add up.
template <class In>
void dot_batch(const int32_t* ai, const int32_t* aj, int64_t nnz, const In* ax, const In* x,
               In* y, const BatchShape& s, const char* op) {
  using S = compute_t<In>;
  validate_indices(ai, nnz, s.n, op, "Ai");
  validate_indices(aj, nnz, s.n, op, "Aj");
  std::vector<S> acc(s.n);
  for (int64_t m = 0; m < s.l; ++m) {
    const In* a = ax + (s.la == 1 ? 0 : m) * nnz;
    for (int64_t r = 0; r < s.nrhs; ++r) {
      const In* xr = x + ((s.lb == 1 ? 0 : m) * s.nrhs + r) * s.n;
      std::fill(acc.begin(), acc.end(), S(0));
      for (int64_t k = 0; k < nnz; ++k)
        acc[ai[k]] += static_cast<S>(a[k]) * static_cast<S>(xr[aj[k]]);
      In* yr = y + (m * s.nrhs + r) * s.n;
      for (int64_t i = 0; i < s.n; ++i) yr[i] = static_cast<In>(acc[i]);
    }
  }
}

}  // namespace klujax
