// Tensor: a typed, shaped view of memory with strides, owning or sharing its storage.
//
// Storage is reference-counted: a tensor read from a memory-mapped safetensors file keeps the
// mapping alive, and a freshly allocated tensor owns its buffer. Only host memory exists today;
// `Device` leaves room for the CUDA backend's device tensors, which will share this shape/stride
// description and differ only in where `data` points and who frees it.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace indexcache {

enum class Device { kCpu, kCuda };

using Shape = std::vector<int64_t>;
std::string ShapeToString(const Shape& shape);

// Thrown when a tensor's size overflows, exceeds kMaxTensorBytes (core/limits.h) or cannot be
// allocated. Sizes from user input are bounded where they enter (config load, flag parsing), so
// this is the last line of defence: the command boundary (tools/commands.cc) turns it, like
// std::bad_alloc, into one error line instead of an abort or a heap overflow from a wrapped size.
class AllocationError : public std::length_error {
 public:
  using std::length_error::length_error;
};

// The element count, or an error when a dimension is negative or the product of the dimensions
// (zero dimensions counted as 1, so that strides cannot overflow either) exceeds 2^62.
StatusOr<int64_t> CheckedNumElements(const Shape& shape);
// The element count; throws AllocationError where CheckedNumElements fails.
int64_t NumElements(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // A new zero-filled contiguous host tensor. Throws AllocationError when the size overflows, is
  // over kMaxTensorBytes or the memory is not there.
  static Tensor Zeros(DType dtype, Shape shape);
  // A contiguous view of memory kept alive by `owner` (for example an mmap).
  static Tensor View(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner,
                     Device device = Device::kCpu);

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }  // in elements
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t axis) const { return shape_[axis < 0 ? axis + dim() : axis]; }
  int64_t numel() const { return NumElements(shape_); }
  int64_t nbytes() const { return numel() * DTypeSize(dtype_); }
  bool empty() const { return data_ == nullptr; }
  bool is_contiguous() const;

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T> T* data() { return static_cast<T*>(data_); }
  template <typename T> const T* data() const { return static_cast<const T*>(data_); }

  // A contiguous float32 copy (converting bf16/f16/fp8/f64/ints by value).
  Tensor ToFloat32() const;
  // The same storage with a new shape of equal element count (contiguous tensors only).
  StatusOr<Tensor> Reshape(Shape shape) const;
  // `shape`-shaped view of the contiguous elements starting at `offset`, sharing storage.
  Tensor Sub(int64_t offset, Shape shape) const;
  // Rows [begin, end) of the first axis, sharing storage.
  Tensor Slice0(int64_t begin, int64_t end) const;

 private:
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  Shape shape_;
  std::vector<int64_t> strides_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

// Row-major strides; throws AllocationError when they overflow (see CheckedNumElements).
std::vector<int64_t> ContiguousStrides(const Shape& shape);
// Bytes of a contiguous `dtype` tensor of `shape`, or an error naming the shape when it overflows
// or exceeds kMaxTensorBytes.
StatusOr<int64_t> CheckedNumBytes(DType dtype, const Shape& shape);

}  // namespace indexcache
