#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/limits.h"

namespace indexcache {

std::string ShapeToString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {
// Every partial product stays below this, so stride arithmetic (offset * stride, + 1) and byte
// counts (x 8) cannot overflow int64 either.
constexpr int64_t kMaxExtent = int64_t{1} << 62;
}  // namespace

StatusOr<int64_t> CheckedNumElements(const Shape& shape) {
  int64_t extent = 1;  // product with zero dimensions counted as 1: the largest stride
  bool zero = false;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("shape " + ShapeToString(shape) + " has a negative dimension");
    if (d == 0) {
      zero = true;
      continue;
    }
    if (__builtin_mul_overflow(extent, d, &extent) || extent > kMaxExtent) {
      return InvalidArgument("shape " + ShapeToString(shape) + " is too large (its size overflows)");
    }
  }
  return zero ? 0 : extent;
}

int64_t NumElements(const Shape& shape) {
  auto n = CheckedNumElements(shape);
  if (!n.ok()) throw AllocationError(n.status().message());
  return *n;
}

StatusOr<int64_t> CheckedNumBytes(DType dtype, const Shape& shape) {
  ASSIGN_OR_RETURN(const int64_t n, CheckedNumElements(shape));
  const int64_t elem = DTypeSize(dtype);
  if (n > kMaxTensorBytes / elem) {
    return InvalidArgument("a " + std::string(DTypeName(dtype)) + " tensor of shape " + ShapeToString(shape) +
                           " is too large (over " + std::to_string(kMaxTensorBytes >> 40) + " TiB)");
  }
  return n * elem;
}

std::vector<int64_t> ContiguousStrides(const Shape& shape) {
  (void)NumElements(shape);  // throws before any stride product could wrap
  std::vector<int64_t> strides(shape.size());
  int64_t stride = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= shape[i];  // bounded: at most the extent CheckedNumElements allowed
  }
  return strides;
}

Tensor Tensor::Zeros(DType dtype, Shape shape) {
  auto nbytes = CheckedNumBytes(dtype, shape);
  if (!nbytes.ok()) throw AllocationError(nbytes.status().message());
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = ContiguousStrides(t.shape_);
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(*nbytes, 1));
  // 64-byte alignment suits Eigen's vectorised maps and AVX-512 loads.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) {
    throw AllocationError("out of memory: cannot allocate " + std::to_string(bytes) + " bytes for a " +
                          DTypeName(dtype) + " tensor of shape " + ShapeToString(t.shape_));
  }
  std::memset(p, 0, bytes);
  t.owner_ = std::shared_ptr<void>(p, std::free);
  t.data_ = p;
  return t;
}

Tensor Tensor::View(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner, Device device) {
  Tensor t;
  t.device_ = device;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = ContiguousStrides(t.shape_);
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

bool Tensor::is_contiguous() const { return strides_ == ContiguousStrides(shape_); }

Tensor Tensor::ToFloat32() const {
  IC_CHECK(is_contiguous() && device_ == Device::kCpu);
  Tensor out = Zeros(DType::kF32, shape_);
  ConvertToFloat(dtype_, data_, out.data<float>(), numel());
  return out;
}

StatusOr<Tensor> Tensor::Reshape(Shape shape) const {
  if (!is_contiguous()) return InvalidArgument("reshape of a non-contiguous tensor");
  if (NumElements(shape) != numel()) {
    return InvalidArgument("cannot reshape " + ShapeToString(shape_) + " to " + ShapeToString(shape));
  }
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.strides_ = ContiguousStrides(t.shape_);
  return t;
}

Tensor Tensor::Sub(int64_t offset, Shape shape) const {
  IC_CHECK(is_contiguous() && offset >= 0 && offset + NumElements(shape) <= numel());
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.strides_ = ContiguousStrides(t.shape_);
  t.data_ = static_cast<char*>(data_) + offset * DTypeSize(dtype_);
  return t;
}

Tensor Tensor::Slice0(int64_t begin, int64_t end) const {
  IC_CHECK(dim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0]);
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + begin * strides_[0] * DTypeSize(dtype_);
  return t;
}

}  // namespace indexcache
