// The solver seam: what the batched drivers, the cache and the diagnostics need from a
// sparse direct solver, for one sparsity pattern. KLU (solver_klu.cpp) and UMFPACK
// (solver_umfpack.cpp, optional at build time) implement it; a new backend (e.g. cuDSS)
// is one more class behind solver<S>() and one more Method, with no change to the
// drivers, the cache or the JAX rules. docs/solvers.md describes the layers.
//
// Contract of a backend, for a pattern analysed by it (Analysis) and one member's values
// (Fact::vals, CSC order, duplicates summed):
//   factor    - a factorization with fresh pivoting; false if the matrix is singular.
//               A backend with a faster, less stable pivoting mode (tightens() true)
//               uses it unless Fact::strict asks for its most stable one.
//   refactor  - the same values with the pivot order of an existing factorization, when
//               the backend can and the pivots stay healthy; false means "factor afresh"
//               (never an error). A backend without pivot reuse always returns false.
//   solve     - op(A) x = b in place for `cols` contiguous columns of length n,
//               op(A) = A or A^T (the plain transpose, also for complex).
//   rcond     - the cheap pivot ratio min|u_kk| / max|u_kk| of the factorization.
//   condest   - an estimate of the 1-norm condition number.
//   slogdet   - (sign, log|det A|).
// Accuracy (backward error, refinement, fallback to fresh pivots) is not a backend's
// business: driver.hpp does it above the seam, the same for every backend.
#pragma once

#include <atomic>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <vector>

#include "options.hpp"

namespace klujax {

using cplx = std::complex<double>;

template <class S>
inline constexpr bool is_complex_v = false;
template <>
inline constexpr bool is_complex_v<cplx> = true;

// Storage type of a buffer -> the double-precision type the solvers compute in.
template <class T>
struct ComputeType {
  using type = double;
};
template <class R>
struct ComputeType<std::complex<R>> {
  using type = cplx;
};
template <class T>
using compute_t = typename ComputeType<T>::type;

struct Csc;

// One backend's analysis of one pattern: immutable once built.
struct Analysis {
  virtual ~Analysis() = default;
  // How the backend will factor this pattern, in words (cache.analysis_info); "" if
  // there is nothing to say beyond the method.
  virtual std::string describe() const { return ""; }
  size_t bytes = 0;
};

// One backend's factorization of one member's values.
struct Factors {
  virtual ~Factors() = default;
  size_t bytes = 0;
};

// One member's factorization, the values it was made from (the accuracy check's residuals
// and a fresh refactorization need them) and their norms. Backend-neutral.
struct Fact {
  std::unique_ptr<Factors> num;  // null: never factored, or singular from the start
  bool ok = false;           // the last (re)factorization succeeded: num holds these values
  bool fresh = false;        // num came from a fresh factorization (pivots not reused)
  bool strict = false;       // asks the backend for its most stable pivoting (reset with
                             // new values: load_values)
  bool loose = false;        // num came from a backend's faster pivoting (strict false)
  int64_t refined = 0;       // refinement solves (steps x columns) spent on num
  Options opts;              // the options num was factored with
  std::vector<double> vals;  // CSC values (complex: interleaved re, im), duplicates summed
  double norm_inf = 0.0;     // ||A||inf (max row sum of |a_ij|) and ||A||1 (max column
  double norm_one = 0.0;     // sum), |re|+|im| for complex entries
  bool has_norms = false;    // norm_inf/norm_one are those of vals
  size_t total_bytes() const {
    return (num ? num->bytes : 0) + sizeof(double) * vals.capacity();
  }
  template <class S>
  S* values() { return reinterpret_cast<S*>(vals.data()); }
  template <class S>
  const S* values() const { return reinterpret_cast<const S*>(vals.data()); }
};

// Process-wide counters of the backends (cache_info).
struct SolverStats {
  // UMFPACK factorizations copied into plain arrays for repeated solves (PlainLU)
  std::atomic<int64_t> plain_factors{0};
  static SolverStats& instance() {
    static SolverStats* s = new SolverStats();  // leaked: used until exit
    return *s;
  }
};

template <class S>
class Solver {
 public:
  virtual ~Solver() = default;
  virtual Method method() const = 0;
  // Whether factor() pivots faster but less stably unless Fact::strict is set
  // (driver.hpp: solve_checked tightens such a factorization when it needs it).
  virtual bool tightens() const { return false; }
  virtual bool factor(const Csc& a, const Analysis& an, Fact& f, const Options& o,
                      const char* op) const = 0;
  virtual bool refactor(const Csc& a, const Analysis& an, Fact& f, const Options& o,
                        const char* op) const = 0;
  virtual void solve(const Csc& a, const Analysis& an, Fact& f, bool transpose, int64_t cols,
                     S* w, const char* op) const = 0;
  virtual double rcond(const Csc& a, const Analysis& an, Fact& f, const char* op) const = 0;
  virtual double condest(const Csc& a, const Analysis& an, Fact& f, const char* op) const = 0;
  virtual std::pair<S, double> slogdet(const Csc& a, const Analysis& an, Fact& f,
                                       const char* op) const = 0;
};

// The backend of a (resolved, never kAuto) method for scalar S; throws InvalidArgument
// for a backend this build does not have.
template <class S>
const Solver<S>& solver(Method m, const char* op);

// Symbolic analyses. The KLU one is made for every pattern (its fill and flop estimates
// drive the automatic choice, and klujax.lu reads KLU factors); the other backends' only
// when a pattern resolves to them.
std::unique_ptr<Analysis> analyze_klu(const Csc& a, const Options& o, const char* op);
std::unique_ptr<Analysis> analyze_umfpack(const Csc& a, const Options& o, const char* op);
bool have_umfpack();

// What the automatic choice looks at, from KLU's analysis (AMD on each diagonal block).
struct FillEstimate {
  double flops = 0;  // estimated factorization flops
  double lu_nnz = 0; // estimated nonzeros of L + U
};
FillEstimate fill_estimate(const Analysis& klu_analysis);

// Method::kAuto -> the backend for this pattern (documented in docs/solvers.md).
Method resolve_method(const Options& o, const Csc& a, const Analysis* klu_analysis);

}  // namespace klujax
