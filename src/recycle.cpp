// SuiteSparse allocation hooks that recycle large blocks (see recycle.hpp).
#include "recycle.hpp"

#include <SuiteSparse_config.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#define KLUJAX_CAN_RECYCLE 1
#endif

namespace klujax {
namespace {

constexpr size_t kMinBlock = size_t{256} << 10;  // smaller requests go straight to malloc
constexpr size_t kMaxBlocks = 16;

struct Recycler {
  std::mutex mu;
  std::vector<std::pair<void*, size_t>> kept;  // (block, usable size), oldest first
  size_t bytes = 0;
  size_t limit = size_t{64} << 20;
  bool installed = false;
  std::atomic<uint64_t> hits{0}, misses{0};
};

Recycler& recycler() {
  static Recycler* r = new Recycler();  // leaked: the hooks may run until exit
  return *r;
}

#ifdef KLUJAX_CAN_RECYCLE
void* recycling_malloc(size_t size) {
  if (size >= kMinBlock) {
    Recycler& r = recycler();
    {
      std::lock_guard<std::mutex> lock(r.mu);
      // The smallest kept block that fits and wastes at most half of itself.
      size_t best = r.kept.size();
      for (size_t i = 0; i < r.kept.size(); ++i) {
        const size_t u = r.kept[i].second;
        if (u >= size && u / 2 <= size && (best == r.kept.size() || u < r.kept[best].second))
          best = i;
      }
      if (best < r.kept.size()) {
        void* p = r.kept[best].first;
        r.bytes -= r.kept[best].second;
        r.kept.erase(r.kept.begin() + static_cast<std::ptrdiff_t>(best));
        r.hits.fetch_add(1, std::memory_order_relaxed);
        return p;
      }
    }
    r.misses.fetch_add(1, std::memory_order_relaxed);
  }
  return std::malloc(size);
}

void recycling_free(void* p) {
  if (!p) return;
  const size_t u = malloc_usable_size(p);
  if (u >= kMinBlock) {
    Recycler& r = recycler();
    void* evicted[kMaxBlocks];  // no allocation here: this runs inside SuiteSparse's C code
    size_t n_evicted = 0;
    {
      std::lock_guard<std::mutex> lock(r.mu);
      if (u <= r.limit) {
        while (!r.kept.empty() && (r.bytes + u > r.limit || r.kept.size() >= kMaxBlocks)) {
          evicted[n_evicted++] = r.kept.front().first;
          r.bytes -= r.kept.front().second;
          r.kept.erase(r.kept.begin());
        }
        r.kept.emplace_back(p, u);
        r.bytes += u;
        p = nullptr;
      }
    }
    for (size_t e = 0; e < n_evicted; ++e) std::free(evicted[e]);
  }
  std::free(p);
}

// A large block shrunk by much (UMFPACK trims its numeric memory to the factors' size at
// the end of a factorization) moves to a new block, so that the large one, whose pages
// are mapped, is kept for the next factorization instead of being cut and unmapped.
void* recycling_realloc(void* p, size_t size) {
  if (!p) return recycling_malloc(size);
  const size_t u = malloc_usable_size(p);
  if (u >= kMinBlock && size < u && u - size >= kMinBlock && size > 0) {
    if (void* q = recycling_malloc(size)) {
      std::memcpy(q, p, size);
      recycling_free(p);
      return q;
    }
    return p;  // still at least `size` bytes
  }
  return std::realloc(p, size);
}
#endif

}  // namespace

void install_block_recycler() {
#ifdef KLUJAX_CAN_RECYCLE
  static const bool done = [] {
    Recycler& r = recycler();
    if (const char* env = std::getenv("KLUJAX_RECYCLE_MB"); env && *env) {
      char* end = nullptr;
      const double mb = std::strtod(env, &end);
      if (end != env && mb >= 0) r.limit = static_cast<size_t>(std::min(mb, 1e6) * 1048576.0);
    }
    if (r.limit == 0) return false;
    r.kept.reserve(kMaxBlocks);  // kept never grows inside a hook
    // Only over SuiteSparse's default allocator: blocks of another one must not reach
    // free(). Installed once, at import, before klujax calls SuiteSparse.
#if SUITESPARSE_MAIN_VERSION >= 7
    if (SuiteSparse_config_malloc_func_get() != &std::malloc ||
        SuiteSparse_config_realloc_func_get() != &std::realloc ||
        SuiteSparse_config_free_func_get() != &std::free)
      return false;
    SuiteSparse_config_malloc_func_set(&recycling_malloc);
    SuiteSparse_config_realloc_func_set(&recycling_realloc);
    SuiteSparse_config_free_func_set(&recycling_free);
#else
    if (SuiteSparse_config.malloc_func != &std::malloc ||
        SuiteSparse_config.realloc_func != &std::realloc || SuiteSparse_config.free_func != &std::free)
      return false;
    SuiteSparse_config.malloc_func = &recycling_malloc;
    SuiteSparse_config.realloc_func = &recycling_realloc;
    SuiteSparse_config.free_func = &recycling_free;
#endif
    // A fork while another thread holds the lock must not leave the child's copy locked.
    pthread_atfork([] { recycler().mu.lock(); }, [] { recycler().mu.unlock(); },
                   [] { recycler().mu.unlock(); });
    r.installed = true;
    return true;
  }();
  (void)done;
#endif
}

RecycleInfo recycle_info() {
  Recycler& r = recycler();
  std::lock_guard<std::mutex> lock(r.mu);
  RecycleInfo i;
  i.installed = r.installed;
  i.limit_bytes = r.limit;
  i.bytes = r.bytes;
  i.blocks = r.kept.size();
  i.hits = r.hits.load();
  i.misses = r.misses.load();
  return i;
}

void release_recycled_blocks() {
  Recycler& r = recycler();
  std::vector<std::pair<void*, size_t>> kept;
  kept.reserve(kMaxBlocks);
  {
    std::lock_guard<std::mutex> lock(r.mu);
    kept.swap(r.kept);  // r.kept takes the reserved empty vector
    r.bytes = 0;
  }
  for (auto& b : kept) std::free(b.first);
}

}  // namespace klujax
