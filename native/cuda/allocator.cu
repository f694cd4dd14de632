// The caching device allocator. cudaMalloc/cudaFree synchronize the device and cost tens of
// microseconds, far more than the memory-bound kernels they would feed, so freed blocks are kept
// and handed out again. Sizes round up (512 B granules below 1 MiB, 2 MiB above) so blocks are
// reusable across close sizes; a cached block is taken when it is at most twice the request.
// Stream safety: a block freed on stream S carries an event recorded on S; a later allocation on
// stream T != S makes T wait for that event before the block is used.
#include <map>
#include <mutex>
#include <unordered_map>

#include "common.cuh"

namespace fused_lora::cuda {
namespace {

struct Block {
  size_t size = 0;
  Stream stream = nullptr;
  cudaEvent_t freed = nullptr;  // recorded on `stream` when the block was freed
};

struct Allocator {
  std::mutex mu;
  std::unordered_map<void*, Block> live;     // handed out
  std::multimap<size_t, std::pair<void*, Block>> cache;  // freed, by size
  size_t allocated = 0, cached = 0;
};

Allocator& allocator() {
  static Allocator* a = new Allocator();  // never destroyed: the CUDA runtime may be gone at exit
  return *a;
}

size_t round_size(size_t n) {
  const size_t kSmall = 512, kLarge = 2u << 20;
  if (n == 0) n = 1;
  return n < (1u << 20) ? (n + kSmall - 1) / kSmall * kSmall : (n + kLarge - 1) / kLarge * kLarge;
}

Status release_cache_locked(Allocator& a) {
  Status st = Status::Ok;
  for (auto& [size, pb] : a.cache) {
    if (pb.second.freed) cudaEventDestroy(pb.second.freed);
    cudaError_t e = cudaFree(pb.first);
    if (e != cudaSuccess && st == Status::Ok) st = check(e, "cudaFree");
  }
  a.cache.clear();
  a.cached = 0;
  return st;
}

}  // namespace

Status device_alloc(void** out, size_t bytes, Stream s) {
  *out = nullptr;
  if (!device_info().available) return fail(Status::NoDevice, "no CUDA device: " + device_info().reason);
  Allocator& a = allocator();
  size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.cache.lower_bound(size);
  if (it != a.cache.end() && it->first <= 2 * size) {
    void* p = it->second.first;
    Block b = it->second.second;
    a.cache.erase(it);
    a.cached -= b.size;
    if (b.freed) {
      if (b.stream != s) cudaStreamWaitEvent(as_stream(s), b.freed, 0);
      cudaEventDestroy(b.freed);
      b.freed = nullptr;
    }
    b.stream = s;
    a.live[p] = b;
    a.allocated += b.size;
    *out = p;
    return ok();
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, size);
  if (e == cudaErrorMemoryAllocation) {  // give the cache back and try once more
    cudaGetLastError();
    release_cache_locked(a);
    e = cudaMalloc(&p, size);
  }
  if (e != cudaSuccess) return check(e, ("cudaMalloc(" + std::to_string(size) + " bytes)").c_str());
  a.live[p] = Block{size, s, nullptr};
  a.allocated += size;
  *out = p;
  return ok();
}

Status device_free(void* p, Stream s) {
  if (!p) return ok();
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.live.find(p);
  if (it == a.live.end()) return fail(Status::Argument, "device_free: pointer not from this allocator");
  Block b = it->second;
  a.live.erase(it);
  a.allocated -= b.size;
  b.stream = s;
  if (cudaEventCreateWithFlags(&b.freed, cudaEventDisableTiming) == cudaSuccess) {
    cudaEventRecord(b.freed, as_stream(s));
  } else {
    cudaGetLastError();
    b.freed = nullptr;
    cudaStreamSynchronize(as_stream(s));
  }
  a.cache.emplace(b.size, std::make_pair(p, b));
  a.cached += b.size;
  return ok();
}

AllocatorStats allocator_stats() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return AllocatorStats{a.allocated, a.cached, a.allocated + a.cached};
}

Status allocator_empty_cache() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return release_cache_locked(a);
}

}  // namespace fused_lora::cuda
