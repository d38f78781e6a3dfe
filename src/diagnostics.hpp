// What KLU knows about a matrix, beyond solving with it: the pivot ratio (klu_rcond), the
// 1-norm condition estimate (klu_condest), the log-determinant from the LU factors, the
// entries of A^-T on the pattern (the gradient of log|det A|), and the factors themselves.
// Every member is factored afresh (klu_factor), so the answers never depend on which
// pivot order an earlier call left behind.
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include "driver.hpp"
#include "split.hpp"

namespace klujax {

enum class Diag : int64_t { kRcond = 0, kCondest = 1, kSlogdet = 2 };

// Sign (+-1 as a double) of a permutation given as a vector, by cycle counting.
inline double permutation_sign(const int* perm, int64_t n) {
  std::vector<char> seen(n, 0);
  int64_t swaps = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (seen[i]) continue;
    int64_t len = 0;
    for (int64_t j = i; !seen[j]; j = perm[j]) {
      seen[j] = 1;
      ++len;
    }
    swaps += len - 1;
  }
  return swaps % 2 ? -1.0 : 1.0;
}

// (sign, log|det A|) of a factorization: KLU factors P (R^-1 A) Q = L U + F with L unit
// lower triangular per block and F strictly block upper triangular, so
// det A = sign(P) sign(Q) prod(R) prod(diag U).
template <class S>
std::pair<S, double> slogdet_of(const Pattern& p, const Fact& f) {
  const klu_numeric* num = f.num.get();
  const S* u = static_cast<const S*>(num->Udiag);
  S sign = S(permutation_sign(num->Pnum, p.n) * permutation_sign(p.symbolic->Q, p.n));
  double logabs = 0.0;
  for (int64_t k = 0; k < p.n; ++k) {
    const double a = std::abs(u[k]);
    if (a == 0) return {S(0), -HUGE_VAL};
    logabs += std::log(a);
    sign *= u[k] / a;
  }
  if (num->Rs)
    for (int64_t i = 0; i < p.n; ++i) logabs += std::log(num->Rs[i]);
  if constexpr (KluTraits<S>::is_complex) sign /= std::abs(sign);  // drift of |sign|
  return {sign, logabs};
}

// out (la, 2): per member [rcond, 0], [condest, 0] or [sign, log|det|]. A singular matrix
// gives rcond 0, condest inf, sign 0 and log|det| -inf; non-finite values give NaN.
template <class In>
void diagnose_batch(Executor* ex, Pattern& p, const In* ax, int64_t la, Diag what,
                    const Options& o, In* out, const char* op) {
  using S = compute_t<In>;
  using K = KluTraits<S>;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  parallel_chunks(ex, la, max_chunks_for(60.0 * p.nnz_csc(), la), [&](int64_t lo, int64_t hi) {
    Common c = make_common(o);
    Fact f;
    for (int64_t m = lo; m < hi; ++m) {
      S r0(0), r1(0);
      load_values(p, ax + m * p.nnz, f);
      const bool ok = p.symbolic && std::isfinite(f.norm_inf) && factor_fresh<S>(p, f, c, o, op);
      if (p.n == 0) {  // the 0 x 0 matrix: an identity
        r0 = S(1);
      } else if (!std::isfinite(f.norm_inf)) {
        r0 = r1 = S(nan);
      } else if (what == Diag::kRcond) {
        if (ok) K::rcond(p.symbolic.get(), f.num.get(), c.get());
        r0 = S(ok ? c.c.rcond : 0.0);
      } else if (what == Diag::kCondest) {
        if (ok && !K::condest(p.ap_ptr(), values_of<S>(f), p.symbolic.get(), f.num.get(), c.get()))
          check_klu_status(c.c, op);
        r0 = S(ok ? c.c.condest : HUGE_VAL);
      } else {
        auto [sign, logabs] = ok ? slogdet_of<S>(p, f) : std::pair<S, double>{S(0), -HUGE_VAL};
        r0 = sign;
        r1 = S(logabs);
      }
      out[2 * m] = static_cast<In>(r0);
      out[2 * m + 1] = static_cast<In>(r1);
    }
  });
}

// rcond or condest of a numeric object's current factorization (under its lock).
template <class S>
double numeric_diagnostic(NumericObj& obj, Diag what, const char* op) {
  using K = KluTraits<S>;
  std::lock_guard<std::mutex> lock(obj.mu);
  Pattern& p = *obj.pattern;
  Fact& f = obj.fact;
  if (p.n == 0) return 1.0;
  if (!std::isfinite(f.norm_inf)) return std::numeric_limits<double>::quiet_NaN();
  if (!f.ok) return what == Diag::kRcond ? 0.0 : HUGE_VAL;
  Common c = make_common(f.opts);
  if (what == Diag::kRcond) {
    K::rcond(p.symbolic.get(), f.num.get(), c.get());
    return c.c.rcond;
  }
  if (!K::condest(p.ap_ptr(), values_of<S>(f), p.symbolic.get(), f.num.get(), c.get()))
    check_klu_status(c.c, op);
  return c.c.condest;
}

// g (la, nnz): g[k] = (A^-1)[Aj[k], Ai[k]], i.e. A^-T at each COO entry, which is
// d log(det A) / d Ax[k]. Costs one transposed solve per column (n of them, in blocks),
// O(n nnz(L+U)) work per member. A singular member gives NaN.
template <class In>
void inverse_entries_batch(Executor* ex, Pattern& p, const In* ax, int64_t la,
                           const Options& o, In* g, const char* op) {
  using S = compute_t<In>;
  constexpr int64_t kBlock = 32;
  const int64_t n = p.n, nnz = p.nnz;
  parallel_chunks(ex, la, la, [&](int64_t lo, int64_t hi) {
    Common c = make_common(o);
    Fact f;
    std::vector<S> gcsc(p.nnz_csc()), w;
    for (int64_t m = lo; m < hi; ++m) {
      load_values(p, ax + m * nnz, f);
      if (!p.symbolic || !factor_fresh<S>(p, f, c, o, op)) {
        std::fill(g + m * nnz, g + (m + 1) * nnz, static_cast<In>(nan_value<S>()));
        continue;
      }
      for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
        const int64_t cols = std::min(kBlock, n - j0);
        w.assign(n * cols, S(0));
        for (int64_t t = 0; t < cols; ++t) w[t * n + j0 + t] = S(1);
        klu_solve_cols(p, f, true, cols, w.data(), c, op);  // columns of A^-T
        for (int64_t t = 0; t < cols; ++t) {
          const int64_t j = j0 + t;
          for (int32_t q = p.ap[j]; q < p.ap[j + 1]; ++q) gcsc[q] = w[t * n + p.ai[q]];
        }
      }
      for (int64_t k = 0; k < nnz; ++k) g[m * nnz + k] = static_cast<In>(gcsc[p.slot[k]]);
    }
  });
}

// The factors of one matrix, as klu_extract gives them (complex parts interleaved).
struct LUFactors {
  int64_t n = 0;
  bool is_complex = false;
  std::vector<int32_t> Lp, Li, Up, Ui, Fp, Fi, P, Q, R;
  std::vector<double> Lx, Ux, Fx, Rs;
};

template <class S>
LUFactors extract_lu(Pattern& p, Fact& f, const char* op) {
  constexpr bool cx = KluTraits<S>::is_complex;
  const klu_numeric* num = f.num.get();
  LUFactors out;
  const int64_t n = p.n;
  out.n = n;
  out.is_complex = cx;
  out.Lp.resize(n + 1);
  out.Up.resize(n + 1);
  out.Fp.resize(n + 1);
  out.Li.resize(num->lnz);
  out.Ui.resize(num->unz);
  out.Fi.resize(num->nzoff);
  out.P.resize(n);
  out.Q.resize(n);
  out.Rs.resize(n);
  out.R.resize(p.symbolic->nblocks + 1);
  std::vector<double> lx(num->lnz), lz(cx ? num->lnz : 0), ux(num->unz), uz(cx ? num->unz : 0),
      fx(num->nzoff), fz(cx ? num->nzoff : 0);
  Common c;
  int done;
  if constexpr (cx) {
    done = klu_z_extract(f.num.get(), p.symbolic.get(), out.Lp.data(), out.Li.data(), lx.data(),
                         lz.data(), out.Up.data(), out.Ui.data(), ux.data(), uz.data(),
                         out.Fp.data(), out.Fi.data(), fx.data(), fz.data(), out.P.data(),
                         out.Q.data(), out.Rs.data(), out.R.data(), c.get());
  } else {
    done = klu_extract(f.num.get(), p.symbolic.get(), out.Lp.data(), out.Li.data(), lx.data(),
                       out.Up.data(), out.Ui.data(), ux.data(), out.Fp.data(), out.Fi.data(),
                       fx.data(), out.P.data(), out.Q.data(), out.Rs.data(), out.R.data(),
                       c.get());
  }
  if (!done) {
    check_klu_status(c.c, op);
    throw InternalError(std::string(op) + ": klu_extract failed");
  }
  auto interleave = [](const std::vector<double>& re, const std::vector<double>& im) {
    if (im.empty()) return re;
    std::vector<double> v(2 * re.size());
    for (size_t i = 0; i < re.size(); ++i) {
      v[2 * i] = re[i];
      v[2 * i + 1] = im[i];
    }
    return v;
  };
  out.Lx = interleave(lx, lz);
  out.Ux = interleave(ux, uz);
  out.Fx = interleave(fx, fz);
  return out;
}

// klujax.lu: one matrix factored afresh, its factors extracted. Throws InvalidArgument
// for a singular matrix.
template <class S>
LUFactors lu_factors(const int32_t* ai, const int32_t* aj, int64_t nnz, int32_t n,
                     const S* ax, const Options& o) {
  constexpr const char* op = "klujax.lu";
  auto p = Cache::instance().pattern(ai, aj, nnz, n, o, op);
  Fact f;
  Common c = make_common(o);
  load_values(*p, ax, f);
  if (!p->symbolic || !factor_fresh<S>(*p, f, c, o, op)) {
    if (p->n == 0) return LUFactors{};
    throw InvalidArgument(std::string(op) + ": the matrix is singular");
  }
  return extract_lu<S>(*p, f, op);
}

}  // namespace klujax
