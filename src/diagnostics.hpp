// What a factorization tells about a matrix, beyond solving with it: the pivot ratio
// (rcond), the 1-norm condition estimate (condest), the log-determinant from the LU
// factors, the entries of A^-T on the pattern (the gradient of log|det A|), through the
// solver seam; and KLU's factors themselves (klujax.lu, KLU only). Every member is
// factored afresh, so the answers never depend on which pivot order an earlier call left
// behind.
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include "driver.hpp"
#include "klu_traits.hpp"
#include "solver_klu.hpp"
#include "split.hpp"

namespace klujax {

enum class Diag : int64_t { kRcond = 0, kCondest = 1, kSlogdet = 2 };

// out (la, 2): per member [rcond, 0], [condest, 0] or [sign, log|det|]. A singular matrix
// gives rcond 0, condest inf, sign 0 and log|det| -inf; non-finite values give NaN.
template <class In>
void diagnose_batch(Executor* ex, Pattern& p, const In* ax, int64_t la, Diag what,
                    const Options& o, In* out, const char* op) {
  using S = compute_t<In>;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  parallel_chunks(ex, la, max_chunks_for(60.0 * p.nnz_csc(), la), [&](int64_t lo, int64_t hi) {
    Fact f;
    for (int64_t m = lo; m < hi; ++m) {
      S r0(0), r1(0);
      load_values(p, ax + m * p.nnz, f);
      f.strict = true;  // unchecked: the backend's most stable pivoting
      const bool ok = std::isfinite(f.norm_inf) && factor_fresh<S>(p, f, o, op);
      const Analysis* an = p.analysis();
      if (p.n == 0) {  // the 0 x 0 matrix: an identity
        r0 = S(1);
      } else if (!std::isfinite(f.norm_inf)) {
        r0 = r1 = S(nan);
      } else if (what == Diag::kRcond) {
        r0 = S(ok ? p.solver<S>(op).rcond(p, *an, f, op) : 0.0);
      } else if (what == Diag::kCondest) {
        r0 = S(ok ? p.solver<S>(op).condest(p, *an, f, op) : HUGE_VAL);
      } else {
        auto [sign, logabs] =
            ok ? p.solver<S>(op).slogdet(p, *an, f, op) : std::pair<S, double>{S(0), -HUGE_VAL};
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
  std::lock_guard<std::mutex> lock(obj.mu);
  Pattern& p = *obj.pattern;
  Fact& f = obj.fact;
  if (p.n == 0) return 1.0;
  ensure_norms<S>(p, f);
  if (!std::isfinite(f.norm_inf)) return std::numeric_limits<double>::quiet_NaN();
  if (!f.ok) return what == Diag::kRcond ? 0.0 : HUGE_VAL;
  const Solver<S>& s = p.solver<S>(op);
  return what == Diag::kRcond ? s.rcond(p, *p.analysis(), f, op)
                              : s.condest(p, *p.analysis(), f, op);
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
    Fact f;
    std::vector<S> gcsc(p.nnz_csc()), w;
    for (int64_t m = lo; m < hi; ++m) {
      load_values(p, ax + m * nnz, f);
      f.strict = true;  // unchecked solves: the backend's most stable pivoting
      if (!factor_fresh<S>(p, f, o, op)) {
        std::fill(g + m * nnz, g + (m + 1) * nnz, static_cast<In>(nan_value<S>()));
        continue;
      }
      for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
        const int64_t cols = std::min(kBlock, n - j0);
        w.assign(n * cols, S(0));
        for (int64_t t = 0; t < cols; ++t) w[t * n + j0 + t] = S(1);
        solve_cols(p, f, true, cols, w.data(), op);  // columns of A^-T
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
LUFactors extract_lu(const Pattern& p, Fact& f, const char* op) {
  constexpr bool cx = is_complex_v<S>;
  klu_numeric* num = static_cast<KluFactors&>(*f.num).num.get();
  klu_symbolic* sym = klu_of(*p.klu).symbolic.get();
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
  out.R.resize(sym->nblocks + 1);
  std::vector<double> lx(num->lnz), lz(cx ? num->lnz : 0), ux(num->unz), uz(cx ? num->unz : 0),
      fx(num->nzoff), fz(cx ? num->nzoff : 0);
  Common c;
  int done;
  if constexpr (cx) {
    done = klu_z_extract(num, sym, out.Lp.data(), out.Li.data(), lx.data(),
                         lz.data(), out.Up.data(), out.Ui.data(), ux.data(), uz.data(),
                         out.Fp.data(), out.Fi.data(), fx.data(), fz.data(), out.P.data(),
                         out.Q.data(), out.Rs.data(), out.R.data(), c.get());
  } else {
    done = klu_extract(num, sym, out.Lp.data(), out.Li.data(), lx.data(),
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

// klujax.lu: one matrix factored afresh by KLU (whatever `o.method` says: these are KLU's
// factors, with its BTF blocks), its factors extracted. Throws InvalidArgument for a
// singular matrix.
template <class S>
LUFactors lu_factors(const int32_t* ai, const int32_t* aj, int64_t nnz, int32_t n,
                     const S* ax, Options o) {
  constexpr const char* op = "klujax.lu";
  o.method = Method::kKlu;
  auto p = Cache::instance().pattern(ai, aj, nnz, n, o, op);
  Fact f;
  load_values(*p, ax, f);
  if (!factor_fresh<S>(*p, f, o, op)) {
    if (p->n == 0) return LUFactors{};
    throw InvalidArgument(std::string(op) + ": the matrix is singular");
  }
  return extract_lu<S>(*p, f, op);
}

}  // namespace klujax
