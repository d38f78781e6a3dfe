// Splitting a batch over klujax's worker pool without ever blocking on a task that has
// not started: chunks are claimed from an atomic counter by the calling thread and by
// scheduled helpers alike, and the caller waits only for chunks that were claimed. A
// helper that starts late finds nothing left and touches nothing but shared state, so a
// saturated pool (several klujax calls at once) degrades to serial work, not deadlock.
//
// The thread cap: a process-wide count of "busy" threads (callers inside
// parallel_chunks plus helpers holding a slot). A call schedules only as many helpers as
// there are free slots (cap - busy, reserved atomically before scheduling), and a helper
// re-checks the count before it claims a chunk: one that finds the machine
// oversubscribed (callers arrived since it was scheduled) gives its slot back unused. The
// calling thread always runs its own chunks and never waits for a slot (it is XLA's
// thread and may hold locks), so the total exceeds the cap only when more callers than
// cores are inside klujax at once, or while helpers admitted before a caller arrived
// finish the chunk they already claimed.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <deque>
#include <thread>
#include <vector>

namespace klujax {

// What the driver needs from a thread pool.
struct Executor {
  virtual ~Executor() = default;
  virtual int64_t num_threads() = 0;
  virtual void schedule(std::function<void()> task) = 0;
};

// klujax's own small pool: hardware_concurrency - 1 persistent workers (KLUJAX_NUM_THREADS
// overrides the total, 1 disables). Measured here, tasks handed to XLA's intra-op pool
// through ffi::ThreadPool did not start until the calling custom call had finished its
// batch alone, so batches never ran in parallel; these workers wake in microseconds.
class WorkerPool final : public Executor {
 public:
  static WorkerPool& instance();
  int64_t num_threads() override { return static_cast<int64_t>(threads_.size()); }
  void schedule(std::function<void()> task) override;

 private:
  WorkerPool();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
};

// Process-wide accounting of the threads doing klujax work inside parallel_chunks
// (defined in worker_pool.cpp; read by _klujax.thread_stats()).
struct ThreadStats {
  int64_t cap, busy, peak, peak_callers, callers_total, helpers_run, helpers_declined,
      helpers_backed_off;
};
ThreadStats thread_stats();
void reset_thread_stats();

namespace detail {
struct ThreadSlots {
  std::atomic<int64_t> busy{0};              // callers + helpers holding a slot
  std::atomic<int64_t> callers{0};           // callers inside parallel_chunks
  std::atomic<int64_t> peak{0};
  std::atomic<int64_t> peak_callers{0};
  std::atomic<int64_t> callers_total{0};
  std::atomic<int64_t> helpers_run{0};       // helpers that held a slot and ran
  std::atomic<int64_t> helpers_declined{0};  // helpers not scheduled: no free slot
  std::atomic<int64_t> helpers_backed_off{0};  // scheduled, gave their slot back unused
};
ThreadSlots& thread_slots();

inline void raise_to(std::atomic<int64_t>& peak, int64_t v) {
  int64_t p = peak.load(std::memory_order_relaxed);
  while (v > p && !peak.compare_exchange_weak(p, v, std::memory_order_relaxed)) {
  }
}

// The calling thread's slot: taken unconditionally (a caller never waits), released on
// every exit path.
class CallerSlot {
 public:
  explicit CallerSlot(ThreadSlots& s) : s_(s) {
    raise_to(s_.peak, s_.busy.fetch_add(1, std::memory_order_acq_rel) + 1);
    raise_to(s_.peak_callers, s_.callers.fetch_add(1, std::memory_order_relaxed) + 1);
    s_.callers_total.fetch_add(1, std::memory_order_relaxed);
  }
  ~CallerSlot() {
    s_.callers.fetch_sub(1, std::memory_order_relaxed);
    s_.busy.fetch_sub(1, std::memory_order_acq_rel);
  }
  CallerSlot(const CallerSlot&) = delete;
  CallerSlot& operator=(const CallerSlot&) = delete;

 private:
  ThreadSlots& s_;
};

// Reserves up to `want` helper slots while busy < cap; returns how many it got.
inline int64_t reserve_helpers(ThreadSlots& s, int64_t want, int64_t cap) {
  int64_t b = s.busy.load(std::memory_order_acquire);
  for (;;) {
    int64_t take = std::min(want, cap - b);
    if (take <= 0) return 0;
    if (s.busy.compare_exchange_weak(b, b + take, std::memory_order_acq_rel)) {
      raise_to(s.peak, b + take);
      return take;
    }
  }
}

struct ChunkState {
  std::atomic<int64_t> next{0};
  int64_t n_chunks = 0;
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;                                // guarded by mu
  std::exception_ptr error;                        // guarded by mu
  const std::function<void(int64_t)>* fn = nullptr;  // valid while done < n_chunks

  void run() {
    for (;;) {
      int64_t c = next.fetch_add(1);
      if (c >= n_chunks) return;
      std::exception_ptr err;
      try {
        (*fn)(c);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mu);
      if (err && !error) error = err;
      if (++done == n_chunks) cv.notify_all();
    }
  }
};
}  // namespace detail

// Runs fn(lo, hi) over [0, n) in at most `max_chunks` contiguous chunks; each chunk is
// one unit of serial work (it may keep state, e.g. a KLU numeric object, across items).
// Helpers are scheduled only into free thread slots (see the top of this file); with no
// free slot the caller runs the whole range as one chunk, exactly as a serial call.
// Rethrows the first exception after every claimed chunk has finished.
inline void parallel_chunks(Executor* ex, int64_t n, int64_t max_chunks,
                            const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  detail::ThreadSlots& slots = detail::thread_slots();
  detail::CallerSlot me(slots);
  int64_t chunks = std::max<int64_t>(1, std::min(n, max_chunks));
  const int64_t cap = ex ? ex->num_threads() + 1 : 1;
  chunks = std::min(chunks, cap);
  int64_t helpers = 0;
  if (chunks > 1) {
    helpers = detail::reserve_helpers(slots, chunks - 1, cap);
    if (helpers < chunks - 1)
      slots.helpers_declined.fetch_add(chunks - 1 - helpers, std::memory_order_relaxed);
    chunks = helpers + 1;
  }
  // Reserved slots not (yet) owned by a scheduled helper: given back on any exit,
  // including an exception (out of memory) before or while scheduling.
  struct Unowned {
    detail::ThreadSlots& s;
    int64_t left;
    void release() {
      if (left > 0) s.busy.fetch_sub(left, std::memory_order_acq_rel);
      left = 0;
    }
    ~Unowned() { release(); }
  } unowned{slots, helpers};
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  auto range = [n, chunks](int64_t c) { return n * c / chunks; };
  std::function<void(int64_t)> body = [&](int64_t c) { fn(range(c), range(c + 1)); };
  auto state = std::make_shared<detail::ChunkState>();
  state->n_chunks = chunks;
  state->fn = &body;
  // Each helper owns one reserved slot and gives it back whatever happens (including a
  // task that is destroyed without running). Before claiming it re-checks the count.
  struct HelperSlot {
    detail::ThreadSlots* s;
    explicit HelperSlot(detail::ThreadSlots* s_) : s(s_) {}
    HelperSlot(const HelperSlot&) = delete;
    ~HelperSlot() { s->busy.fetch_sub(1, std::memory_order_acq_rel); }
  };
  try {
    for (int64_t h = 0; h < helpers; ++h) {
      auto slot = std::make_shared<HelperSlot>(&slots);
      --unowned.left;  // now owned by `slot`
      ex->schedule([state, slot, cap] {
        detail::ThreadSlots& s = *slot->s;
        if (s.busy.load(std::memory_order_acquire) > cap) {  // callers arrived meanwhile
          s.helpers_backed_off.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        s.helpers_run.fetch_add(1, std::memory_order_relaxed);
        state->run();
      });
    }
  } catch (...) {
    // scheduling failed (out of memory): give the unowned slots back now and run what
    // is left of the batch here
    unowned.release();
  }
  state->run();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done == state->n_chunks; });
  if (state->error) std::rethrow_exception(state->error);
}

}  // namespace klujax
