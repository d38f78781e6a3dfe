#include "pattern.hpp"

#include <cstring>
#include <string>

namespace klujax {

uint64_t pattern_hash(const int32_t* ai, const int32_t* aj, int64_t nnz, int32_t n) {
  uint64_t h = hash_sample(ai, sizeof(int32_t) * nnz, static_cast<uint64_t>(n));
  return hash_sample(aj, sizeof(int32_t) * nnz, h);
}

bool same_indices(const Pattern& p, const int32_t* ai, const int32_t* aj, int64_t nnz,
                  int64_t n) {
  const size_t sz = sizeof(int32_t) * nnz;
  return p.n == n && p.nnz == nnz &&
         (nnz == 0 || (std::memcmp(p.key_i.data(), ai, sz) == 0 &&
                       std::memcmp(p.key_j.data(), aj, sz) == 0));
}

std::shared_ptr<Pattern> build_pattern(const int32_t* ai, const int32_t* aj, int64_t nnz,
                                       int32_t n, const Options& opts, const char* op) {
  validate_indices(ai, nnz, n, op, "Ai");
  validate_indices(aj, nnz, n, op, "Aj");
  if (nnz > INT32_MAX) throw InvalidArgument(std::string(op) + ": more than 2^31-1 nonzeros");
  auto p = std::make_shared<Pattern>();
  static_cast<Csc&>(*p) = coo_to_csc(ai, aj, nnz, n);
  p->opts = opts;
  p->key_i.assign(ai, ai + nnz);
  p->key_j.assign(aj, aj + nnz);
  p->hash = pattern_hash(ai, aj, nnz, n);
  if (n > 0 && !p->ai.empty()) {  // the solvers reject an empty matrix; it is singular anyway
    p->klu = analyze_klu(*p, opts, op);
    p->method = resolve_method(opts, *p, p->klu.get());
    if (p->method == Method::kUmfpack) p->other = analyze_umfpack(*p, opts, op);
    p->bytes += p->klu->bytes + (p->other ? p->other->bytes : 0);
  } else {
    p->method = resolve_method(opts, *p, nullptr);
    if (p->method == Method::kUmfpack && !have_umfpack())
      solver<double>(p->method, op);  // the same error as for a non-empty pattern
  }
  p->bytes += sizeof(int32_t) * (3 * nnz + 2 * p->ai.size() + n + 1) + sizeof(Pattern);
  return p;
}

}  // namespace klujax
