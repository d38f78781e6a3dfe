// Splitting a batch over XLA's intra-op thread pool without ever blocking on a task that
// has not started: chunks are claimed from an atomic counter by the calling thread and
// by scheduled helpers alike, and the caller waits only for chunks that were claimed. A
// helper that starts late finds nothing left and touches nothing but shared state, so a
// saturated pool (several klujax calls at once) degrades to serial work, not deadlock.
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

namespace detail {
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
// Rethrows the first exception after every claimed chunk has finished.
inline void parallel_chunks(Executor* ex, int64_t n, int64_t max_chunks,
                            const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t chunks = std::max<int64_t>(1, std::min(n, max_chunks));
  if (ex) chunks = std::min<int64_t>(chunks, ex->num_threads() + 1);
  if (!ex || chunks <= 1) {
    fn(0, n);
    return;
  }
  auto range = [n, chunks](int64_t c) { return n * c / chunks; };
  std::function<void(int64_t)> body = [&](int64_t c) { fn(range(c), range(c + 1)); };
  auto state = std::make_shared<detail::ChunkState>();
  state->n_chunks = chunks;
  state->fn = &body;
  for (int64_t t = 1; t < chunks; ++t) ex->schedule([state] { state->run(); });
  state->run();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done == state->n_chunks; });
  if (state->error) std::rethrow_exception(state->error);
}

}  // namespace klujax
