// KluTraits<S>: the one place where the scalar type S picks the klu_* or klu_z_* entry
// point. Only the KLU backend and klujax.lu include it.
#pragma once

#include <klu.h>

#include "solver.hpp"

namespace klujax {

template <class S>
struct KluTraits;

template <>
struct KluTraits<double> {
  static constexpr bool is_complex = false;
  static double* raw(double* p) { return p; }
  static klu_numeric* factor(int* ap, int* ai, double* ax, klu_symbolic* s, klu_common* c) {
    return klu_factor(ap, ai, ax, s, c);
  }
  static int refactor(int* ap, int* ai, double* ax, klu_symbolic* s, klu_numeric* n,
                      klu_common* c) {
    return klu_refactor(ap, ai, ax, s, n, c);
  }
  static int solve(klu_symbolic* s, klu_numeric* n, int ld, int nrhs, double* b,
                   klu_common* c) {
    return klu_solve(s, n, ld, nrhs, b, c);
  }
  static int tsolve(klu_symbolic* s, klu_numeric* n, int ld, int nrhs, double* b,
                    klu_common* c) {
    return klu_tsolve(s, n, ld, nrhs, b, c);
  }
  static int rcond(klu_symbolic* s, klu_numeric* n, klu_common* c) {
    return klu_rcond(s, n, c);
  }
  static int condest(int* ap, double* ax, klu_symbolic* s, klu_numeric* n, klu_common* c) {
    return klu_condest(ap, ax, s, n, c);
  }
};

template <>
struct KluTraits<cplx> {
  static constexpr bool is_complex = true;
  // klu_z_* take interleaved (re, im) doubles, which is std::complex<double>'s layout.
  static double* raw(cplx* p) { return reinterpret_cast<double*>(p); }
  static klu_numeric* factor(int* ap, int* ai, cplx* ax, klu_symbolic* s, klu_common* c) {
    return klu_z_factor(ap, ai, raw(ax), s, c);
  }
  static int refactor(int* ap, int* ai, cplx* ax, klu_symbolic* s, klu_numeric* n,
                      klu_common* c) {
    return klu_z_refactor(ap, ai, raw(ax), s, n, c);
  }
  static int solve(klu_symbolic* s, klu_numeric* n, int ld, int nrhs, cplx* b,
                   klu_common* c) {
    return klu_z_solve(s, n, ld, nrhs, raw(b), c);
  }
  // JAX transposes are plain transposes (A^T, not A^H): conj_solve = 0.
  static int tsolve(klu_symbolic* s, klu_numeric* n, int ld, int nrhs, cplx* b,
                    klu_common* c) {
    return klu_z_tsolve(s, n, ld, nrhs, raw(b), 0, c);
  }
  static int rcond(klu_symbolic* s, klu_numeric* n, klu_common* c) {
    return klu_z_rcond(s, n, c);
  }
  static int condest(int* ap, cplx* ax, klu_symbolic* s, klu_numeric* n, klu_common* c) {
    return klu_z_condest(ap, raw(ax), s, n, c);
  }
};

}  // namespace klujax
