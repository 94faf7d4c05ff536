// Writing a large fresh output that nothing reads back soon: each thread faults
// its whole range in first (MADV_POPULATE_WRITE), then fills it with
// non-temporal stores.
//
// Why both: the kernel zeroes a fresh page when it is first touched. When that
// happens in the middle of the copy, the zeroed lines are still in the cache;
// non-temporal stores into them gained nothing (they must push the zeroes out
// first), and populating first but storing normally was slower than plain page
// faults. Faulted in beforehand, the zeroes have left the cache by the time the
// copy arrives, and non-temporal stores write each line once without reading
// it. On the project's 2-core machine that took about 20% less CPU time for
// tta_views' 340 MB output (README, Speed). Where populating fails (Linux
// before 5.14, memory that cannot be written) or there are no non-temporal
// stores (not x86), callers keep ordinary stores.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace spinerank {

// Smaller outputs may still be in the cache when the caller reads them:
// ordinary stores are better there.
constexpr size_t kStreamingMinBytes = size_t(16) << 20;

// Faults in every page of [data, data + bytes) for writing. True iff that
// worked and this build has non-temporal stores: then stream into the range.
// Without them nothing is populated (see above).
inline bool populate_for_streaming(void* data, size_t bytes) {
#if defined(__linux__) && defined(__SSE2__)
#if defined(MADV_POPULATE_WRITE)
  constexpr int kPopulateWrite = MADV_POPULATE_WRITE;
#else
  constexpr int kPopulateWrite = 23;  // Linux >= 5.14; older C library headers lack the name
#endif
  if (bytes == 0) return true;
  // The page around the first byte belongs to the same mapping.
  constexpr uintptr_t kPage = 4096;
  const uintptr_t first = reinterpret_cast<uintptr_t>(data) & ~(kPage - 1);
  const uintptr_t last = reinterpret_cast<uintptr_t>(data) + bytes;
  return madvise(reinterpret_cast<void*>(first), last - first, kPopulateWrite) == 0;
#else
  (void)data;
  (void)bytes;
  return false;
#endif
}

#if defined(__SSE2__)
// Bytes up to the next 16-byte boundary of p, at most n.
inline size_t bytes_to_alignment(const void* p, size_t n) {
  return std::min<size_t>(n, (16 - reinterpret_cast<uintptr_t>(p) % 16) % 16);
}
#endif

// memcpy(dst, src, bytes) with non-temporal stores for the 16-byte aligned part
// of dst; call stream_fence() before another thread reads dst.
inline void stream_copy_bytes(void* dst, const void* src, size_t bytes) {
#if defined(__SSE2__)
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  const size_t head = bytes_to_alignment(d, bytes);
  std::memcpy(d, s, head);
  d += head, s += head, bytes -= head;
  for (; bytes >= 16; d += 16, s += 16, bytes -= 16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(d),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
  }
  std::memcpy(d, s, bytes);
#else
  std::memcpy(dst, src, bytes);
#endif
}

// std::fill_n(dst, n, value) with non-temporal stores, as stream_copy_bytes.
// dst must be aligned to sizeof(T) (tensor data is), which makes every 16-byte
// boundary an element boundary.
template <typename T>
void stream_fill(T* dst, int64_t n, T value) {
#if defined(__SSE2__)
  static_assert(16 % sizeof(T) == 0);
  const size_t head = bytes_to_alignment(dst, size_t(n) * sizeof(T)) / sizeof(T);
  std::fill_n(dst, head, value);
  dst += head, n -= int64_t(head);
  alignas(16) T pattern[16 / sizeof(T)];
  std::fill_n(pattern, 16 / sizeof(T), value);
  const __m128i v = _mm_load_si128(reinterpret_cast<const __m128i*>(pattern));
  for (; n >= int64_t(16 / sizeof(T)); dst += 16 / sizeof(T), n -= 16 / sizeof(T)) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst), v);
  }
#endif
  std::fill_n(dst, n, value);
}

// Orders the non-temporal stores before whatever the thread writes next (the
// end of a parallel region, which publishes the output).
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace spinerank
