// Solver options (klujax.KLUOptions on the Python side). They travel as one f64 array
// attribute, decoded here and nowhere else; the order of the fields is the contract with
// klujax/_options.py (KLUOptions.as_attribute).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "errors.hpp"

namespace klujax {

// The backend: kAuto is resolved per pattern (solver.hpp: resolve_method).
enum class Method : int { kAuto = 0, kKlu = 1, kUmfpack = 2 };

struct Options {
  // KLU's own controls.
  double tol = 0.001;  // partial pivoting tolerance (1: always the largest entry)
  int ordering = 0;    // 0: AMD, 1: COLAMD, 2: natural
  int scale = 2;       // 0: none, 1: sum, 2: max
  bool btf = true;     // block triangular form pre-ordering
  // klujax's accuracy guarantee: every solution's normwise backward error
  // ||b - op(A) x||inf / (||A||inf ||x||inf + ||b||inf) is measured; iterative
  // refinement (at most `refine` steps on the same factors) runs while it is above
  // `target`, and a refactorization with a reused pivot order that still misses it is
  // redone with fresh pivoting.
  bool check = true;
  int refine = 3;
  double target = 1e-14;
  Method method = Method::kAuto;

  static constexpr size_t kFields = 8;

  // From the attribute [tol, ordering, scale, btf, check, refine, target, method]. The
  // 7-field form (no method) is what klujax 0.6.0 serialized into exported computations:
  // it means KLU, as it did then.
  static Options decode(const double* v, size_t size, const char* op) {
    if (size != kFields && size != kFields - 1)
      throw InvalidArgument(std::string(op) + ": options attribute has " + std::to_string(size) +
                            " fields, expected " + std::to_string(kFields) +
                            " (klujax Python and native parts out of sync)");
    for (size_t k = 0; k < size; ++k)  // before any cast to int (NaN/huge: undefined)
      if (!std::isfinite(v[k]) || (k != 0 && k != 6 && std::fabs(v[k]) > 1e6))
        throw InvalidArgument(std::string(op) + ": invalid options");
    Options o;
    o.tol = v[0];
    o.ordering = static_cast<int>(v[1]);
    o.scale = static_cast<int>(v[2]);
    o.btf = v[3] != 0;
    o.check = v[4] != 0;
    o.refine = static_cast<int>(v[5]);
    o.target = v[6];
    const double m = size == kFields ? v[7] : 1.0;
    o.method = static_cast<Method>(static_cast<int>(m));
    if (!(m == 0 || m == 1 || m == 2) || !(o.tol > 0 && o.tol <= 1) || o.ordering < 0 || o.ordering > 2 || o.scale < 0 ||
        o.scale > 2 || o.refine < 0 || !(o.target >= 0))
      throw InvalidArgument(std::string(op) + ": invalid options");
    return o;
  }

  // Whether a factorization made with `other` may be refactored under these options:
  // the row scaling must agree (klu_refactor rescales in place), and so must the pivot
  // tolerance that chose the pivot order being reused.
  bool same_factor(const Options& other) const {
    return tol == other.tol && scale == other.scale;
  }
  bool same_analysis(const Options& other) const {
    return ordering == other.ordering && btf == other.btf && method == other.method;
  }
};

}  // namespace klujax
