#include "cache.hpp"

#include <cstdlib>

namespace klujax {

namespace {
constexpr size_t kMaxKeyedSets = 8;
// A keyed set found again this many times is recycled only as a last resort (recycle_set):
// twice, so that reverse mode's one transposed solve does not protect its forward's set.
constexpr int64_t kProtectHits = 2;
constexpr size_t kMaxUnkeyedSets = 4;
constexpr size_t kMaxPatterns = 64;
constexpr int64_t kDefaultLimitMiB = 256;
}  // namespace

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
  {
    // The most recent pattern first, with no hashing: repeated calls on one pattern (a
    // loop, a lax.scan) compare the indices once and are done.
    std::lock_guard<std::mutex> lock(mu_);
    if (!patterns_.empty()) {
      const Pattern& p = *patterns_.front();
      if (p.opts.same_analysis(opts) && same_indices(p, ai, aj, nnz, n)) {
        ++pattern_hits_;
        return patterns_.front();
      }
    }
  }
  const uint64_t h = pattern_hash(ai, aj, nnz, n);
  auto find_locked = [&]() -> std::shared_ptr<Pattern> {
    for (auto it = patterns_.begin(); it != patterns_.end(); ++it) {
      const Pattern& p = **it;
      if (p.hash == h && p.opts.same_analysis(opts) && same_indices(p, ai, aj, nnz, n)) {
        patterns_.splice(patterns_.begin(), patterns_, it);
        return patterns_.front();
      }
    }
    return nullptr;
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto p = find_locked()) {
      ++pattern_hits_;
      return p;
    }
    ++pattern_misses_;
  }
  // Analyse outside the lock; a thread that raced us on the same pattern wins.
  std::shared_ptr<Pattern> built = build_pattern(ai, aj, nnz, n, opts, op);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto p = find_locked()) return p;
  if (limit_ > 0) admit_locked(built);
  return built;
}

void Cache::admit_locked(const std::shared_ptr<Pattern>& p) {
  if (p->cached_) return;
  p->cached_ = true;
  used_ += p->bytes;
  patterns_.push_front(p);
  enforce_limit_locked();
}

std::unique_ptr<NumericSet> Cache::take_set(Pattern& p, bool is_complex, size_t elem_size,
                                            size_t members, const Options& opts,
                                            std::string_view key, uint64_t& hash) {
  // `key` may point straight at the caller's buffer: compared here, copied by no one.
  auto matches = [&](const NumericSet& s) {
    // (members matters only when n_nz is 0: then every key is empty)
    return s.keyed && s.is_complex == is_complex && s.elem_size == elem_size &&
           s.members.size() == members && s.opts.same_factor(opts) && s.key == key;
  };
  auto take_locked = [&](std::list<std::unique_ptr<NumericSet>>::iterator it) {
    std::unique_ptr<NumericSet> out = std::move(*it);
    p.sets_.erase(it);
    if (p.cached_) used_ -= out->bytes;
    ++numeric_hits_;
    ++out->hits;
    hash = out->hash;
    return out;
  };
  {
    // The most recent keyed set first, with no hashing: a repeated solve with the same
    // values (or the transposed solve of reverse mode) compares the bytes once. A
    // different block of values differs within its first bytes, almost always.
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = p.sets_.begin(); it != p.sets_.end(); ++it) {
      if (!(*it)->keyed) continue;
      if (matches(**it)) return take_locked(it);
      break;
    }
  }
  hash = hash_sample(key.data(), key.size(), 17);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = p.sets_.begin(); it != p.sets_.end(); ++it)
    if ((*it)->hash == hash && matches(**it)) return take_locked(it);
  ++numeric_misses_;
  return nullptr;
}

std::unique_ptr<NumericSet> Cache::recycle_set(Pattern& p, bool is_complex, size_t members) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t keyed = 0;
  for (auto& s : p.sets_) keyed += s->keyed;
  auto take = [&](std::list<std::unique_ptr<NumericSet>>::iterator it) {
    std::unique_ptr<NumericSet> out = std::move(*it);
    p.sets_.erase(it);
    if (p.cached_) used_ -= out->bytes;
    return out;
  };
  auto usable = [&](const NumericSet& s) {
    return s.is_complex == is_complex && s.members.size() == members;
  };
  for (auto it = p.sets_.end(); it != p.sets_.begin();) {  // oldest first: unkeyed
    --it;
    if (!(*it)->keyed && usable(**it)) return take(it);
  }
  if (keyed < 2) return nullptr;
  // Then keyed sets, never the newest, oldest first; a set whose values were found again
  // kProtectHits times (a matrix solved again and again) only when the pattern holds
  // kMaxKeyedSets keyed sets: a stream of new values recycles its own sets around it.
  auto protected_from = p.sets_.end();
  for (auto it = p.sets_.end(); it != p.sets_.begin();) {
    --it;
    if ((*it)->keyed && usable(**it)) {
      bool newest = true;
      for (auto jt = p.sets_.begin(); jt != it; ++jt) newest &= !(*jt)->keyed;
      if (newest) continue;
      if ((*it)->hits < kProtectHits) return take(it);
      if (protected_from == p.sets_.end()) protected_from = it;
    }
  }
  if (protected_from != p.sets_.end() && keyed >= kMaxKeyedSets) return take(protected_from);
  return nullptr;
}

void Cache::put_set(Pattern& p, std::unique_ptr<NumericSet> set) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!p.cached_ || static_cast<int64_t>(set->bytes) > limit_ / 2) return;  // freed here
  const bool keyed = set->keyed;
  used_ += set->bytes;
  p.sets_.push_front(std::move(set));
  size_t count = 0;
  const size_t cap = keyed ? kMaxKeyedSets : kMaxUnkeyedSets;
  for (auto it = p.sets_.begin(); it != p.sets_.end();) {
    if ((*it)->keyed == keyed && ++count > cap) {
      used_ -= (*it)->bytes;
      it = p.sets_.erase(it);
    } else {
      ++it;
    }
  }
  enforce_limit_locked();
}

Fact Cache::take_spare(Pattern& p, bool is_complex) {
  std::unique_ptr<NumericSet> s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = p.sets_.begin(); it != p.sets_.end(); ++it) {
      if (!(*it)->keyed && (*it)->is_complex == is_complex && (*it)->members.size() == 1) {
        s = std::move(*it);
        p.sets_.erase(it);
        if (p.cached_) used_ -= s->bytes;
        break;
      }
    }
  }
  return s ? std::move(s->members[0]) : Fact{};
}

void Cache::put_spare(Pattern& p, bool is_complex, Fact f) {
  if (!f.num) return;
  auto s = std::make_unique<NumericSet>();
  s->is_complex = is_complex;
  s->opts = f.opts;
  s->members.push_back(std::move(f));
  s->count_bytes();
  put_set(p, std::move(s));
}

bool Cache::fits(Pattern& p, int64_t members) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!p.cached_) return false;
  if (p.member_bytes_ == 0) return members == 1;  // nothing seen yet: one member is fine
  return static_cast<double>(p.member_bytes_) * static_cast<double>(members) <= 0.25 * limit_;
}

void Cache::note_member_bytes(Pattern& p, size_t bytes) {
  if (bytes == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  p.member_bytes_ = bytes;
}

void Cache::drop_sets_locked(Pattern& p) {
  for (auto& s : p.sets_) used_ -= s->bytes;
  p.sets_.clear();
}

void Cache::enforce_limit_locked() {
  auto drop_pattern = [&](std::list<std::shared_ptr<Pattern>>::iterator it) {
    Pattern& p = **it;
    drop_sets_locked(p);
    used_ -= p.bytes;
    p.cached_ = false;
    return patterns_.erase(it);
  };
  // Too many patterns: the least recent unpinned ones go.
  for (auto it = std::prev(patterns_.end(), patterns_.empty() ? 0 : 1);
       patterns_.size() > kMaxPatterns && it != patterns_.begin();) {
    auto prev = std::prev(it);
    if ((*it)->pins_ == 0) drop_pattern(it);
    it = prev;
  }
  // Over the byte limit: sets first (least recent pattern, oldest set first), those
  // whose values were found again kProtectHits times (a matrix solved again and again)
  // only after every other set ...
  for (const bool protect : {true, false}) {
    for (auto it = patterns_.rbegin(); used_ > limit_ && it != patterns_.rend(); ++it) {
      auto& sets = (*it)->sets_;
      for (auto s = sets.end(); used_ > limit_ && s != sets.begin();) {
        --s;
        if (protect && (*s)->keyed && (*s)->hits >= kProtectHits) continue;
        used_ -= (*s)->bytes;
        s = sets.erase(s);
      }
    }
  }
  // ... then unpinned patterns, least recent first; the most recent one stays.
  if (used_ > limit_ && patterns_.size() > 1) {
    for (auto it = std::prev(patterns_.end()); used_ > limit_ && it != patterns_.begin();) {
      auto prev = std::prev(it);
      if ((*it)->pins_ == 0) drop_pattern(it);
      it = prev;
    }
  }
}

std::shared_ptr<Pattern> Cache::pin(const std::shared_ptr<Pattern>& p) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<Pattern> out = p;
  if (!p->cached_) {
    // p was evicted between its lookup and this pin, and another call may have cached an
    // equal pattern since: pin that one, so one pattern never has two cached copies.
    for (auto& q : patterns_) {
      if (q->opts.same_analysis(p->opts) && same_indices(*q, *p)) {
        out = q;
        break;
      }
    }
  }
  if (out->pins_++ == 0 && !out->cached_) admit_locked(out);  // even with a limit of 0
  return out;
}

void Cache::unpin(Pattern& p) {
  std::lock_guard<std::mutex> lock(mu_);
  if (--p.pins_ == 0 && limit_ == 0) {
    for (auto it = patterns_.begin(); it != patterns_.end(); ++it) {
      if (it->get() == &p) {
        drop_sets_locked(p);
        used_ -= p.bytes;
        p.cached_ = false;
        patterns_.erase(it);
        break;
      }
    }
  }
  enforce_limit_locked();
}

void Cache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = patterns_.begin(); it != patterns_.end();) {
    Pattern& p = **it;
    drop_sets_locked(p);
    if (p.pins_ > 0) {
      ++it;
      continue;
    }
    used_ -= p.bytes;
    p.cached_ = false;
    it = patterns_.erase(it);
  }
}

void Cache::set_limit(int64_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes < 0 ? 0 : bytes;
    if (limit_ > 0) {
      enforce_limit_locked();
      return;
    }
  }
  clear();
}

CacheInfo Cache::info() {
  std::lock_guard<std::mutex> lock(mu_);
  CacheInfo out{};
  out.patterns = static_cast<int64_t>(patterns_.size());
  for (auto& p : patterns_)
    for (auto& s : p->sets_) (s->keyed ? out.numeric_sets : out.spares) += 1;
  out.bytes = used_;
  out.limit_bytes = limit_;
  out.pattern_hits = pattern_hits_;
  out.pattern_misses = pattern_misses_;
  out.numeric_hits = numeric_hits_;
  out.numeric_misses = numeric_misses_;
  out.refine_steps = CheckStats::instance().refine_steps.load();
  out.refactor_fallbacks = CheckStats::instance().refactor_fallbacks.load();
  out.tightenings = CheckStats::instance().tightenings.load();
  return out;
}

}  // namespace klujax
