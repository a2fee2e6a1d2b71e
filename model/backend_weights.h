// A model's weights placed on a backend: the same structure as ModelWeights, as backend tensors
// (CPU: fp32 views of the host matrices; CUDA: bf16 device copies, router and indexer head
// weights in fp32, and an FP8 checkpoint's WeightMatrix tensors as FP8 + block scales).
#pragma once

#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "model/backend.h"
#include "model/weights.h"

namespace indexcache {

struct BackendIndexer {
  Tensor wq_b, wk, k_norm_weight, k_norm_bias;
  Tensor weights_proj;  // f32
};

struct BackendMoe {
  Tensor router;      // f32 [E, hidden]
  Tensor score_bias;  // f32 [E]
  std::vector<BackendMlp> experts;
  bool has_shared = false;
  BackendMlp shared;
};

struct BackendLayer {
  Tensor input_norm, post_attention_norm, q_a_norm, kv_a_norm;
  PlacedWeight q_a, q_b, kv_a, kv_b, o;
  bool has_indexer = false;
  BackendIndexer indexer;
  bool is_moe = false;
  BackendMlp mlp;
  BackendMoe moe;
};

struct BackendWeights {
  Tensor embed, final_norm;
  PlacedWeight lm_head;
  std::vector<BackendLayer> layers;
};

// Where the placed weights' bytes are, by dtype (FP8 counts its block scales), plus the backend's
// dequantisation scratch: what `indexcache` reports after loading onto a GPU.
struct ResidentWeightBytes {
  int64_t fp8 = 0, bf16 = 0, f32 = 0;
  int64_t fp8_scratch = 0;
  int64_t total() const { return fp8 + bf16 + f32 + fp8_scratch; }
};

// `host` must outlive the result (the CPU backend borrows its memory). Each WeightMatrix that
// holds an FP8 source goes through Backend::WeightFp8, one tensor at a time; its errors name the
// tensor.
StatusOr<BackendWeights> PlaceWeights(const ModelWeights& host, Backend* backend);
// Re-places one layer's indexer (after the trainer updated the host copy).
void PlaceIndexer(const IndexerWeights& host, Backend* backend, BackendIndexer* out);
// Bytes of every placed tensor by dtype; fp8_scratch from backend.Fp8ScratchBytes().
ResidentWeightBytes CountResidentBytes(const BackendWeights& weights, const Backend& backend);
// "1.23 GB fp8 + 0.45 GB bf16 + 0.01 GB f32, dequantisation scratch 0.12 GB" (decimal GB).
std::string DescribeResidentBytes(const ResidentWeightBytes& bytes);

}  // namespace indexcache
