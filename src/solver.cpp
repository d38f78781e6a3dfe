// Which backend serves a call: the method table and the automatic choice.
#include "solver.hpp"

#include <string>

#include "csc.hpp"

namespace klujax {

template <class S>
const Solver<S>& klu_solver();
template <class S>
const Solver<S>& umfpack_solver();

#ifndef KLUJAX_HAVE_UMFPACK
// Built without UMFPACK (the binary wheels; or no UMFPACK found): method="umfpack" is an
// error, and "auto" always means KLU.
bool have_umfpack() { return false; }
std::unique_ptr<Analysis> analyze_umfpack(const Csc&, const Options&, const char* op) {
  throw InvalidArgument(std::string(op) + ": method='umfpack' is not available: this klujax "
                        "was built without UMFPACK (see klujax.methods())");
}
template <class S>
const Solver<S>& umfpack_solver() {
  throw InvalidArgument("klujax: method='umfpack' is not available in this build");
}
#endif

template <class S>
const Solver<S>& solver(Method m, const char* op) {
  switch (m) {
    case Method::kKlu:
      return klu_solver<S>();
    case Method::kUmfpack:
      if (!have_umfpack())
        throw InvalidArgument(std::string(op) + ": method='umfpack' is not available: this "
                              "klujax was built without UMFPACK (see klujax.methods())");
      return umfpack_solver<S>();
    default:
      throw InternalError(std::string(op) + ": unresolved solver method");
  }
}
template const Solver<double>& solver<double>(Method, const char*);
template const Solver<cplx>& solver<cplx>(Method, const char*);

// The automatic choice, from KLU's symbolic analysis of the pattern (the same for every
// value set, so a pattern's backend never changes between calls). UMFPACK's multifrontal
// factorization wins where the LU factors are dense enough for BLAS-3 to matter: many
// flops per factor entry (large fronts) and enough flops overall to amortize its higher
// fixed cost. Calibrated with benchmarks/methods.py (docs/solvers.md has the figures).
constexpr double kAutoMinFlops = 1e7;
constexpr double kAutoMinFlopsPerEntry = 100;

Method resolve_method(const Options& o, const Csc& a, const Analysis* klu_analysis) {
  if (o.method != Method::kAuto) return o.method;
  if (!have_umfpack() || !klu_analysis) return Method::kKlu;
  const FillEstimate e = fill_estimate(*klu_analysis);
  const bool fill_heavy = e.flops >= kAutoMinFlops && e.lu_nnz > 0 &&
                          e.flops / e.lu_nnz >= kAutoMinFlopsPerEntry;
  return fill_heavy ? Method::kUmfpack : Method::kKlu;
}

}  // namespace klujax
