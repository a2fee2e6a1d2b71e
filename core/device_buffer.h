// DeviceBuffer<T>: an owning cudaMalloc'd array for tests and benchmarks (the runtime allocates
// through its backend's pool instead). Copies move exactly n * sizeof(T) bytes; an empty buffer
// still owns a small allocation so its pointer is valid.
#pragma once

#include <cstddef>

#include "core/cuda_check.h"

namespace indexcache {

template <typename T>
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : bytes(n * sizeof(T)) { CUDA_CHECK(cudaMalloc(&ptr, bytes > 0 ? bytes : 16)); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void CopyFrom(const void* host) { CUDA_CHECK(cudaMemcpy(ptr, host, bytes, cudaMemcpyHostToDevice)); }
  void CopyTo(void* host) const { CUDA_CHECK(cudaMemcpy(host, ptr, bytes, cudaMemcpyDeviceToHost)); }
  T* ptr = nullptr;
  size_t bytes;
};

}  // namespace indexcache
