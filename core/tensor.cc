#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

namespace indexcache {

std::string ShapeToString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> ContiguousStrides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t stride = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

Tensor Tensor::Zeros(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = ContiguousStrides(t.shape_);
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(t.nbytes(), 1));
  // 64-byte alignment suits Eigen's vectorised maps and AVX-512 loads.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  IC_CHECK(p != nullptr);
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
