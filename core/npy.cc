#include "core/npy.h"

#include <cstring>
#include <limits>

#include "core/file_util.h"

namespace indexcache {

namespace {

// Value of `key` in a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
StatusOr<std::string> DictValue(const std::string& header, const std::string& key, const std::string& path) {
  const std::string quoted = "'" + key + "'";
  size_t p = header.find(quoted);
  if (p == std::string::npos) return DataLoss(path + ": .npy header has no '" + key + "'");
  p = header.find(':', p + quoted.size());
  if (p == std::string::npos) return DataLoss(path + ": malformed .npy header near '" + key + "'");
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  if (p >= header.size()) return DataLoss(path + ": malformed .npy header near '" + key + "'");
  size_t end;
  if (header[p] == '\'') {
    end = header.find('\'', p + 1);
    if (end == std::string::npos) return DataLoss(path + ": unterminated string in .npy header");
    return header.substr(p + 1, end - p - 1);
  }
  if (header[p] == '(') {
    end = header.find(')', p);
    if (end == std::string::npos) return DataLoss(path + ": unterminated shape in .npy header");
    return header.substr(p + 1, end - p - 1);
  }
  end = header.find_first_of(",}", p);
  if (end == std::string::npos) return DataLoss(path + ": malformed .npy header near '" + key + "'");
  return header.substr(p, end - p);
}

}  // namespace

StatusOr<Tensor> ReadNpy(const std::string& path) {
  ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  const uint8_t* d = file->data();
  const uint64_t size = file->size();
  if (size < 10 || std::memcmp(d, "\x93NUMPY", 6) != 0) return DataLoss(path + ": not a .npy file (bad magic)");
  const int major = d[6];
  uint64_t header_len, header_start;
  if (major == 1) {
    header_len = d[8] | (static_cast<uint64_t>(d[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) return DataLoss(path + ": truncated .npy header");
    header_len = d[8] | (d[9] << 8) | (static_cast<uint64_t>(d[10]) << 16) | (static_cast<uint64_t>(d[11]) << 24);
    header_start = 12;
  } else {
    return DataLoss(path + ": unsupported .npy version " + std::to_string(major));
  }
  if (header_start + header_len > size) return DataLoss(path + ": .npy header runs past the end of the file");
  const std::string header(reinterpret_cast<const char*>(d + header_start), header_len);
  ASSIGN_OR_RETURN(std::string descr, DictValue(header, "descr", path));
  ASSIGN_OR_RETURN(std::string fortran, DictValue(header, "fortran_order", path));
  ASSIGN_OR_RETURN(std::string shape_text, DictValue(header, "shape", path));
  // An exact match: "Falsey" or "False_" are not Python's False.
  while (!fortran.empty() && fortran.back() == ' ') fortran.pop_back();
  if (fortran == "True") return InvalidArgument(path + ": Fortran-order arrays are not supported");
  if (fortran != "False") {
    return DataLoss(path + ": malformed .npy header: 'fortran_order' must be True or False, got '" +
                    Printable(fortran, 32) + "'");
  }
  DType dtype;
  if (descr == "<f4") dtype = DType::kF32;
  else if (descr == "<f8") dtype = DType::kF64;
  else if (descr == "<i4") dtype = DType::kI32;
  else if (descr == "<i8") dtype = DType::kI64;
  else return InvalidArgument(path + ": unsupported .npy dtype '" + Printable(descr) + "' (need <f4, <f8, <i4 or <i8)");
  // Dimensions and the byte count are bounded as they are parsed (no std::stoll, which throws, and
  // no product that wraps), and the byte count is checked against the file before allocating.
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  const auto malformed = [&]() {
    return DataLoss(path + ": malformed or oversized shape '(" + Printable(shape_text) + ")' in .npy header");
  };
  Shape shape;
  uint64_t nbytes = 0;
  size_t p = 0;
  while (p < shape_text.size()) {
    while (p < shape_text.size() && (shape_text[p] == ' ' || shape_text[p] == ',')) ++p;
    if (p >= shape_text.size()) break;
    size_t q = p;
    uint64_t dim = 0;
    while (q < shape_text.size() && shape_text[q] >= '0' && shape_text[q] <= '9') {
      dim = dim * 10 + static_cast<uint64_t>(shape_text[q] - '0');
      if (dim > kMax / 10) return malformed();
      ++q;
    }
    if (q == p) return malformed();
    shape.push_back(static_cast<int64_t>(dim));
    p = q;
  }
  // The same check as every tensor's: the product of the dimensions, zero ones counted as 1, must
  // not overflow (a zero dimension does not make a (0, 2^40, 2^40) shape's strides small).
  auto checked = CheckedNumBytes(dtype, shape);
  if (!checked.ok()) return malformed();
  nbytes = static_cast<uint64_t>(*checked);
  const uint64_t data_start = header_start + header_len;
  if (size - data_start < nbytes) {
    return DataLoss(path + ": truncated .npy data (" + std::to_string(size - data_start) + " bytes for shape " +
                    ShapeToString(shape) + ", need " + std::to_string(nbytes) + ")");
  }
  Tensor t = Tensor::Zeros(dtype, shape);
  std::memcpy(t.raw(), d + data_start, static_cast<size_t>(nbytes));
  return t;
}

Status WriteNpy(const std::string& path, const Tensor& tensor) {
  const char* descr;
  switch (tensor.dtype()) {
    case DType::kF32: descr = "<f4"; break;
    case DType::kF64: descr = "<f8"; break;
    case DType::kI32: descr = "<i4"; break;
    case DType::kI64: descr = "<i8"; break;
    default: return InvalidArgument(path + ": cannot write dtype " + std::string(DTypeName(tensor.dtype())) + " to .npy");
  }
  if (!tensor.is_contiguous()) return InvalidArgument(path + ": tensor must be contiguous");
  if (tensor.empty()) return InvalidArgument(path + ": tensor has no storage");
  std::string shape = "(";
  for (int64_t i = 0; i < tensor.dim(); ++i) shape += std::to_string(tensor.size(i)) + (tensor.dim() == 1 ? "," : (i + 1 < tensor.dim() ? ", " : ""));
  shape += ")";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so that magic(6) + version(2) + len(2) + header is a multiple of 64, ending in '\n'.
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(1);
  out.push_back(0);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>((header.size() >> 8) & 0xff));
  out += header;
  out.append(static_cast<const char*>(tensor.raw()), static_cast<size_t>(tensor.nbytes()));
  return WriteFileAtomic(path, out);
}

}  // namespace indexcache
