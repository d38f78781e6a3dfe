// The one batched driver behind every handler: COO pattern from the cache (validated and
// analysed once per pattern), then per batch member factor-or-refactor + solve, in
// parallel chunks. Right-hand sides arrive laid out as KLU wants them (each system's
// columns contiguous: [member][rhs][row]); XLA does any layout change before the call.
#pragma once

#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <type_traits>
#include <vector>

#include "cache.hpp"
#include "parallel.hpp"
#include "pattern.hpp"

namespace klujax {

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

//== Values of a factorization ==//

inline double abs1(double v) { return std::fabs(v); }
inline double abs1(const cplx& v) { return std::fabs(v.real()) + std::fabs(v.imag()); }

// The norms the backward error needs (||A||inf, ||A||1 with |re|+|im| moduli), once per
// set of values: computed on first need, so calls without the accuracy check skip them.
template <class S>
void ensure_norms(const Pattern& p, Fact& f) {
  if (f.has_norms) return;
  const S* v = f.values<S>();
  std::vector<double> rows(p.n, 0.0);
  double one = 0.0, total = 0.0;
  for (int32_t j = 0; j < p.n; ++j) {
    double col = 0.0;
    for (int32_t q = p.ap[j]; q < p.ap[j + 1]; ++q) {
      const double a = abs1(v[q]);
      col += a;
      rows[p.ai[q]] += a;
    }
    one = std::max(one, col);
    total += col;
  }
  double inf = 0.0;
  for (double r : rows) inf = std::max(inf, r);
  // std::max drops NaN: a non-finite entry shows in the total instead, and makes the
  // norms NaN (the backward error is then NaN, and so is every diagnostic).
  const double nan = std::numeric_limits<double>::quiet_NaN();
  f.norm_inf = std::isfinite(total) ? inf : nan;
  f.norm_one = std::isfinite(total) ? one : nan;
  f.has_norms = true;
}

// Loads COO values (one member of Ax) into f's CSC value buffer, duplicates summed; with
// `norms`, also their norms (else on first need, ensure_norms).
template <class In>
void load_values(const Pattern& p, const In* ax, Fact& f, bool norms = true) {
  using S = compute_t<In>;
  const int64_t m = p.nnz_csc();
  f.vals.resize(static_cast<size_t>(m) * (is_complex_v<S> ? 2 : 1));
  p.scatter(ax, f.values<S>());
  f.has_norms = false;
  f.strict = false;  // new values: the backend's fast pivoting first
  if (norms) ensure_norms<S>(p, f);
}

//== Factorization ==//

// A fresh factorization of f's values (new pivot order). Returns false if singular (f
// then keeps any object it had, which a later refactorization may reuse).
template <class S>
bool factor_fresh(const Pattern& p, Fact& f, const Options& o, const char* op) {
  const Analysis* an = p.analysis();
  if (!an) return false;
  const Solver<S>& solver = p.solver<S>(op);
  if (!solver.factor(p, *an, f, o, op)) return false;
  f.opts = o;
  f.fresh = true;
  f.loose = !f.strict && solver.tightens();
  f.refined = 0;
  return true;
}

// Factors f's values (load_values first), reusing the pivot order of f's existing
// factorization when it was made with the same factor options and the backend accepts
// the result (see Solver::refactor), else afresh. Sets and returns f.ok (false: singular).
template <class S>
bool factorize(const Pattern& p, Fact& f, const Options& o, const char* op) {
  f.ok = false;
  const Analysis* an = p.analysis();
  if (!an) return false;  // no entries at all: singular
  if (!o.check) f.strict = true;  // no accuracy check stands behind loose pivoting
  if (f.num && f.opts.same_factor(o) && p.solver<S>(op).refactor(p, *an, f, o, op)) {
    f.fresh = false;
    return f.ok = true;
  }
  if (factor_fresh<S>(p, f, o, op)) return f.ok = true;
  if (f.strict || !p.solver<S>(op).tightens()) return false;
  // Singular under loose pivoting: strict pivoting may still find nonzero pivots.
  f.strict = true;
  CheckStats::instance().tightenings += 1;
  return f.ok = factor_fresh<S>(p, f, o, op);
}

//== Checked solves ==//

template <class S>
S nan_value() {
  constexpr double q = std::numeric_limits<double>::quiet_NaN();
  if constexpr (is_complex_v<S>) return S(q, q);
  else return S(q);
}

// op(A) x = b in place for `cols` columns, with f's factors (f.ok must hold).
template <class S>
void solve_cols(const Pattern& p, Fact& f, bool transpose, int64_t cols, S* w, const char* op) {
  p.solver<S>(op).solve(p, *p.analysis(), f, transpose, cols, w, op);
}

// max_i abs1(v[i]), NaN if any v[i] is NaN or infinite. Four independent running maxima
// (the compiler vectorizes them) and a running sum of a - a, which is 0 for finite a and
// NaN otherwise: about twice as fast as one NaN-keeping max chain, which waits on each
// compare (residual of a 1000-node ladder: 4.7 -> 3.0 us).
template <class S>
double abs_max(const S* v, int64_t n) {
  double m[4] = {0, 0, 0, 0}, z = 0.0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) {
      const double a = abs1(v[i + k]);
      m[k] = a > m[k] ? a : m[k];
      z += a - a;
    }
  for (; i < n; ++i) {
    const double a = abs1(v[i]);
    m[0] = a > m[0] ? a : m[0];
    z += a - a;
  }
  if (z != 0.0) return std::numeric_limits<double>::quiet_NaN();  // z is 0 or NaN
  return std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
}

// r = b - op(A) x for `cols` columns; returns the largest normwise backward error
// ||r||inf / (||op(A)||inf ||x||inf + ||b||inf) over the columns (NaN if any of r, x, b
// has a NaN or an infinite entry). One pass over A per column (a scatter for A, a gather
// for A^T), the norms in separate passes over r, x and b.
template <class S>
double residual(const Pattern& p, const Fact& f, bool transpose, int64_t cols, const S* b,
                const S* x, S* r) {
  const int64_t n = p.n;
  const S* a = f.values<S>();
  const int32_t* ap = p.ap.data();
  const int32_t* ai = p.ai.data();
  const double anorm = transpose ? f.norm_one : f.norm_inf;
  double worst = 0.0;
  for (int64_t col = 0; col < cols; ++col) {
    const S* bc = b + col * n;
    const S* xc = x + col * n;
    S* rc = r + col * n;
    if (!transpose) {
      std::copy(bc, bc + n, rc);
      for (int64_t j = 0; j < n; ++j) {
        const S xj = xc[j];
        for (int32_t q = ap[j]; q < ap[j + 1]; ++q) rc[ai[q]] -= a[q] * xj;
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        S s = bc[j];
        for (int32_t q = ap[j]; q < ap[j + 1]; ++q) s -= a[q] * xc[ai[q]];
        rc[j] = s;
      }
    }
    const double rn = abs_max(rc, n), xn = abs_max(xc, n), bn = abs_max(bc, n);
    if (!(rn == rn) || !(xn == xn) || !(bn == bn)) return std::numeric_limits<double>::quiet_NaN();
    const double den = anorm * xn + bn;
    const double e = den > 0 ? rn / den : (rn > 0 ? HUGE_VAL : 0.0);
    worst = std::max(worst, e);
  }
  return worst;
}

// Per-thread scratch of the checked solve.
template <class S>
struct SolveWork {
  std::vector<S> b0, r, prev;
};

// A kept loose factorization (Solver::tightens) that has needed refinement in this many
// calls is factored again with strict pivoting, for the calls still to come. Ski rental,
// counted in calls (one call with many right-hand sides is one, and its refinement is
// spent already): a factorization costs 40-70 refining solves on a random unsymmetric
// n = 1000, so this spends about a third of one before buying; a value set solved in
// exactly 17 calls then costs at most ~1.8x what strict pivoting from the start would,
// one solved once or twice (a solve, a gradient) keeps the loose factorization's 7%.
constexpr int64_t kTightenAfter = 16;

// Solves op(A) x = b in place in w (`cols` columns of length n, b on entry) with f.
// With o.check it measures each solution's backward error, refines on the same factors
// while that is above o.target (at most o.refine steps, stopping when a step no longer
// halves it), and if the target is still missed with a reused pivot order or loose
// pivoting, factors f's values afresh with strict pivoting and starts over: neither
// ever returns a less accurate answer than a fresh, strict factorization would. A
// singular member gives NaN. `kept`: f serves later calls (a cached set or a handle, not
// a chunk's scratch factorization), so tightening it for them can pay (kTightenAfter).
template <class S>
void solve_checked(const Pattern& p, Fact& f, bool transpose, int64_t cols, S* w,
                   const Options& o, SolveWork<S>& ws, const char* op, bool kept = true) {
  const int64_t size = p.n * cols;
  if (!f.ok) {
    std::fill(w, w + size, nan_value<S>());
    return;
  }
  if (!o.check) {
    solve_cols(p, f, transpose, cols, w, op);
    return;
  }
  ensure_norms<S>(p, f);
  ws.b0.assign(w, w + size);
  ws.r.resize(size);
  // Complex moduli are measured as |re| + |im| (cheap, as LAPACK's CABS1), which can make
  // the measured error up to 2x smaller than the true one: aim at half the target.
  const double target = is_complex_v<S> ? 0.5 * o.target : o.target;
  for (;;) {
    solve_cols(p, f, transpose, cols, w, op);
    double berr = residual(p, f, transpose, cols, ws.b0.data(), w, ws.r.data());
    int step = 0;
    for (; step < o.refine && berr > target; ++step) {  // NaN: no refining
      ws.prev.assign(w, w + size);
      solve_cols(p, f, transpose, cols, ws.r.data(), op);
      for (int64_t i = 0; i < size; ++i) w[i] += ws.r[i];
      const double next = residual(p, f, transpose, cols, ws.b0.data(), w, ws.r.data());
      if (!(next < berr)) {  // no progress (or NaN): keep the previous iterate
        std::copy(ws.prev.begin(), ws.prev.end(), w);
        break;
      }
      const bool stalled = next > 0.5 * berr;
      berr = next;
      if (stalled) break;
    }
    if (step) {
      CheckStats::instance().refine_steps += step;
      f.refined += 1;
    }
    if (berr <= target) {
      if (kept && f.loose && !f.strict && f.refined >= kTightenAfter) {
        // This answer stands; later calls with these values get strict factors (only if
        // the strict factorization succeeds: else f.ok and the loose factors stay).
        f.strict = true;
        try {
          if (factor_fresh<S>(p, f, f.opts, op)) CheckStats::instance().tightenings += 1;
        } catch (const std::exception&) {  // (out of memory): the loose factors serve on
        }
      }
      return;
    }
    if (f.fresh && !f.loose) return;
    // Non-finite values or right-hand sides: no factorization makes the answer finite.
    if (!(berr == berr) && (!std::isfinite(f.norm_inf) || !(abs_max(ws.b0.data(), size) >= 0)))
      return;
    if (f.fresh) CheckStats::instance().tightenings += 1;
    else CheckStats::instance().refactor_fallbacks += 1;
    // A reused pivot order or loose pivoting missed the target: fresh strict pivots,
    // then solve again.
    f.strict = true;
    if (!factor_fresh<S>(p, f, f.opts, op)) {
      f.ok = false;
      std::fill(w, w + size, nan_value<S>());
      return;
    }
    std::copy(ws.b0.begin(), ws.b0.end(), w);
  }
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

// x = A^-1 b (or A^-T b) for every member.
//
// Value-keyed reuse: the factorizations of a block of values (all members of Ax) are kept
// in the cache, keyed by the block's exact content and the factor options, so a later
// call with the same values (a repeated solve with new right-hand sides, the transposed
// solve of reverse mode) only solves. `retain` (what the JVP rule asks for) always keeps
// them; plain solves keep them when the block is expected to fit the cache comfortably
// (the pattern's last factorization size x members <= 1/4 of the limit), else each chunk
// refactors one numeric object along its members and keeps nothing. Every solution is
// checked (solve_checked) whichever way it was made.
template <class In>
void solve_batch(Executor* ex, Pattern& p, const In* ax, const In* b, In* x,
                 const BatchShape& s, bool transpose, bool retain, const Options& o,
                 const char* op) {
  using S = compute_t<In>;
  constexpr bool cplx = is_complex_v<S>;
  if (s.l == 0 || s.n == 0 || s.nrhs == 0) return;
  Cache& cache = Cache::instance();
  const int64_t nnz = p.nnz;
  const RhsBlocks<In> rhs(b, x, s);
  const int64_t cols = rhs.cols();

  const std::string_view key = values_key(ax, s.la * nnz);
  uint64_t key_hash = 0;
  std::unique_ptr<NumericSet> set = cache.take_set(p, cplx, sizeof(In), s.la, o, key, key_hash);
  const bool hit = set != nullptr;
  const bool keep = hit || retain || cache.fits(p, s.la);
  if (keep && !hit) {
    // Reuse a previous set of this pattern: its numeric objects are refactored in place
    // with the new values (pivot check included), and its key buffer is overwritten.
    set = cache.recycle_set(p, cplx, s.la);
    if (!set) {
      set = std::make_unique<NumericSet>();
      set->members.resize(s.la);
    }
    set->keyed = true;
    set->hits = 0;
    set->is_complex = cplx;
    set->elem_size = sizeof(In);
    set->opts = o;
    set->key.assign(key.data(), key.size());
    set->hash = key_hash;
  }

  const double ns_per_member = (hit ? 0.0 : 40.0 * p.nnz_csc()) + 8.0 * p.nnz_csc() * cols;
  parallel_chunks(ex, s.la, max_chunks_for(ns_per_member, s.la), [&](int64_t lo, int64_t hi) {
    SolveWork<S> ws;
    std::vector<S> scratch = rhs.scratch();
    Fact chain = keep ? Fact{} : cache.take_spare(p, cplx);
    for (int64_t m = lo; m < hi; ++m) {
      S* w = rhs.load(m, scratch);
      if (keep && !hit && !set->members[m].num) set->members[m] = cache.take_spare(p, cplx);
      Fact& f = keep ? set->members[m] : chain;
      if (!hit) {
        load_values(p, ax + m * nnz, f, o.check);
        factorize<S>(p, f, o, op);
      }
      solve_checked(p, f, transpose, cols, w, o, ws, op, keep);
      rhs.store(m, w);
    }
    if (!keep) cache.note_member_bytes(p, chain.total_bytes());
    cache.put_spare(p, cplx, std::move(chain));
  });

  if (keep) {
    set->count_bytes();
    cache.note_member_bytes(p, set->bytes / std::max<int64_t>(1, s.la));
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
