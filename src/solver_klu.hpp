// The KLU backend's objects, for the code that reads KLU's factors directly (klujax.lu and
// the automatic method choice). Everything else goes through Solver<S>.
#pragma once

#include "klu_raii.hpp"
#include "solver.hpp"

namespace klujax {

struct KluAnalysis final : Analysis {
  SymbolicPtr symbolic;
};

struct KluFactors final : Factors {
  NumericPtr num;
  // klu_rcond of the last fresh klu_factor: a refactorization whose pivot ratio falls
  // below kRefactorRatio times this is not trusted (+inf: trust no refactorization).
  double ref_rcond = 0.0;
};

// A refactorization (old pivot order, new values) is kept only if its pivots stay as
// healthy as a fresh factorization's: the cheap estimate min|u_kk|/max|u_kk| (klu_rcond,
// O(n)) may not fall below this factor times what the last fresh klu_factor of that
// numeric object had, else the member is factored afresh at once. This is only a cheap
// first filter: a reused pivot order can lose digits with a healthy rcond, which is why
// every solution is then checked by its backward error (driver.hpp: solve_checked).
constexpr double kRefactorRatio = 0.1;

inline const KluAnalysis& klu_of(const Analysis& a) { return static_cast<const KluAnalysis&>(a); }

}  // namespace klujax
