// The KLU backend (SuiteSparse KLU: BTF + AMD/COLAMD, left-looking Gilbert-Peierls LU
// with partial pivoting and pivot-order reuse by klu_refactor).
#include <cmath>
#include <string>
#include <vector>

#include "csc.hpp"
#include "klu_traits.hpp"
#include "solver_klu.hpp"

namespace klujax {
namespace {

// KLU's API takes non-const pointers to inputs it does not modify.
int* mut(const std::vector<int32_t>& v) { return const_cast<int*>(v.data()); }

klu_symbolic* sym_of(const Analysis& an) { return klu_of(an).symbolic.get(); }

klu_numeric* num_of(const Fact& f) { return static_cast<KluFactors&>(*f.num).num.get(); }

// Sign (+-1 as a double) of a permutation given as a vector, by cycle counting.
double permutation_sign(const int* perm, int64_t n) {
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

template <class S>
class KluSolver final : public Solver<S> {
  using K = KluTraits<S>;

 public:
  Method method() const override { return Method::kKlu; }

  bool factor(const Csc& a, const Analysis& an, Fact& f, const Options& o,
              const char* op) const override {
    klu_symbolic* sym = sym_of(an);
    Common c = make_common(o);
    NumericPtr fresh(K::factor(mut(a.ap), mut(a.ai), f.values<S>(), sym, c.get()));
    if (!fresh) {
      check_klu_status(c.c, op);
      return false;  // KLU_SINGULAR: f keeps any object it had, for a later refactor
    }
    const size_t bytes = c.c.memusage;
    K::rcond(sym, fresh.get(), c.get());
    const double rc = c.c.rcond;
    auto out = std::make_unique<KluFactors>();
    out->num = std::move(fresh);
    // Non-finite values (NaN/Inf in Ax) give a meaningless reference: then no later
    // refactorization of this object is trusted until a fresh one is sane again.
    out->ref_rcond = std::isfinite(rc) && rc > 0 ? rc : HUGE_VAL;
    out->bytes = bytes;
    f.num = std::move(out);
    return true;
  }

  bool refactor(const Csc& a, const Analysis& an, Fact& f, const Options& o,
                const char* op) const override {
    auto* kf = dynamic_cast<KluFactors*>(f.num.get());
    if (!kf || !kf->num) return false;
    klu_symbolic* sym = sym_of(an);
    Common c = make_common(o);
    if (K::refactor(mut(a.ap), mut(a.ai), f.values<S>(), sym, kf->num.get(), c.get()) &&
        c.c.status == KLU_OK) {
      K::rcond(sym, kf->num.get(), c.get());
      return c.c.rcond >= kRefactorRatio * kf->ref_rcond;  // NaN fails too
    }
    check_klu_status(c.c, op);
    return false;
  }

  void solve(const Csc& a, const Analysis& an, Fact& f, bool transpose, int64_t cols, S* w,
             const char* op) const override {
    Common c;
    const int n = a.n;
    const int done = transpose ? K::tsolve(sym_of(an), num_of(f), n, static_cast<int>(cols), w, c.get())
                               : K::solve(sym_of(an), num_of(f), n, static_cast<int>(cols), w, c.get());
    if (!done) check_klu_status(c.c, op);
  }

  double rcond(const Csc&, const Analysis& an, Fact& f, const char* op) const override {
    Common c;
    if (!K::rcond(sym_of(an), num_of(f), c.get())) check_klu_status(c.c, op);
    return c.c.rcond;
  }

  double condest(const Csc& a, const Analysis& an, Fact& f, const char* op) const override {
    Common c;
    if (!K::condest(mut(a.ap), f.values<S>(), sym_of(an), num_of(f), c.get()))
      check_klu_status(c.c, op);
    return c.c.condest;
  }

  // KLU factors P (R^-1 A) Q = L U + F with L unit lower triangular per block and F
  // strictly block upper triangular, so det A = sign(P) sign(Q) prod(R) prod(diag U).
  std::pair<S, double> slogdet(const Csc& a, const Analysis& an, Fact& f,
                               const char*) const override {
    const klu_numeric* num = num_of(f);
    const int64_t n = a.n;
    const S* u = static_cast<const S*>(num->Udiag);
    S sign = S(permutation_sign(num->Pnum, n) * permutation_sign(sym_of(an)->Q, n));
    double logabs = 0.0;
    for (int64_t k = 0; k < n; ++k) {
      const double m = std::abs(u[k]);
      if (m == 0) return {S(0), -HUGE_VAL};
      logabs += std::log(m);
      sign *= u[k] / m;
    }
    if (num->Rs)
      for (int64_t i = 0; i < n; ++i) logabs += std::log(num->Rs[i]);
    if constexpr (K::is_complex) sign /= std::abs(sign);  // drift of |sign|
    return {sign, logabs};
  }
};

}  // namespace

std::unique_ptr<Analysis> analyze_klu(const Csc& a, const Options& o, const char* op) {
  auto out = std::make_unique<KluAnalysis>();
  Common c = make_common(o);
  out->symbolic.reset(klu_analyze(a.n, mut(a.ap), mut(a.ai), c.get()));
  if (!out->symbolic) {
    check_klu_status(c.c, op);
    throw InternalError(std::string(op) + ": klu_analyze failed");
  }
  out->bytes = c.c.memusage;
  return out;
}

FillEstimate fill_estimate(const Analysis& klu_analysis) {
  const klu_symbolic* s = klu_of(klu_analysis).symbolic.get();
  return {s->est_flops, s->lnz + s->unz};
}

template <class S>
const Solver<S>& klu_solver() {
  static const KluSolver<S> s;
  return s;
}
template const Solver<double>& klu_solver<double>();
template const Solver<cplx>& klu_solver<cplx>();

}  // namespace klujax
