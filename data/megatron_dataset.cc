#include "data/megatron_dataset.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

namespace indexcache {

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;
constexpr uint64_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;  // magic, version, dtype, N, D
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the formats are little-endian and read in place");

// The .idx arrays start at offset 34 and are unaligned, so every load goes through memcpy (which
// compiles to a plain load on x86).
template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

bool IsIntegerDType(uint8_t code) {
  return code == 1 || code == 2 || code == 3 || code == 4 || code == 5 || code == 8;
}

// Converts n stored tokens to int32. Returns the index of the first value outside [0, INT32_MAX]
// (its value in *bad), or -1 when all fit.
template <typename T>
int64_t Decode(const uint8_t* src, int64_t n, int32_t* out, int64_t* bad) {
  for (int64_t i = 0; i < n; ++i) {
    const T v = Load<T>(src + i * sizeof(T));
    if constexpr (std::is_signed_v<T>) {
      if (v < 0) {
        *bad = static_cast<int64_t>(v);
        return i;
      }
    }
    if constexpr (sizeof(T) >= 4) {
      if (static_cast<uint64_t>(v) > static_cast<uint64_t>(kInt32Max)) {
        *bad = static_cast<int64_t>(v);
        return i;
      }
    }
    out[i] = static_cast<int32_t>(v);
  }
  return -1;
}

int64_t DecodeAny(MegatronDType dtype, const uint8_t* src, int64_t n, int32_t* out, int64_t* bad) {
  switch (dtype) {
    case MegatronDType::kUInt8: return Decode<uint8_t>(src, n, out, bad);
    case MegatronDType::kInt8: return Decode<int8_t>(src, n, out, bad);
    case MegatronDType::kInt16: return Decode<int16_t>(src, n, out, bad);
    case MegatronDType::kInt32: return Decode<int32_t>(src, n, out, bad);
    case MegatronDType::kInt64: return Decode<int64_t>(src, n, out, bad);
    case MegatronDType::kUInt16: return Decode<uint16_t>(src, n, out, bad);
    default: break;
  }
  return -1;  // float dtypes never get past Open()
}

// The largest token value a dtype can store (tokens are never negative).
int64_t DTypeMax(MegatronDType dtype) {
  switch (dtype) {
    case MegatronDType::kUInt8: return 255;
    case MegatronDType::kInt8: return 127;
    case MegatronDType::kInt16: return 32767;
    case MegatronDType::kUInt16: return 65535;
    default: return kInt32Max;
  }
}

}  // namespace

const char* MegatronDTypeName(MegatronDType dtype) {
  switch (dtype) {
    case MegatronDType::kUInt8: return "uint8";
    case MegatronDType::kInt8: return "int8";
    case MegatronDType::kInt16: return "int16";
    case MegatronDType::kInt32: return "int32";
    case MegatronDType::kInt64: return "int64";
    case MegatronDType::kFloat64: return "float64";
    case MegatronDType::kFloat32: return "float32";
    case MegatronDType::kUInt16: return "uint16";
  }
  return "unknown";
}

int MegatronDTypeSize(MegatronDType dtype) {
  switch (dtype) {
    case MegatronDType::kUInt8: case MegatronDType::kInt8: return 1;
    case MegatronDType::kInt16: case MegatronDType::kUInt16: return 2;
    case MegatronDType::kInt32: case MegatronDType::kFloat32: return 4;
    case MegatronDType::kInt64: case MegatronDType::kFloat64: return 8;
  }
  return 0;
}

MegatronDType MegatronOptimalDType(int64_t vocab_size) {
  return vocab_size < 65500 ? MegatronDType::kUInt16 : MegatronDType::kInt32;
}

// ---- reader ----

StatusOr<std::shared_ptr<MegatronDataset>> MegatronDataset::Open(const std::string& prefix) {
  std::shared_ptr<MegatronDataset> ds(new MegatronDataset());
  ds->prefix_ = prefix;
  const std::string idx_path = ds->idx_path(), bin_path = ds->bin_path();
  ASSIGN_OR_RETURN(ds->idx_, MappedFile::Open(idx_path));
  ASSIGN_OR_RETURN(ds->bin_, MappedFile::Open(bin_path));
  const uint8_t* p = ds->idx_->data();
  const uint64_t idx_size = ds->idx_->size(), bin_size = ds->bin_->size();

  if (idx_size < kHeaderBytes) {
    return DataLoss(idx_path + ": truncated header (" + std::to_string(idx_size) + " bytes, need " +
                    std::to_string(kHeaderBytes) + ")");
  }
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) {
    return DataLoss(idx_path + ": bad magic (not a Megatron MMIDIDX index)");
  }
  const uint64_t version = Load<uint64_t>(p + 9);
  if (version != kVersion) {
    return Unimplemented(idx_path + ": version " + std::to_string(version) + " (only version 1 is supported)");
  }
  const uint8_t code = p[17];
  if (code == static_cast<uint8_t>(MegatronDType::kFloat32) || code == static_cast<uint8_t>(MegatronDType::kFloat64)) {
    return Unimplemented(idx_path + ": dtype " + MegatronDTypeName(static_cast<MegatronDType>(code)) +
                         " (code " + std::to_string(code) + ") cannot hold token ids");
  }
  if (!IsIntegerDType(code)) {
    return DataLoss(idx_path + ": unknown dtype code " + std::to_string(code) + " at byte offset 17");
  }
  ds->dtype_ = static_cast<MegatronDType>(code);
  ds->item_size_ = MegatronDTypeSize(ds->dtype_);
  const uint64_t n = Load<uint64_t>(p + 18), d = Load<uint64_t>(p + 26);

  // Bound the counts by the file size before multiplying, so a corrupt count cannot overflow.
  const uint64_t room = idx_size - kHeaderBytes;
  if (n > room / 12 || d > room / 8 || n * 12 + d * 8 > room) {
    return DataLoss(idx_path + ": truncated: " + std::to_string(n) + " sequences and " + std::to_string(d) +
                    " document indices need " +
                    (n > room / 12 || d > room / 8 ? std::string("more than ") + std::to_string(idx_size)
                                                   : std::to_string(kHeaderBytes + n * 12 + d * 8)) +
                    " bytes, the file has " + std::to_string(idx_size));
  }
  const uint64_t expected = kHeaderBytes + n * 12 + d * 8;
  // Multimodal datasets append one int8 mode per sequence; anything else trailing is damage.
  if (idx_size != expected && idx_size != expected + n) {
    return DataLoss(idx_path + ": " + std::to_string(idx_size - expected) + " unexpected trailing bytes after " +
                    std::to_string(expected));
  }
  if (d < 1) return DataLoss(idx_path + ": document index count is 0 (doc_idx must start at 0 and end at N)");
  ds->seq_count_ = static_cast<int64_t>(n);
  ds->doc_count_ = static_cast<int64_t>(d);
  ds->sizes_ = p + kHeaderBytes;
  ds->pointers_ = ds->sizes_ + n * 4;
  ds->doc_idx_ = ds->pointers_ + n * 8;

  // Sequences: non-negative sizes, and each [pointer, pointer + size * item) inside .bin.
  const uint64_t sizes_off = kHeaderBytes, pointers_off = kHeaderBytes + n * 4;
  for (int64_t i = 0; i < ds->seq_count_; ++i) {
    const int64_t size = ds->size_at(i), ptr = ds->pointer_at(i);
    if (size < 0) {
      return DataLoss(idx_path + ": sizes[" + std::to_string(i) + "] = " + std::to_string(size) +
                      " is negative (byte offset " + std::to_string(sizes_off + 4 * i) + ")");
    }
    const uint64_t bytes = static_cast<uint64_t>(size) * ds->item_size_;
    if (ptr < 0 || static_cast<uint64_t>(ptr) > bin_size || bytes > bin_size - static_cast<uint64_t>(ptr)) {
      return DataLoss(idx_path + ": pointers[" + std::to_string(i) + "] = " + std::to_string(ptr) + " with sizes[" +
                      std::to_string(i) + "] = " + std::to_string(size) + " (byte offset " +
                      std::to_string(pointers_off + 8 * i) + ") reaches past the end of " + bin_path + " (" +
                      std::to_string(bin_size) + " bytes)");
    }
    ds->total_tokens_ += size;
  }

  // Documents: doc_idx starts at 0, never decreases, and ends at N.
  const uint64_t doc_off = kHeaderBytes + n * 12;
  if (ds->doc_idx_at(0) != 0) {
    return DataLoss(idx_path + ": doc_idx[0] = " + std::to_string(ds->doc_idx_at(0)) + " (byte offset " +
                    std::to_string(doc_off) + "), expected 0");
  }
  for (int64_t j = 1; j < ds->doc_count_; ++j) {
    const int64_t prev = ds->doc_idx_at(j - 1), cur = ds->doc_idx_at(j);
    if (cur < prev || cur > ds->seq_count_) {
      return DataLoss(idx_path + ": doc_idx[" + std::to_string(j) + "] = " + std::to_string(cur) +
                      " (byte offset " + std::to_string(doc_off + 8 * j) + ") is " +
                      (cur < prev ? "less than doc_idx[" + std::to_string(j - 1) + "] = " + std::to_string(prev)
                                  : "greater than the sequence count " + std::to_string(n)));
    }
  }
  if (ds->doc_idx_at(ds->doc_count_ - 1) != ds->seq_count_) {
    return DataLoss(idx_path + ": doc_idx[" + std::to_string(d - 1) + "] = " +
                    std::to_string(ds->doc_idx_at(ds->doc_count_ - 1)) + " (byte offset " +
                    std::to_string(doc_off + 8 * (d - 1)) + "), expected the sequence count " + std::to_string(n));
  }
  return ds;
}

int32_t MegatronDataset::size_at(int64_t seq) const { return Load<int32_t>(sizes_ + 4 * seq); }
int64_t MegatronDataset::pointer_at(int64_t seq) const { return Load<int64_t>(pointers_ + 8 * seq); }
int64_t MegatronDataset::doc_idx_at(int64_t d) const { return Load<int64_t>(doc_idx_ + 8 * d); }

int64_t MegatronDataset::sequence_length(int64_t seq) const {
  IC_CHECK(seq >= 0 && seq < seq_count_);
  return size_at(seq);
}

int64_t MegatronDataset::document_first_sequence(int64_t doc) const {
  IC_CHECK(doc >= 0 && doc <= documents());
  return doc_idx_at(doc);
}

// Documents usually hold one sequence (a handful with --split-sentences), so summing on demand
// is cheap and avoids an 8-byte-per-document table for corpora of billions of documents.
int64_t MegatronDataset::document_length(int64_t doc) const {
  IC_CHECK(doc >= 0 && doc < documents());
  int64_t len = 0;
  for (int64_t s = doc_idx_at(doc), e = doc_idx_at(doc + 1); s < e; ++s) len += size_at(s);
  return len;
}

Status MegatronDataset::CopyTokens(int64_t doc, int64_t begin, int64_t end, int32_t* out) const {
  RETURN_IF_ERROR(CheckRange(doc, begin, end));
  int64_t pos = 0;  // document position of the current sequence's first token
  for (int64_t s = doc_idx_at(doc), e = doc_idx_at(doc + 1); s < e && pos < end; ++s) {
    const int64_t size = size_at(s);
    const int64_t lo = std::max(begin, pos), hi = std::min(end, pos + size);
    if (lo < hi) {
      const uint64_t byte = static_cast<uint64_t>(pointer_at(s)) + static_cast<uint64_t>(lo - pos) * item_size_;
      int64_t bad = 0;
      const int64_t at = DecodeAny(dtype_, bin_->data() + byte, hi - lo, out + (lo - begin), &bad);
      if (at >= 0) {
        return DataLoss(bin_path() + ": token " + std::to_string(bad) + " at byte offset " +
                        std::to_string(byte + at * item_size_) + " (document " + std::to_string(doc) + ", position " +
                        std::to_string(lo + at) + ") is outside [0, " + std::to_string(kInt32Max) + "]");
      }
    }
    pos += size;
  }
  return Status::Ok();
}

// ---- writer ----

StatusOr<std::unique_ptr<MegatronDatasetWriter>> MegatronDatasetWriter::Create(const std::string& prefix,
                                                                                MegatronDType dtype) {
  if (!IsIntegerDType(static_cast<uint8_t>(dtype))) {
    return InvalidArgument(prefix + ".idx: cannot write token ids as dtype " + MegatronDTypeName(dtype) + " (code " +
                           std::to_string(static_cast<int>(dtype)) + ")");
  }
  std::unique_ptr<MegatronDatasetWriter> w(new MegatronDatasetWriter());
  w->prefix_ = prefix;
  w->dtype_ = dtype;
  w->item_size_ = MegatronDTypeSize(dtype);
  ASSIGN_OR_RETURN(w->bin_, AtomicFileWriter::Create(prefix + ".bin"));
  return w;
}

template <typename T>
Status MegatronDatasetWriter::AddSequenceImpl(const T* tokens, int64_t n) {
  if (finished_) return Internal(prefix_ + ".bin: AddSequence after Finish");
  if (n > kInt32Max) return InvalidArgument(prefix_ + ".bin: sequence of " + std::to_string(n) + " tokens exceeds the int32 size field");
  const int64_t max = DTypeMax(dtype_);
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * item_size_);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(tokens[i]);
    if (v < 0 || v > max) {
      return InvalidArgument(prefix_ + ".bin: token " + std::to_string(v) + " at position " + std::to_string(i) +
                             " of sequence " + std::to_string(sizes_.size()) + " does not fit " +
                             MegatronDTypeName(dtype_) + " token ids [0, " + std::to_string(max) + "]");
    }
    // Little-endian truncation to item_size_ bytes is exact for values in [0, max].
    std::memcpy(bytes.data() + i * item_size_, &v, item_size_);
  }
  RETURN_IF_ERROR(bin_->Write(bytes.data(), bytes.size()));
  sizes_.push_back(static_cast<int32_t>(n));
  pointers_.push_back(bin_bytes_);
  bin_bytes_ += static_cast<int64_t>(bytes.size());
  return Status::Ok();
}

Status MegatronDatasetWriter::AddSequence(const std::vector<int64_t>& tokens) {
  return AddSequenceImpl(tokens.data(), static_cast<int64_t>(tokens.size()));
}

Status MegatronDatasetWriter::AddSequence(const std::vector<int32_t>& tokens) {
  return AddSequenceImpl(tokens.data(), static_cast<int64_t>(tokens.size()));
}

Status MegatronDatasetWriter::EndDocument() {
  if (finished_) return Internal(prefix_ + ".idx: EndDocument after Finish");
  doc_idx_.push_back(static_cast<int64_t>(sizes_.size()));
  return Status::Ok();
}

Status MegatronDatasetWriter::Finish() {
  if (finished_) return Internal(prefix_ + ".idx: Finish called twice");
  if (doc_idx_.back() != static_cast<int64_t>(sizes_.size())) RETURN_IF_ERROR(EndDocument());
  finished_ = true;
  RETURN_IF_ERROR(bin_->Commit());

  const uint64_t n = sizes_.size(), d = doc_idx_.size();
  std::string idx;
  idx.reserve(kHeaderBytes + n * 12 + d * 8);
  auto put = [&idx](const void* p, size_t size) { idx.append(static_cast<const char*>(p), size); };
  put(kMagic, sizeof(kMagic));
  put(&kVersion, 8);
  const uint8_t code = static_cast<uint8_t>(dtype_);
  put(&code, 1);
  put(&n, 8);
  put(&d, 8);
  put(sizes_.data(), n * 4);
  put(pointers_.data(), n * 8);
  put(doc_idx_.data(), d * 8);
  return WriteFileAtomic(prefix_ + ".idx", idx);
}

Status WriteMegatronDataset(const std::string& prefix, MegatronDType dtype,
                            const std::vector<std::vector<int32_t>>& documents) {
  ASSIGN_OR_RETURN(auto writer, MegatronDatasetWriter::Create(prefix, dtype));
  for (const auto& doc : documents) {
    RETURN_IF_ERROR(writer->AddSequence(doc));
    RETURN_IF_ERROR(writer->EndDocument());
  }
  return writer->Finish();
}

}  // namespace indexcache
