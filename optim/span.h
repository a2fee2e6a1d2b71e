// FloatSpan: a view of `size` contiguous fp32 values in host or device memory (whichever the
// function taking it says). The optimiser and clipping functions take lists of these, one per
// parameter or gradient buffer; the memory belongs to the caller.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/tensor.h"

namespace indexcache {

struct FloatSpan {
  float* data = nullptr;
  int64_t size = 0;
};

// The whole of a contiguous fp32 host tensor (checked: these are invariants of the caller's code).
inline FloatSpan SpanOf(Tensor& t) {
  IC_CHECK(t.dtype() == DType::kF32 && t.device() == Device::kCpu && t.is_contiguous());
  return {t.data<float>(), t.numel()};
}

}  // namespace indexcache
