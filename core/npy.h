// .npy files (NumPy format 1.0-3.0): little-endian float32/float64/int32/int64, C order.
#pragma once

#include <string>

#include "core/status.h"
#include "core/tensor.h"

namespace indexcache {

// Reads the whole array into a new host tensor. Errors name the file.
StatusOr<Tensor> ReadNpy(const std::string& path);
// Writes a contiguous f32/f64/i32/i64 tensor (format 1.0), atomically.
Status WriteNpy(const std::string& path, const Tensor& tensor);

}  // namespace indexcache
