// DeviceBuffer<T>: an owning cudaMalloc'd array for tests and benchmarks (the runtime allocates
// through its backend's pool instead). Move-only: it can live in a std::vector by value, and a
// copy (which would free the allocation twice) does not compile. Copies move exactly
// n * sizeof(T) bytes; an empty buffer still owns a small allocation so its pointer is valid.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "core/cuda_check.h"

namespace indexcache {

template <typename T>
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : bytes(n * sizeof(T)) { CUDA_CHECK(cudaMalloc(&ptr, bytes > 0 ? bytes : 16)); }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr(other.ptr), bytes(other.bytes) {
    other.ptr = nullptr;
    other.bytes = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      if (ptr) cudaFree(ptr);
      ptr = other.ptr;
      bytes = other.bytes;
      other.ptr = nullptr;
      other.bytes = 0;
    }
    return *this;
  }

  size_t size() const { return bytes / sizeof(T); }
  void CopyFrom(const void* host) { CUDA_CHECK(cudaMemcpy(ptr, host, bytes, cudaMemcpyHostToDevice)); }
  void CopyTo(void* host) const { CUDA_CHECK(cudaMemcpy(host, ptr, bytes, cudaMemcpyDeviceToHost)); }
  // Whole-buffer copies from and to host vectors; a vector shorter than the buffer is a bug.
  void CopyFrom(const std::vector<T>& host) {
    if (host.size() < size()) {
      std::fprintf(stderr, "DeviceBuffer::CopyFrom: %zu host elements for a buffer of %zu\n", host.size(), size());
      std::abort();
    }
    CopyFrom(static_cast<const void*>(host.data()));
  }
  std::vector<T> ToHost() const {
    std::vector<T> host(size());
    CopyTo(host.data());
    return host;
  }

  T* ptr = nullptr;
  size_t bytes;
};

static_assert(!std::is_copy_constructible_v<DeviceBuffer<float>> && !std::is_copy_assignable_v<DeviceBuffer<float>>,
              "DeviceBuffer must not be copyable");
static_assert(std::is_nothrow_move_constructible_v<DeviceBuffer<float>> &&
                  std::is_nothrow_move_assignable_v<DeviceBuffer<float>>,
              "DeviceBuffer must be movable");

}  // namespace indexcache
