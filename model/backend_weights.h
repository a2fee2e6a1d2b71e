// A model's weights placed on a backend: the same structure as ModelWeights, as backend tensors
// (CPU: fp32 views of the host matrices; CUDA: bf16 device copies, router and indexer head
// weights in fp32).
#pragma once

#include <vector>

#include "core/tensor.h"
#include "model/backend.h"
#include "model/weights.h"

namespace indexcache {

struct BackendMlp {
  Tensor gate, up, down;
};

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
  Tensor input_norm, post_attention_norm, q_a, q_a_norm, q_b, kv_a, kv_a_norm, kv_b, o;
  bool has_indexer = false;
  BackendIndexer indexer;
  bool is_moe = false;
  BackendMlp mlp;
  BackendMoe moe;
};

struct BackendWeights {
  Tensor embed, final_norm, lm_head;
  std::vector<BackendLayer> layers;
};

// `host` must outlive the result (the CPU backend borrows its memory).
BackendWeights PlaceWeights(const ModelWeights& host, Backend* backend);
// Re-places one layer's indexer (after the trainer updated the host copy).
void PlaceIndexer(const IndexerWeights& host, Backend* backend, BackendIndexer* out);

}  // namespace indexcache
