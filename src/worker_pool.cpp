// klujax's worker pool (declared in parallel.hpp): persistent threads that run the chunks
// parallel_chunks() hands out.
#include <algorithm>
#include <cstdlib>
#include <thread>

#include "parallel.hpp"

namespace klujax {

WorkerPool& WorkerPool::instance() {
  static WorkerPool* pool = new WorkerPool();  // leaked: workers outlive static destructors
  return *pool;
}

WorkerPool::WorkerPool() {
  int64_t total = std::max(1u, std::thread::hardware_concurrency());
  if (const char* env = std::getenv("KLUJAX_NUM_THREADS")) {
    char* end = nullptr;
    long long v = std::strtoll(env, &end, 10);
    if (end != env && v >= 1) total = v;
  }
  for (int64_t t = 1; t < total; ++t) {
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [this] { return !queue_.empty(); });
          task = std::move(queue_.front());
          queue_.pop_front();
        }
        task();
      }
    });
    threads_.back().detach();
  }
}

void WorkerPool::schedule(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

}  // namespace klujax

namespace klujax {

namespace detail {
ThreadSlots& thread_slots() {
  static ThreadSlots* s = new ThreadSlots();  // leaked, like the pool that uses it
  return *s;
}
}  // namespace detail

ThreadStats thread_stats() {
  auto& s = detail::thread_slots();
  return {WorkerPool::instance().num_threads() + 1,
          s.busy.load(),
          s.peak.load(),
          s.peak_callers.load(),
          s.callers_total.load(),
          s.helpers_run.load(),
          s.helpers_declined.load(),
          s.helpers_backed_off.load()};
}

// Peaks restart from the current counts (threads inside klujax now), counters from 0.
void reset_thread_stats() {
  auto& s = detail::thread_slots();
  s.peak.store(s.busy.load());
  s.peak_callers.store(s.callers.load());
  s.callers_total.store(0);
  s.helpers_run.store(0);
  s.helpers_declined.store(0);
  s.helpers_backed_off.store(0);
}

}  // namespace klujax
