// Megatron-LM indexed datasets (the MMIDIDX format of megatron/core/datasets/indexed_dataset.py):
// a `<prefix>.bin` of raw little-endian tokens and a `<prefix>.idx` describing them.
//
// .idx layout, little-endian, with no padding (so the arrays are generally unaligned):
//   offset 0   9 bytes   magic "MMIDIDX\x00\x00"
//          9   u64       version (1)
//         17   u8        dtype code (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64,
//                        7 float32, 8 uint16)
//         18   u64       sequence count N
//         26   u64       document index count D (documents = D - 1)
//         34   i32[N]    sizes: tokens in each sequence
//              i64[N]    pointers: byte offset of each sequence in .bin
//              i64[D]    doc_idx: the sequence where each document starts; doc_idx[0] = 0 and
//                        doc_idx[D-1] = N
//   Multimodal datasets append i8[N] sequence modes; those N bytes are accepted and ignored.
//
// A document is the concatenation of its sequences (one sequence per document unless the data was
// preprocessed with --split-sentences). Opening validates the whole index against both file sizes
// in O(N + D) without touching the token data; token values are checked as they are read, since a
// full scan of a multi-terabyte .bin at start-up would cost more than the training step it feeds.
// Float dtypes cannot hold token ids and are refused at open.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "core/status.h"
#include "data/token_source.h"

namespace indexcache {

enum class MegatronDType : uint8_t {
  kUInt8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUInt16 = 8,
};

// "uint16", ...; "unknown" for other codes.
const char* MegatronDTypeName(MegatronDType dtype);
// Bytes per element; 0 for an unknown code.
int MegatronDTypeSize(MegatronDType dtype);
// The smallest unsigned dtype Megatron would pick for a vocabulary (uint16 below 65500, else int32),
// matching DType.optimal_dtype in Megatron-LM.
MegatronDType MegatronOptimalDType(int64_t vocab_size);

class MegatronDataset : public TokenSource {
 public:
  // Opens `<prefix>.idx` and `<prefix>.bin`. Every error is one line naming the file at fault.
  static StatusOr<std::shared_ptr<MegatronDataset>> Open(const std::string& prefix);

  std::string name() const override { return prefix_; }
  int64_t documents() const override { return doc_count_ - 1; }
  int64_t document_length(int64_t doc) const override;
  int64_t total_tokens() const override { return total_tokens_; }
  Status CopyTokens(int64_t doc, int64_t begin, int64_t end, int32_t* out) const override;

  MegatronDType dtype() const { return dtype_; }
  int64_t sequences() const { return seq_count_; }
  // 0 <= seq < sequences() (checked).
  int64_t sequence_length(int64_t seq) const;
  // The first sequence of document `doc`; doc == documents() gives sequences().
  int64_t document_first_sequence(int64_t doc) const;
  std::string idx_path() const { return prefix_ + ".idx"; }
  std::string bin_path() const { return prefix_ + ".bin"; }

 private:
  MegatronDataset() = default;
  int32_t size_at(int64_t seq) const;
  int64_t pointer_at(int64_t seq) const;
  int64_t doc_idx_at(int64_t d) const;

  std::string prefix_;
  std::shared_ptr<MappedFile> idx_, bin_;
  MegatronDType dtype_ = MegatronDType::kUInt16;
  int item_size_ = 2;
  int64_t seq_count_ = 0, doc_count_ = 0, total_tokens_ = 0;
  const uint8_t* sizes_ = nullptr;     // into idx_, i32[N]
  const uint8_t* pointers_ = nullptr;  // into idx_, i64[N]
  const uint8_t* doc_idx_ = nullptr;   // into idx_, i64[D]
};

// Writes a Megatron indexed dataset the way Megatron's IndexedDatasetBuilder does: sequences are
// appended to `<prefix>.bin` in order, and the index is written when Finish() is called.
// Both files are written atomically (temp file + rename); .bin is committed before .idx, so a
// crash between the two leaves an index that no longer matches and that Open() rejects, never
// silently wrong data.
class MegatronDatasetWriter {
 public:
  // `dtype` must be an integer dtype.
  static StatusOr<std::unique_ptr<MegatronDatasetWriter>> Create(const std::string& prefix, MegatronDType dtype);

  // Appends one sequence to the current document. Every token must lie in [0, INT32_MAX] and fit
  // the dtype; otherwise an error naming the .bin, sequence and position (nothing is written).
  Status AddSequence(const std::vector<int64_t>& tokens);
  Status AddSequence(const std::vector<int32_t>& tokens);
  // Closes the current document (an empty one if no sequence was added since the last call).
  Status EndDocument();
  // Ends a pending document, commits .bin and then .idx. The writer is unusable afterwards.
  Status Finish();

  const std::string& prefix() const { return prefix_; }

 private:
  MegatronDatasetWriter() = default;
  template <typename T>
  Status AddSequenceImpl(const T* tokens, int64_t n);

  std::string prefix_;
  MegatronDType dtype_ = MegatronDType::kUInt16;
  int item_size_ = 2;
  std::unique_ptr<AtomicFileWriter> bin_;
  std::vector<int32_t> sizes_;
  std::vector<int64_t> pointers_;
  std::vector<int64_t> doc_idx_{0};
  int64_t bin_bytes_ = 0;
  bool finished_ = false;
};

// One sequence per document: the common layout of Megatron's preprocess_data.py output.
Status WriteMegatronDataset(const std::string& prefix, MegatronDType dtype,
                            const std::vector<std::vector<int32_t>>& documents);

}  // namespace indexcache
