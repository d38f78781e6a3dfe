// The UMFPACK backend (SuiteSparse UMFPACK: COLAMD/AMD column pre-ordering, multifrontal
// LU whose dense frontal matrices run on BLAS-3). It pays off on fill-heavy matrices
// (large fronts) when the BLAS is an optimized one; KLU stays better on circuit matrices.
// UMFPACK has no pivot-order reuse: every factorization pivots afresh (refactor -> false).
//
// Licence: UMFPACK is GPL-2.0-or-later, KLU LGPL-2.1-or-later. This file is compiled only
// when the build finds UMFPACK and KLUJAX_UMFPACK is on (CMakeLists.txt); the binary
// wheels are built without it (docs/solvers.md).
#include <dlfcn.h>
#include <umfpack.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "csc.hpp"
#include "solver.hpp"

namespace klujax {
namespace {

// The di (real) and zi (complex, interleaved: the z arrays are NULL) entry points.
template <class S>
struct Umf;

template <>
struct Umf<double> {
  static constexpr bool is_complex = false;
  static double* raw(double* p) { return p; }
  static const double* raw(const double* p) { return p; }
  static int symbolic(int n, const int* ap, const int* ai, void** sym, const double* ctl,
                      double* info) {
    return umfpack_di_symbolic(n, n, ap, ai, nullptr, sym, ctl, info);
  }
  static int numeric(const int* ap, const int* ai, const double* ax, void* sym, void** num,
                     const double* ctl, double* info) {
    return umfpack_di_numeric(ap, ai, ax, sym, num, ctl, info);
  }
  static int wsolve(int sys, const int* ap, const int* ai, const double* ax, double* x,
                    const double* b, void* num, const double* ctl, double* info, int* wi,
                    double* w) {
    return umfpack_di_wsolve(sys, ap, ai, ax, x, b, num, ctl, info, wi, w);
  }
  static int determinant(double* m, double* e, void* num) {
    return umfpack_di_get_determinant(m, e, num, nullptr);
  }
  static int lunz(int* lnz, int* unz, void* num) {
    int nr = 0, nc = 0, nzud = 0;
    return umfpack_di_get_lunz(lnz, unz, &nr, &nc, &nzud, num);
  }
  static int factors(int* lp, int* lj, double* lx, int* up, int* ui, double* ux, int* p, int* q,
                     double* d, int* recip, double* rs, void* num) {
    return umfpack_di_get_numeric(lp, lj, lx, up, ui, ux, p, q, d, recip, rs, num);
  }
  static void defaults(double* ctl) { umfpack_di_defaults(ctl); }
  static void free_symbolic(void** s) { umfpack_di_free_symbolic(s); }
  static void free_numeric(void** n) { umfpack_di_free_numeric(n); }
  static constexpr int kWork = 5;  // W: 5n doubles (umfpack_di_wsolve)
};

template <>
struct Umf<cplx> {
  static constexpr bool is_complex = true;
  static double* raw(cplx* p) { return reinterpret_cast<double*>(p); }
  static const double* raw(const cplx* p) { return reinterpret_cast<const double*>(p); }
  static int symbolic(int n, const int* ap, const int* ai, void** sym, const double* ctl,
                      double* info) {
    return umfpack_zi_symbolic(n, n, ap, ai, nullptr, nullptr, sym, ctl, info);
  }
  static int numeric(const int* ap, const int* ai, const double* ax, void* sym, void** num,
                     const double* ctl, double* info) {
    return umfpack_zi_numeric(ap, ai, ax, nullptr, sym, num, ctl, info);
  }
  static int wsolve(int sys, const int* ap, const int* ai, const double* ax, double* x,
                    const double* b, void* num, const double* ctl, double* info, int* wi,
                    double* w) {
    return umfpack_zi_wsolve(sys, ap, ai, ax, nullptr, x, nullptr, b, nullptr, num, ctl, info,
                             wi, w);
  }
  static int determinant(double* m, double* e, void* num) {
    double mz = 0;
    const int st = umfpack_zi_get_determinant(m, &mz, e, num, nullptr);
    m[1] = mz;
    return st;
  }
  static int lunz(int* lnz, int* unz, void* num) {
    int nr = 0, nc = 0, nzud = 0;
    return umfpack_zi_get_lunz(lnz, unz, &nr, &nc, &nzud, num);
  }
  static int factors(int* lp, int* lj, double* lx, int* up, int* ui, double* ux, int* p, int* q,
                     double* d, int* recip, double* rs, void* num) {  // packed complex
    return umfpack_zi_get_numeric(lp, lj, lx, nullptr, up, ui, ux, nullptr, p, q, d, nullptr, recip,
                                  rs, num);
  }
  static void defaults(double* ctl) { umfpack_zi_defaults(ctl); }
  static void free_symbolic(void** s) { umfpack_zi_free_symbolic(s); }
  static void free_numeric(void** n) { umfpack_zi_free_numeric(n); }
  static constexpr int kWork = 10;  // W: 10n doubles (umfpack_zi_wsolve)
};

// UMFPACK's speed is its BLAS, and the BLAS decides whether batch members may factor in
// parallel. A sequential OpenBLAS build (Debian's libopenblas0-serial, and others built
// without USE_LOCKING) shares unlocked buffers between callers: two threads in dgemm at
// once return wrong numbers (measured: residuals of 1e-4 to 5 on a batched 3-D stencil).
// So, once, from the library that provides dgemm_:
//  - sequential OpenBLAS (openblas_get_parallel() == 0): every UMFPACK call of this
//    process runs under one lock (batches of UMFPACK factorizations go one at a time);
//  - threaded OpenBLAS: its own threads are set to 1 (openblas_set_num_threads), since
//    klujax already runs batch members in parallel (its threads and OpenBLAS's on top
//    oversubscribed the cores 2x and made batches 4x slower); KLUJAX_BLAS_THREADS=N sets
//    N instead, or leaves it alone when N is 0;
//  - any other BLAS (reference, MKL, BLIS): calls run in parallel.
// KLUJAX_UMFPACK_SERIAL=1 forces the lock, =0 disables it.
struct BlasPolicy {
  bool serialize = false;
  std::mutex mu;
};

BlasPolicy& blas_policy() {
  static BlasPolicy* policy = [] {
    auto* p = new BlasPolicy();  // leaked: used by worker threads until exit
    void* handle = nullptr;
    Dl_info info;
    void* dgemm = dlsym(RTLD_DEFAULT, "dgemm_");
    if (dgemm && dladdr(dgemm, &info) && info.dli_fname)
      handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    auto sym = [&](const char* name) {
      void* f = handle ? dlsym(handle, name) : nullptr;
      return f ? f : dlsym(RTLD_DEFAULT, name);
    };
    auto get_parallel = reinterpret_cast<int (*)()>(sym("openblas_get_parallel"));
    auto set_threads = reinterpret_cast<void (*)(int)>(sym("openblas_set_num_threads"));
    if (get_parallel && get_parallel() == 0) {
      p->serialize = true;
    } else if (get_parallel && set_threads) {
      int threads = 1;
      if (const char* env = std::getenv("KLUJAX_BLAS_THREADS"); env && *env) threads = std::atoi(env);
      if (threads > 0) set_threads(threads);
    }
    if (const char* env = std::getenv("KLUJAX_UMFPACK_SERIAL"); env && *env)
      p->serialize = std::atoi(env) == 1;  // 0: never (to reproduce the failure in tests)
    if (handle) dlclose(handle);
    return p;
  }();
  return *policy;
}

// Held around every UMFPACK call that may reach the BLAS (see blas_policy).
class BlasGuard {
 public:
  BlasGuard() : p_(blas_policy()) {
    if (p_.serialize) p_.mu.lock();
  }
  ~BlasGuard() {
    if (p_.serialize) p_.mu.unlock();
  }
  BlasGuard(const BlasGuard&) = delete;
  BlasGuard& operator=(const BlasGuard&) = delete;

 private:
  BlasPolicy& p_;
};

void check_status(int status, const char* op, const char* what) {
  if (status == UMFPACK_OK || status == UMFPACK_WARNING_singular_matrix) return;
  if (status == UMFPACK_ERROR_out_of_memory)
    throw InternalError(std::string(op) + ": UMFPACK ran out of memory in " + what);
  throw InternalError(std::string(op) + ": UMFPACK " + what + " failed with status " +
                      std::to_string(status));
}

// How UMFPACK is driven for one pattern, chosen once when the pattern is analysed
// (analyze_umfpack) and used for every scalar type and factorization of it.
struct Plan {
  int strategy = UMFPACK_STRATEGY_UNSYMMETRIC;
  int ordering = UMFPACK_ORDERING_AMD;  // AMD (symmetric) / COLAMD (unsymmetric), or BEST
  int used = UMFPACK_ORDERING_AMD;      // the ordering UMFPACK reported using (Info)
};

// The threshold partial pivoting tolerance (of the unsymmetric strategy, and of the
// symmetric one when it leaves the diagonal). Loose: UMFPACK's default 0.1, which
// factored the benchmark's random unsymmetric n = 1000 matrices 7% faster (median over
// 16 value sets) with 6-16% smaller factors than 0.2, but left backward errors of
// 7e-15..4.5e-13 (n = 1000, 2000; 16 matrices), so 11 of 16 needed a refinement step.
// Strict: 0.2 gives 1.2e-15..3.5e-14 (2 of 16 refine). A factorization is loose first;
// the accuracy check (driver.hpp) asks for a strict one when a loose one misses the
// target after refinement, is singular, or has needed refinement in kTightenAfter calls
// (a kept factorization: solve_with_numeric, value reuse); the diagnostics, which do
// not check their solves, always ask for one.
constexpr double kPivotLoose = 0.1;
constexpr double kPivotStrict = 0.2;

// Control settings from the options and the plan: klujax refines above the seam, so
// UMFPACK's own iterative refinement is off. `tol` and `btf` are KLU's: UMFPACK keeps
// its diagonal pivot tolerance (0.001, symmetric strategy) and singleton removal.
template <class S>
void control(const Options& o, const Plan& plan, double* ctl, bool strict = false) {
  Umf<S>::defaults(ctl);
  ctl[UMFPACK_PRL] = 0;
  ctl[UMFPACK_IRSTEP] = 0;
  ctl[UMFPACK_PIVOT_TOLERANCE] = strict ? kPivotStrict : kPivotLoose;
  ctl[UMFPACK_SCALE] = o.scale;  // 0 none, 1 sum, 2 max: the same codes
  ctl[UMFPACK_STRATEGY] = plan.strategy;
  ctl[UMFPACK_ORDERING] = o.ordering == 2 ? UMFPACK_ORDERING_NONE : plan.ordering;
}

// Whether UMFPACK's symmetric strategy suits a pattern: a zero-free diagonal and at least
// half of the off-diagonal entries matched by their transposed entry. Chosen here from
// the pattern, not left to UMFPACK's automatic strategy, which without values (the
// analysis is made once per pattern) took the unsymmetric one for 2-D/3-D stencils:
// 1.4x (2-D) slower factorizations there, and backward errors of 1e-13..1e-10 that the
// accuracy check then had to refine on every solve (symmetric: 2e-16..6e-16).
bool symmetric_pattern(const Csc& a) {
  int64_t off = 0, matched = 0;
  for (int32_t j = 0; j < a.n; ++j) {
    const int32_t* first = a.ai.data() + a.ap[j];
    const int32_t* last = a.ai.data() + a.ap[j + 1];
    if (!std::binary_search(first, last, j)) return false;  // structurally zero diagonal
    for (const int32_t* q = first; q != last; ++q) {
      const int32_t i = *q;
      if (i == j) continue;
      ++off;
      matched += std::binary_search(a.ai.data() + a.ap[i], a.ai.data() + a.ap[i + 1], j);
    }
  }
  return 2 * matched >= off;
}

// Above this many flops of the AMD ordering (about 2 ms of factorization), the symmetric
// strategy also tries UMFPACK's "best" ordering (AMD, METIS and CHOLMOD's nested
// dissection, keeping the one with the fewest nonzeros in a Cholesky-like factor of
// A + A^T) and keeps whichever of the two has fewer flops, as UMFPACK counts them for that
// factor (Info[UMFPACK_SYMMETRIC_FLOPS], within 2% of the measured LU flops on our
// stencils; its general flop estimate is a loose bound, off by up to 40x). The count of
// "best" comes from CHOLMOD's column counts and is 4 nnz(L) + n higher than AMD's for the
// same ordering, so nested dissection must win by a few percent to be kept. 3-D stencils
// factor 1.4x faster with it; 2-D ones stay on AMD. The extra orderings cost about two
// factorizations, once per pattern and scalar type (outside the BLAS lock).
constexpr double kTryBestFlops = 1e7;

// UMFPACK's Symbolic object depends on the scalar type (its size estimates count complex
// entries twice), so a pattern's analysis holds one per type, each made on first use.
struct UmfAnalysis final : Analysis {
  Options opts;
  Plan plan;
  mutable std::once_flag once[2];
  mutable void* symbolic[2] = {nullptr, nullptr};  // [is_complex]
  mutable size_t real_bytes = 0;                   // of symbolic[0]
  ~UmfAnalysis() override {
    if (symbolic[0]) Umf<double>::free_symbolic(&symbolic[0]);
    if (symbolic[1]) Umf<cplx>::free_symbolic(&symbolic[1]);
  }
  std::string describe() const override {
    const bool sym = plan.strategy == UMFPACK_STRATEGY_SYMMETRIC;
    // UMFPACK reports METIS for CHOLMOD's nested dissection too.
    const std::string ord = plan.used == UMFPACK_ORDERING_NONE    ? "natural"
                            : plan.used == UMFPACK_ORDERING_METIS ? "nested dissection"
                            : plan.used == UMFPACK_ORDERING_AMD   ? (sym ? "amd" : "colamd")
                                                                  : "ordering " + std::to_string(plan.used);
    return std::string(sym ? "symmetric" : "unsymmetric") + ", " + ord;
  }
};

// METIS (inside the "best" ordering) seeds and draws from the C library's global rand():
// two orderings at once would interleave their random streams, making the ordering depend
// on timing. They run one at a time (once per pattern and scalar type).
std::mutex& metis_mutex() {
  static std::mutex m;
  return m;
}

// umfpack_*_symbolic under `plan`: the status, *sym and Info in info.
template <class S>
int try_symbolic(const Csc& a, const Options& o, const Plan& plan, double* info, void** sym) {
  double ctl[UMFPACK_CONTROL];
  control<S>(o, plan, ctl);
  std::unique_lock<std::mutex> lock(metis_mutex(), std::defer_lock);
  if (plan.ordering == UMFPACK_ORDERING_BEST) lock.lock();
  return Umf<S>::symbolic(a.n, a.ap.data(), a.ai.data(), sym, ctl, info);
}

// A Symbolic object of the pattern under `plan` (Info in info); throws on failure.
template <class S>
void* make_symbolic(const Csc& a, const Options& o, const Plan& plan, double* info,
                    const char* op) {
  void* sym = nullptr;
  const int st = try_symbolic<S>(a, o, plan, info, &sym);
  if (st != UMFPACK_OK || !sym) {
    if (sym) Umf<S>::free_symbolic(&sym);
    check_status(st == UMFPACK_OK ? UMFPACK_ERROR_internal_error : st, op, "umfpack_symbolic");
    throw InternalError(std::string(op) + ": umfpack_symbolic failed");
  }
  return sym;
}

template <class S>
void* symbolic_of(const Csc& a, const Analysis& an, const char* op) {
  const auto& ua = static_cast<const UmfAnalysis&>(an);
  constexpr int k = Umf<S>::is_complex;
  std::call_once(ua.once[k], [&] {
    double info[UMFPACK_INFO];
    ua.symbolic[k] = make_symbolic<S>(a, ua.opts, ua.plan, info, op);
    if (k == 0)
      ua.real_bytes = static_cast<size_t>(info[UMFPACK_SYMBOLIC_SIZE] * info[UMFPACK_SIZE_OF_UNIT]);
  });
  return ua.symbolic[k];
}

// Repeated solves with one factorization (solve_with_numeric, value reuse, reverse mode
// of a kept factorization). UMFPACK's solve walks its packed frontal storage with an
// index per entry. After kPlainAfter solved columns with one factorization, klujax copies
// the factors out (umfpack_get_numeric: about a seventh of a factorization's time) into
// plain arrays: L by rows, U by columns, and the trailing rows and columns where
// fill-heavy factors end in a nearly dense block (the last 410 of 1000 rows of a random
// unsymmetric matrix hold three quarters of its factors' entries) as one dense
// column-major block, solved with contiguous loops. That matrix: 110 -> 85 us per solve
// (C harness, the same compiler flags). The accuracy check above the seam measures these
// solutions exactly as UMFPACK's.
constexpr int64_t kPlainAfter = 8;
// Work per entry of a sparse triangular solve relative to a dense one (indexed access,
// measured 3-4x): the dense tail is as large as makes the estimated total least.
constexpr int64_t kSparseCost = 3;

template <class S>
struct PlainLU {
  // P R A Q = L U (R: the row scaling, multiplying by rs when recip, else dividing).
  int32_t n = 0, s0 = 0;  // rows and columns >= s0: the dense tail (k = n - s0 of them)
  bool recip = false;
  std::vector<int32_t> p, q;
  std::vector<double> rs;
  std::vector<int32_t> lp, lj;  // L by rows, strictly lower; rows >= s0: columns < s0 only
  std::vector<S> lx;
  std::vector<int32_t> up, ui;  // U by columns, strictly upper; columns >= s0: rows < s0 only
  std::vector<S> ux;
  std::vector<S> d;     // diag(U)
  std::vector<S> tail;  // k x k column-major: L below the diagonal (unit diagonal), U on and above

  size_t bytes() const {
    return sizeof(int32_t) * (p.size() + q.size() + lp.size() + lj.size() + up.size() + ui.size()) +
           sizeof(double) * rs.size() + sizeof(S) * (lx.size() + ux.size() + d.size() + tail.size());
  }

  S scaled(S v, int32_t i) const { return recip ? v * rs[i] : v / rs[i]; }

  // s - sum_t a[t] * y[t], t < m, in four independent partial sums.
  static S dot_sub(S s, const S* a, const S* y, int64_t m) {
    S acc[4] = {S(0), S(0), S(0), S(0)};
    int64_t t = 0;
    for (; t + 4 <= m; t += 4)
      for (int u = 0; u < 4; ++u) acc[u] += a[t + u] * y[t + u];
    for (; t < m; ++t) acc[0] += a[t] * y[t];
    return s - ((acc[0] + acc[1]) + (acc[2] + acc[3]));
  }

  // op(A) x = b in place in x; y: n scratch entries.
  void solve(S* x, S* y, bool transpose) const {
    const int64_t k = n - s0;
    const S* T = tail.data();
    if (!transpose) {  // x = Q U^-1 L^-1 P R b
      for (int32_t i = 0; i < n; ++i) y[i] = scaled(x[p[i]], p[i]);
      for (int32_t i = 0; i < n; ++i) {  // L: the sparse rows, and the head columns of the tail rows
        S v = y[i];
        for (int32_t t = lp[i]; t < lp[i + 1]; ++t) v -= lx[t] * y[lj[t]];
        y[i] = v;
      }
      for (int64_t j = 0; j < k; ++j) {  // L: the dense tail, by columns
        const S* col = T + j * k;
        const S yj = y[s0 + j];
        S* ys = y + s0;
        for (int64_t i = j + 1; i < k; ++i) ys[i] -= col[i] * yj;
      }
      for (int64_t j = k - 1; j >= 0; --j) {  // U: the dense tail, by columns
        const S* col = T + j * k;
        S* ys = y + s0;
        const S yj = ys[j] / col[j];
        ys[j] = yj;
        for (int64_t i = 0; i < j; ++i) ys[i] -= col[i] * yj;
      }
      for (int32_t j = n - 1; j >= 0; --j) {  // U: the tail's head rows, then the sparse columns
        if (j < s0) y[j] /= d[j];
        const S yj = y[j];
        for (int32_t t = up[j]; t < up[j + 1]; ++t) y[ui[t]] -= ux[t] * yj;
      }
      for (int32_t i = 0; i < n; ++i) x[q[i]] = y[i];
    } else {  // A^T x = b: x = R P^T L^-T U^-T Q^T b
      for (int32_t i = 0; i < n; ++i) y[i] = x[q[i]];
      for (int32_t j = 0; j < n; ++j) {  // U^T: the sparse columns, and the head rows of the tail
        S v = y[j];
        for (int32_t t = up[j]; t < up[j + 1]; ++t) v -= ux[t] * y[ui[t]];
        y[j] = j < s0 ? v / d[j] : v;
      }
      for (int64_t j = 0; j < k; ++j) {  // U^T: the dense tail
        const S* col = T + j * k;
        y[s0 + j] = dot_sub(y[s0 + j], col, y + s0, j) / col[j];
      }
      for (int64_t j = k - 1; j >= 0; --j) {  // L^T: the dense tail
        const S* col = T + j * k;
        y[s0 + j] = dot_sub(y[s0 + j], col + j + 1, y + s0 + j + 1, k - j - 1);
      }
      for (int32_t i = n - 1; i >= 0; --i) {  // L^T: the tail rows' head columns, then sparse rows
        const S yi = y[i];
        for (int32_t t = lp[i]; t < lp[i + 1]; ++t) y[lj[t]] -= lx[t] * yi;
      }
      for (int32_t i = 0; i < n; ++i) x[p[i]] = scaled(y[i], p[i]);
    }
  }

  // The factors of `num`, or null if UMFPACK cannot give them (then its solve stays).
  static std::unique_ptr<PlainLU> extract(void* num, int32_t n) {
    using U = Umf<S>;
    int lnz = 0, unz = 0;
    if (U::lunz(&lnz, &unz, num) != UMFPACK_OK) return nullptr;
    std::vector<int> Lp(n + 1), Lj(lnz), Up(n + 1), Ui(unz);
    std::vector<S> Lx(lnz), Ux(unz);
    auto out = std::make_unique<PlainLU>();
    out->n = n;
    out->p.resize(n);
    out->q.resize(n);
    out->rs.resize(n);
    out->d.resize(n);
    int recip = 0;
    if (U::factors(Lp.data(), Lj.data(), U::raw(Lx.data()), Up.data(), Ui.data(), U::raw(Ux.data()),
                   out->p.data(), out->q.data(), U::raw(out->d.data()), &recip, out->rs.data(),
                   num) != UMFPACK_OK)
      return nullptr;
    out->recip = recip != 0;
    // Off-diagonal entries by the first row/column of a trailing block that holds them.
    std::vector<int64_t> at(static_cast<size_t>(n) + 1, 0);
    int64_t total = 0;
    for (int32_t i = 0; i < n; ++i)
      for (int t = Lp[i]; t < Lp[i + 1]; ++t)
        if (Lj[t] < i) ++at[Lj[t]], ++total;
    for (int32_t j = 0; j < n; ++j)
      for (int t = Up[j]; t < Up[j + 1]; ++t)
        if (Ui[t] < j) ++at[Ui[t]], ++total;
    int32_t best = n;
    int64_t inside = 0, best_cost = kSparseCost * total;
    for (int32_t s = n - 1; s >= 0; --s) {
      inside += at[s];
      const int64_t k = n - s;
      const int64_t cost = kSparseCost * (total - inside) + k * k;
      if (cost < best_cost) best_cost = cost, best = s;
    }
    if (n - best < 32) best = n;  // too small a block to pay for its loops
    const int32_t s0 = out->s0 = best;
    const int64_t k = n - s0;
    out->tail.assign(static_cast<size_t>(k * k), S(0));
    S* T = out->tail.data();
    out->lp.resize(static_cast<size_t>(n) + 1);
    for (int32_t i = 0; i < n; ++i) {
      out->lp[i] = static_cast<int32_t>(out->lj.size());
      for (int t = Lp[i]; t < Lp[i + 1]; ++t) {
        const int32_t j = Lj[t];
        if (j >= i) continue;  // the unit diagonal
        if (j >= s0) T[(j - s0) * k + (i - s0)] = Lx[t];
        else out->lj.push_back(j), out->lx.push_back(Lx[t]);
      }
    }
    out->lp[n] = static_cast<int32_t>(out->lj.size());
    out->up.resize(static_cast<size_t>(n) + 1);
    for (int32_t j = 0; j < n; ++j) {
      out->up[j] = static_cast<int32_t>(out->ui.size());
      for (int t = Up[j]; t < Up[j + 1]; ++t) {
        const int32_t i = Ui[t];
        if (i >= j) continue;  // the diagonal is d
        if (i >= s0) T[(j - s0) * k + (i - s0)] = Ux[t];
        else out->ui.push_back(i), out->ux.push_back(Ux[t]);
      }
    }
    out->up[n] = static_cast<int32_t>(out->ui.size());
    for (int32_t j = s0; j < n; ++j) T[(j - s0) * k + (j - s0)] = out->d[j];
    return out;
  }
};

struct UmfFactors final : Factors {
  void* numeric = nullptr;
  bool is_complex = false;
  double rcond = 0.0;
  int64_t solved = 0;      // columns solved with UMFPACK's solve
  bool no_plain = false;   // extraction failed: UMFPACK's solve stays
  std::unique_ptr<PlainLU<double>> plain_r;
  std::unique_ptr<PlainLU<cplx>> plain_c;
  template <class S>
  std::unique_ptr<PlainLU<S>>& plain() {
    if constexpr (is_complex_v<S>) return plain_c;
    else return plain_r;
  }
  ~UmfFactors() override {
    if (!numeric) return;
    if (is_complex) Umf<cplx>::free_numeric(&numeric);
    else Umf<double>::free_numeric(&numeric);
  }
};

// Tests: KLUJAX_UMFPACK_PLAIN_AFTER=N overrides kPlainAfter (0: from the first solve).
int64_t plain_after() {
  static const int64_t v = [] {
    const char* env = std::getenv("KLUJAX_UMFPACK_PLAIN_AFTER");
    return env && *env ? std::max<int64_t>(0, std::atoll(env)) : kPlainAfter;
  }();
  return v;
}

template <class S>
class UmfSolver final : public Solver<S> {
  using U = Umf<S>;

 public:
  Method method() const override { return Method::kUmfpack; }
  bool tightens() const override { return true; }  // pivot tolerance kPivotLoose/Strict

  bool factor(const Csc& a, const Analysis& an, Fact& f, const Options& o,
              const char* op) const override {
    double ctl[UMFPACK_CONTROL], info[UMFPACK_INFO];
    control<S>(o, static_cast<const UmfAnalysis&>(an).plan, ctl, f.strict);
    void* num = nullptr;
    void* sym = symbolic_of<S>(a, an, op);  // (the first of its type: outside the BLAS lock)
    BlasGuard guard;
    const int st = U::numeric(a.ap.data(), a.ai.data(), U::raw(f.values<S>()), sym, &num, ctl, info);
    auto out = std::make_unique<UmfFactors>();
    out->numeric = num;
    out->is_complex = U::is_complex;
    check_status(st, op, "umfpack_numeric");
    if (st == UMFPACK_WARNING_singular_matrix || !num) return false;  // out frees num
    out->rcond = info[UMFPACK_RCOND];
    out->bytes = static_cast<size_t>(info[UMFPACK_NUMERIC_SIZE] * info[UMFPACK_SIZE_OF_UNIT]);
    f.num = std::move(out);
    return true;
  }

  bool refactor(const Csc&, const Analysis&, Fact&, const Options&, const char*) const override {
    return false;  // no pivot-order reuse in UMFPACK
  }

  void solve(const Csc& a, const Analysis&, Fact& f, bool transpose, int64_t cols, S* w,
             const char* op) const override {
    const int64_t n = a.n;
    auto& uf = static_cast<UmfFactors&>(*f.num);
    auto& plain = uf.plain<S>();
    if (!plain && !uf.no_plain && uf.solved >= plain_after()) {
      plain = PlainLU<S>::extract(uf.numeric, static_cast<int32_t>(n));
      uf.no_plain = !plain;
      if (plain) {
        uf.bytes += plain->bytes();
        SolverStats::instance().plain_factors += 1;
      }
    }
    thread_local std::vector<S> b;  // scratch: y of the plain solve, b of UMFPACK's
    b.resize(n);
    if (plain) {
      for (int64_t c = 0; c < cols; ++c) plain->solve(w + c * n, b.data(), transpose);
      return;
    }
    uf.solved += cols;
    double ctl[UMFPACK_CONTROL], info[UMFPACK_INFO];
    U::defaults(ctl);
    ctl[UMFPACK_PRL] = 0;
    ctl[UMFPACK_IRSTEP] = 0;
    thread_local std::vector<int> wi;
    thread_local std::vector<double> wd;
    wi.resize(n);
    wd.resize(U::kWork * n);
    // UMFPACK_Aat: the array transpose A.' (not the conjugate transpose), as JAX means it.
    const int sys = transpose ? UMFPACK_Aat : UMFPACK_A;
    BlasGuard guard;
    for (int64_t c = 0; c < cols; ++c) {
      S* x = w + c * n;
      std::memcpy(b.data(), x, sizeof(S) * n);
      const int st = U::wsolve(sys, a.ap.data(), a.ai.data(), U::raw(f.values<S>()), U::raw(x),
                               U::raw(b.data()), uf.numeric, ctl, info, wi.data(), wd.data());
      check_status(st, op, "umfpack_wsolve");
    }
  }

  double rcond(const Csc&, const Analysis&, Fact& f, const char*) const override {
    return static_cast<UmfFactors&>(*f.num).rcond;
  }

  // Hager's 1-norm estimate of ||A^-1||_1 (as LAPACK's xLACON, with Higham's alternating
  // vector as a safeguard), times ||A||_1: a lower bound, usually within a factor 3.
  double condest(const Csc& a, const Analysis& an, Fact& f, const char* op) const override {
    const int64_t n = a.n;
    if (n == 0) return 1.0;
    std::vector<S> x(n, S(1.0 / n)), z(n);
    double est = 0.0;
    int64_t last = -1;
    for (int iter = 0; iter < 5; ++iter) {
      solve(a, an, f, false, 1, x.data(), op);  // x <- A^-1 x
      double norm = 0.0;
      for (auto& v : x) norm += std::abs(v);
      if (iter > 0 && norm <= est) break;
      est = norm;
      for (int64_t i = 0; i < n; ++i) {  // xi = sign(x); z = A^-H xi = conj(A^-T conj(xi))
        const double m = std::abs(x[i]);
        if constexpr (U::is_complex) z[i] = m > 0 ? std::conj(x[i] / m) : S(1);
        else z[i] = x[i] >= 0 ? 1.0 : -1.0;
      }
      solve(a, an, f, true, 1, z.data(), op);
      int64_t j = 0;
      for (int64_t i = 1; i < n; ++i)
        if (std::abs(z[i]) > std::abs(z[j])) j = i;
      if (j == last) break;
      last = j;
      std::fill(x.begin(), x.end(), S(0));
      x[j] = S(1);
    }
    std::vector<S> v(n);
    for (int64_t i = 0; i < n; ++i)
      v[i] = S((i % 2 ? -1.0 : 1.0) * (1.0 + static_cast<double>(i) / std::max<int64_t>(1, n - 1)));
    solve(a, an, f, false, 1, v.data(), op);
    double alt = 0.0;
    for (auto& e : v) alt += std::abs(e);
    est = std::max(est, 2.0 * alt / (3.0 * static_cast<double>(n)));
    double anorm = 0.0;  // ||A||_1 with true moduli (f.norm_one uses |re|+|im|)
    const S* v_ = f.values<S>();
    for (int64_t j = 0; j < n; ++j) {
      double col = 0.0;
      for (int32_t q = a.ap[j]; q < a.ap[j + 1]; ++q) col += std::abs(v_[q]);
      anorm = std::max(anorm, col);
    }
    return est * anorm;
  }

  std::pair<S, double> slogdet(const Csc&, const Analysis&, Fact& f,
                               const char* op) const override {
    double m[2] = {0, 0}, e = 0;
    check_status(U::determinant(m, &e, static_cast<UmfFactors&>(*f.num).numeric), op,
                 "umfpack_get_determinant");
    S mant;
    if constexpr (U::is_complex) mant = S(m[0], m[1]);
    else mant = S(m[0]);
    const double am = std::abs(mant);
    if (am == 0) return {S(0), -HUGE_VAL};
    return {mant / am, std::log(am) + e * std::log(10.0)};
  }

};

}  // namespace

std::unique_ptr<Analysis> analyze_umfpack(const Csc& a, const Options& o, const char* op) {
  auto out = std::make_unique<UmfAnalysis>();
  out->opts = o;
  if (symmetric_pattern(a)) out->plan.strategy = UMFPACK_STRATEGY_SYMMETRIC;
  // The real Symbolic object under the plan (reported where a failing analysis happens);
  // with the symmetric strategy and a heavy factorization ahead, "best" competes with AMD.
  double info[UMFPACK_INFO];
  out->symbolic[0] = make_symbolic<double>(a, o, out->plan, info, op);  // owned from here
  if (out->plan.strategy == UMFPACK_STRATEGY_SYMMETRIC && o.ordering != 2 &&
      info[UMFPACK_SYMMETRIC_FLOPS] >= kTryBestFlops) {
    Plan best = out->plan;
    best.ordering = UMFPACK_ORDERING_BEST;
    double binfo[UMFPACK_INFO];
    void* bsym = nullptr;
    // A "best" that fails (UMFPACK built without CHOLMOD or METIS, out of memory) keeps AMD.
    const int st = try_symbolic<double>(a, o, best, binfo, &bsym);
    if (st == UMFPACK_OK && bsym && binfo[UMFPACK_SYMMETRIC_FLOPS] >= 0 &&
        binfo[UMFPACK_SYMMETRIC_FLOPS] < info[UMFPACK_SYMMETRIC_FLOPS]) {
      std::swap(out->symbolic[0], bsym);
      std::copy(binfo, binfo + UMFPACK_INFO, info);
      out->plan = best;
    }
    if (bsym) Umf<double>::free_symbolic(&bsym);
  }
  out->plan.used = static_cast<int>(info[UMFPACK_ORDERING_USED]);
  out->real_bytes = static_cast<size_t>(info[UMFPACK_SYMBOLIC_SIZE] * info[UMFPACK_SIZE_OF_UNIT]);
  std::call_once(out->once[0], [] {});  // the real Symbolic object exists
  // The cache counts a pattern's bytes once, at admission: reserve for the complex
  // analysis, made on first use, as much again as the real one.
  out->bytes = 2 * out->real_bytes;
  return out;
}

bool have_umfpack() { return true; }

template <class S>
const Solver<S>& umfpack_solver() {
  static const UmfSolver<S> s;
  return s;
}
template const Solver<double>& umfpack_solver<double>();
template const Solver<cplx>& umfpack_solver<cplx>();

}  // namespace klujax
