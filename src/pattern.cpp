#include "pattern.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>

namespace klujax {

namespace {
constexpr size_t kMaxSetsPerPattern = 8;
constexpr size_t kMaxSparesPerKind = 4;
constexpr int64_t kDefaultLimitMiB = 256;

int64_t fact_bytes(const Fact& f) { return static_cast<int64_t>(f.total_bytes()); }
}  // namespace

void validate_indices(const int32_t* idx, int64_t nnz, int64_t n, const char* op,
                      const char* name) {
  for (int64_t k = 0; k < nnz; ++k) {
    if (idx[k] < 0 || idx[k] >= n) {
      throw InvalidArgument(std::string(op) + ": " + name + "[" + std::to_string(k) +
                            "] = " + std::to_string(idx[k]) + " is outside [0, n_col=" +
                            std::to_string(n) + ")" +
                            (idx[k] < 0 ? " (negative, or too large for int32)" : ""));
    }
  }
}

uint64_t hash_bytes(const void* data, size_t size, uint64_t seed) {
  // Four independent multiply-xor lanes (instruction-level parallelism): only a
  // pre-filter before a full comparison, so speed matters more than quality.
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ULL;
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h[4] = {seed ^ size, seed + kMul, seed ^ 0x5555, seed * kMul + 1};
  size_t i = 0;
  for (; i + 32 <= size; i += 32) {
    uint64_t w[4];
    std::memcpy(w, p + i, 32);
    for (int l = 0; l < 4; ++l) h[l] = (h[l] ^ w[l]) * kMul;
  }
  uint64_t out = h[0] ^ (h[1] >> 7) ^ (h[2] << 11) ^ (h[3] >> 23);
  for (; i < size; ++i) out = (out ^ p[i]) * 0x100000001B3ULL;
  out ^= out >> 29;
  return out * kMul;
}

uint64_t hash_sample(const void* data, size_t size, uint64_t seed) {
  // Keys are compared in full on a hash match, so the hash may look at a sample: 512
  // words spread over the buffer (plus its end). Distinct matrices of a sweep or an
  // optimisation step differ nearly everywhere; two that collide cost one memcmp.
  constexpr size_t kFull = 8192, kSamples = 512;
  if (size <= kFull) return hash_bytes(data, size, seed);
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t words[kSamples + 1];
  const size_t stride = (size - 8) / kSamples;
  for (size_t k = 0; k < kSamples; ++k) std::memcpy(&words[k], p + k * stride, 8);
  std::memcpy(&words[kSamples], p + size - 8, 8);
  return hash_bytes(words, sizeof(words), seed ^ size);
}

static uint64_t pattern_hash(const int32_t* ai, const int32_t* aj, int64_t nnz, int32_t n) {
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
  p->n = n;
  p->opts = opts;
  p->nnz = nnz;
  p->key_i.assign(ai, ai + nnz);
  p->key_j.assign(aj, aj + nnz);
  p->hash = pattern_hash(ai, aj, nnz, n);

  // Two stable counting sorts (by row, then by column) order the entries by (col, row);
  // equal neighbours are duplicates and share one CSC slot.
  std::vector<int32_t> count(static_cast<size_t>(n) + 1, 0), by_row(nnz), order(nnz);
  for (int64_t k = 0; k < nnz; ++k) ++count[ai[k] + 1];
  std::partial_sum(count.begin(), count.end(), count.begin());
  for (int64_t k = 0; k < nnz; ++k) by_row[count[ai[k]]++] = static_cast<int32_t>(k);
  std::fill(count.begin(), count.end(), 0);
  for (int64_t k = 0; k < nnz; ++k) ++count[aj[k] + 1];
  std::partial_sum(count.begin(), count.end(), count.begin());
  for (int64_t t = 0; t < nnz; ++t) {
    int32_t k = by_row[t];
    order[count[aj[k]]++] = k;
  }
  p->ap.assign(static_cast<size_t>(n) + 1, 0);
  p->slot.resize(nnz);
  p->ai.reserve(nnz);
  int32_t prev_i = -1, prev_j = -1;
  for (int64_t t = 0; t < nnz; ++t) {
    int32_t k = order[t];
    if (ai[k] != prev_i || aj[k] != prev_j) {
      p->ai.push_back(ai[k]);
      ++p->ap[aj[k] + 1];
      prev_i = ai[k];
      prev_j = aj[k];
    }
    p->slot[k] = static_cast<int32_t>(p->ai.size()) - 1;
  }
  std::partial_sum(p->ap.begin(), p->ap.end(), p->ap.begin());
  p->ai.shrink_to_fit();

  if (n > 0 && !p->ai.empty()) {  // KLU rejects an empty matrix; it is singular anyway
    Common c = make_common(opts);
    p->symbolic.reset(klu_analyze(n, p->ap.data(), p->ai.data(), c.get()));
    if (!p->symbolic) {
      check_klu_status(c.c, op);
      throw InternalError(std::string(op) + ": klu_analyze failed");
    }
    p->bytes += c.c.memusage;
  }
  p->bytes += sizeof(int32_t) * (3 * nnz + 2 * p->ai.size() + n + 1) + sizeof(Pattern);
  return p;
}

//== Cache ==//

Cache& Cache::instance() {
  static Cache* cache = new Cache();  // leaked on purpose: no destruction-order issues
  return *cache;
}

Cache::Cache() {
  limit_ = kDefaultLimitMiB << 20;
  if (const char* env = std::getenv("KLUJAX_CACHE_MB")) {
    char* end = nullptr;
    long long mb = std::strtoll(env, &end, 10);
    if (end != env && mb >= 0) limit_ = static_cast<int64_t>(mb) << 20;
  }
}

std::shared_ptr<Pattern> Cache::pattern(const int32_t* ai, const int32_t* aj, int64_t nnz,
                                        int32_t n, const Options& opts, const char* op) {
  const uint64_t h = pattern_hash(ai, aj, nnz, n);
  auto matches = [&](const Pattern& p) {
    return p.hash == h && p.opts.same_analysis(opts) && same_indices(p, ai, aj, nnz, n);
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = patterns_.begin(); it != patterns_.end(); ++it) {
      if (matches(**it)) {
        ++pattern_hits_;
        patterns_.splice(patterns_.begin(), patterns_, it);
        return patterns_.front();
      }
    }
    for (auto& p : pinned_) {
      if (matches(*p)) {
        ++pattern_hits_;
        admit_locked(p);  // evicted (clear_cache, limit) while pinned: cache it again
        return p;
      }
    }
    ++pattern_misses_;
  }
  // Analyse outside the lock; a thread that raced us on the same pattern wins.
  std::shared_ptr<Pattern> built = build_pattern(ai, aj, nnz, n, opts, op);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& p : patterns_)
    if (matches(*p)) return p;
  for (auto& p : pinned_)
    if (matches(*p)) {
      admit_locked(p);
      return p;
    }
  admit_locked(built);
  return built;
}

void Cache::admit_locked(const std::shared_ptr<Pattern>& p) {
  if (p->cached || limit_ <= 0) return;
  p->cached = true;
  used_ += p->bytes;
  patterns_.push_front(p);
  enforce_limit_locked();
}

std::unique_ptr<NumericSet> Cache::take_set(Pattern& p, bool is_complex, size_t elem_size,
                                            size_t members, const Options& opts,
                                            std::string_view key, uint64_t hash) {
  // `key` may point straight at the caller's buffer: compared here, copied by no one.
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = p.sets.begin(); it != p.sets.end(); ++it) {
    NumericSet& s = **it;
    // (members matters only when n_nz is 0: then every key is empty)
    if (s.is_complex == is_complex && s.elem_size == elem_size && s.hash == hash &&
        s.members.size() == members && s.opts.same_factor(opts) && s.key == key) {
      std::unique_ptr<NumericSet> out = std::move(*it);
      p.sets.erase(it);
      if (p.cached) used_ -= out->bytes;
      ++numeric_hits_;
      return out;
    }
  }
  ++numeric_misses_;
  return nullptr;
}

void Cache::put_set(Pattern& p, std::unique_ptr<NumericSet> set) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!p.cached || static_cast<int64_t>(set->bytes) > limit_ / 2) return;  // freed here
  used_ += set->bytes;
  p.sets.push_front(std::move(set));
  while (p.sets.size() > kMaxSetsPerPattern) {
    used_ -= p.sets.back()->bytes;
    p.sets.pop_back();
  }
  enforce_limit_locked();
}

bool Cache::fits(Pattern& p, int64_t members) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!p.cached) return false;
  if (p.member_bytes == 0) return members == 1;  // nothing seen yet: one member is fine
  return static_cast<double>(p.member_bytes) * static_cast<double>(members) <= 0.25 * limit_;
}

void Cache::note_member_bytes(Pattern& p, size_t bytes) {
  if (bytes == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  p.member_bytes = bytes;
}

std::unique_ptr<NumericSet> Cache::recycle_set(Pattern& p, bool is_complex, size_t members) {
  std::lock_guard<std::mutex> lock(mu_);
  if (p.sets.size() < 2) return nullptr;
  for (auto it = std::prev(p.sets.end()); it != p.sets.begin(); --it) {
    if ((*it)->is_complex == is_complex && (*it)->members.size() == members) {
      std::unique_ptr<NumericSet> out = std::move(*it);
      p.sets.erase(it);
      if (p.cached) used_ -= out->bytes;
      return out;
    }
  }
  return nullptr;
}

Fact Cache::take_spare(Pattern& p, bool is_complex) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& v = p.spares[is_complex];
  if (v.empty()) return Fact{};
  Fact f = std::move(v.back());
  v.pop_back();
  if (p.cached) used_ -= fact_bytes(f);
  return f;
}

void Cache::put_spare(Pattern& p, bool is_complex, Fact f) {
  if (!f.num) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto& v = p.spares[is_complex];
  if (!p.cached || v.size() >= kMaxSparesPerKind) return;  // f is freed on return
  used_ += fact_bytes(f);
  v.push_back(std::move(f));
  enforce_limit_locked();
}

void Cache::drop_pattern_locked(Pattern& p) {
  for (auto& s : p.sets) used_ -= s->bytes;
  for (auto& v : p.spares)
    for (auto& f : v) used_ -= fact_bytes(f);
  p.sets.clear();
  p.spares[0].clear();
  p.spares[1].clear();
  used_ -= p.bytes;
  p.cached = false;
}

void Cache::enforce_limit_locked() {
  // Oldest patterns give up their numeric objects first, then themselves; the most
  // recent pattern keeps its analysis even when it alone is over the limit.
  while (static_cast<int64_t>(patterns_.size()) > max_patterns_) {
    drop_pattern_locked(*patterns_.back());
    patterns_.pop_back();
  }
  for (auto it = patterns_.rbegin(); used_ > limit_ && it != patterns_.rend(); ++it) {
    Pattern& p = **it;
    while (used_ > limit_ && !p.sets.empty()) {
      used_ -= p.sets.back()->bytes;
      p.sets.pop_back();
    }
    for (auto& v : p.spares) {
      while (used_ > limit_ && !v.empty()) {
        used_ -= fact_bytes(v.back());
        v.pop_back();
      }
    }
  }
  while (used_ > limit_ && patterns_.size() > 1) {
    drop_pattern_locked(*patterns_.back());
    patterns_.pop_back();
  }
}

void Cache::pin(const std::shared_ptr<Pattern>& p) {
  std::lock_guard<std::mutex> lock(mu_);
  if (p->pins++ == 0) pinned_.push_back(p);
}

void Cache::unpin(Pattern& p) {
  std::lock_guard<std::mutex> lock(mu_);
  if (--p.pins > 0) return;
  for (auto it = pinned_.begin(); it != pinned_.end(); ++it) {
    if (it->get() == &p) {
      pinned_.erase(it);
      return;
    }
  }
}

void Cache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& p : patterns_) drop_pattern_locked(*p);
  patterns_.clear();
  used_ = 0;
}

void Cache::set_limit(int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  limit_ = bytes < 0 ? 0 : bytes;
  if (limit_ == 0) {
    for (auto& p : patterns_) drop_pattern_locked(*p);
    patterns_.clear();
    used_ = 0;
  }
  enforce_limit_locked();
}

CacheInfo Cache::info() {
  std::lock_guard<std::mutex> lock(mu_);
  CacheInfo out{};
  out.patterns = static_cast<int64_t>(patterns_.size());
  for (auto& p : patterns_) {
    out.numeric_sets += static_cast<int64_t>(p->sets.size());
    out.spares += static_cast<int64_t>(p->spares[0].size() + p->spares[1].size());
  }
  out.bytes = used_;
  out.limit_bytes = limit_;
  out.pattern_hits = pattern_hits_;
  out.pattern_misses = pattern_misses_;
  out.numeric_hits = numeric_hits_;
  out.numeric_misses = numeric_misses_;
  out.refine_steps = CheckStats::instance().refine_steps.load();
  out.refactor_fallbacks = CheckStats::instance().refactor_fallbacks.load();
  return out;
}

}  // namespace klujax
