// A small fork-join pool: N-1 workers plus the caller. One job at a time; a caller that finds the
// pool busy runs its job inline (see threads.h), which is what we want for concurrent async layers:
// their kernels share the cores instead of queueing behind each other.
#include "fused_lora/threads.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace fused_lora {
void blas_set_num_threads(int n);  // blas.cpp

namespace {

int default_threads() {
  if (const char* env = std::getenv("FUSED_LORA_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

// How long a thread polls before it sleeps: FUSED_LORA_SPIN_US microseconds (0: never), default 200.
int64_t spin_ns() {
  if (const char* env = std::getenv("FUSED_LORA_SPIN_US")) {
    char* end = nullptr;
    const long long us = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && us >= 0 && us <= 1000000) return int64_t(us) * 1000;
  }
  return 200 * 1000;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

class Pool {
 public:
  explicit Pool(int n) { start(n); }
  ~Pool() { stop(); }

  int size() const { return size_; }

  void resize(int n) {
    std::lock_guard<std::mutex> busy(busy_);
    stop();
    start(n);
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    int64_t chunks = std::min<int64_t>(size_, (n + grain - 1) / grain);
    if (chunks <= 1 || inside_) {  // nested: inside_ first, as try_lock on an owned mutex is UB
      fn(0, n);
      return;
    }
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) {
      fn(0, n);
      return;
    }
    inside_ = true;
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &fn;
      n_ = n;
      chunks_ = chunks;
      next_.store(0);
      pending_ = chunks;
      settled_.store(false, std::memory_order_relaxed);
      ++generation_;
      generation_seen_.store(generation_, std::memory_order_release);
    }
    cv_.notify_all();
    work();
    // Waiting for active_ too means no worker still reads this job's fields when the next one starts.
    spin_until([&] { return settled_.load(std::memory_order_acquire); });
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [&] { return pending_ == 0 && active_ == 0; });
    job_ = nullptr;
    inside_ = false;
  }

 private:
  void start(int n) {
    size_ = std::max(1, n);
    quit_ = false;
    for (int i = 1; i < size_; ++i) workers_.emplace_back([this] { loop(); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(m_);
      quit_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  // Before sleeping on a condition variable, each side polls for spin_ns_: back-to-back jobs
  // (a decode loop's GEMV per token, the small GEMMs of one layer's step) then find the worker, and
  // the caller its result, awake, instead of paying a futex wake each (35-50 µs in a VM, as much as
  // a whole decode GEMV at 4096²). The wait that follows decides; the poll only shortens it.
  template <typename Ready>
  void spin_until(Ready ready) const {
    if (spin_ns_ <= 0 || ready()) return;
    const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns_);
    do {
      for (int i = 0; i < 64; ++i) cpu_relax();
      if (ready()) return;
    } while (std::chrono::steady_clock::now() < until);
  }

  // Takes chunks until none are left; chunk c covers [c*n/chunks, (c+1)*n/chunks).
  void work() {
    for (;;) {
      int64_t c = next_.fetch_add(1);
      if (c >= chunks_) return;
      (*job_)(c * n_ / chunks_, (c + 1) * n_ / chunks_);
      std::lock_guard<std::mutex> lk(m_);
      if (--pending_ == 0) settle();
    }
  }

  void loop() {
    inside_ = true;
    uint64_t seen = 0;
    for (;;) {
      spin_until([&] { return generation_seen_.load(std::memory_order_acquire) != seen; });
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (quit_) return;
        if (job_ == nullptr) continue;  // woke after that job had finished
        ++active_;
      }
      work();
      std::lock_guard<std::mutex> lk(m_);
      if (--active_ == 0) settle();
    }
  }

  // Under m_: wakes the caller once every chunk is done and no worker is inside work().
  void settle() {
    if (pending_ == 0 && active_ == 0) settled_.store(true, std::memory_order_release);
    done_cv_.notify_all();
  }

  int size_ = 1;
  std::vector<std::thread> workers_;
  std::mutex busy_;  // held by the caller that owns the pool for one job
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t n_ = 0, chunks_ = 0, pending_ = 0, active_ = 0;
  std::atomic<int64_t> next_{0};
  uint64_t generation_ = 0;
  std::atomic<uint64_t> generation_seen_{0};  // generation_, for the workers' poll
  std::atomic<bool> settled_{true};            // pending_ == 0 && active_ == 0, for the caller's poll
  const int64_t spin_ns_ = spin_ns();
  bool quit_ = false;
  static thread_local bool inside_;  // this thread is a worker, or the caller of a running job
};

thread_local bool Pool::inside_ = false;

Pool& pool() {
  static Pool p(default_threads());
  return p;
}

}  // namespace

int num_threads() { return pool().size(); }

void set_num_threads(int n) {
  pool().resize(n);
  blas_set_num_threads(n);
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  pool().run(n, grain, fn);
}

}  // namespace fused_lora
