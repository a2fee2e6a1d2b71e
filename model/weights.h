// ModelWeights: a DSA checkpoint's tensors, validated against the config and held in fp32.
//
// Any float dtype loads (F32, BF16, F16); FP8 e4m3 weights are dequantised with their
// `<name>_scale_inv` block scales (weight = fp8 * scale over blocks of quant.block_rows x
// quant.block_cols, edge blocks partial). Experts load from per-expert tensors
// (`mlp.experts.E.{gate,up,down}_proj.weight`, as released) or from transformers' fused
// `mlp.experts.gate_up_proj` [E, 2I, H] and `mlp.experts.down_proj` [E, H, I].
// Indexer weights load only for layers the pattern makes Full: Shared layers may have none.
#pragma once

#include <string>
#include <vector>

#include <Eigen/Core>

#include "core/safetensors.h"
#include "core/status.h"
#include "model/config.h"

namespace indexcache {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXf;

struct MlpWeights {
  Matrix gate, up;  // [I, hidden]
  Matrix down;      // [hidden, I]
};

struct IndexerWeights {
  Matrix wq_b;          // [index_n_heads * index_head_dim, q_lora_rank]
  Matrix wk;            // [index_head_dim, hidden]
  Vector k_norm_weight; // [index_head_dim]
  Vector k_norm_bias;   // [index_head_dim]
  Matrix weights_proj;  // [index_n_heads, hidden]
};

struct MoeWeights {
  Matrix router;                    // [E, hidden]   mlp.gate.weight
  Vector score_bias;                // [E]           mlp.gate.e_score_correction_bias
  std::vector<MlpWeights> experts;  // E of [moe_intermediate, hidden] / [hidden, moe_intermediate]
  bool has_shared = false;
  MlpWeights shared;                // intermediate = moe_intermediate * n_shared_experts
};

struct LayerWeights {
  Vector input_norm, post_attention_norm;  // [hidden]
  Matrix q_a;         // [q_lora_rank, hidden]
  Vector q_a_norm;    // [q_lora_rank]
  Matrix q_b;         // [heads * (nope + rope), q_lora_rank]
  Matrix kv_a;        // [kv_lora_rank + rope, hidden]
  Vector kv_a_norm;   // [kv_lora_rank]
  Matrix kv_b;        // [heads * (nope + v), kv_lora_rank]
  Matrix o;           // [hidden, heads * v]
  bool has_indexer = false;
  IndexerWeights indexer;
  bool is_moe = false;
  MlpWeights mlp;     // dense layers
  MoeWeights moe;     // MoE layers
  // false for a layer outside the loaded range (a pipeline stage loads only its own layers): its
  // tensors are empty, but has_indexer still says whether the checkpoint has indexer weights.
  bool loaded = true;
};

// The layers a rank holds: [begin, end). A pipeline stage's range; the whole model by default.
// The first stage (begin == 0) also holds the embedding, the last (end == num_layers) the final
// norm and the LM head.
struct LayerRange {
  int begin = 0;
  int end = -1;  // -1: through the last layer
};

struct ModelWeights {
  Matrix embed;       // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Vector final_norm;  // [hidden]
  Matrix lm_head;     // [vocab, hidden] (a copy of embed when tied)
  LayerRange range;   // the layers loaded (resolved: end >= 0); embed / head empty where not held
  bool has_embedding() const { return range.begin == 0; }
  bool has_head(int64_t num_layers) const { return range.end == num_layers; }
  std::vector<std::string> source_dtypes;  // distinct dtypes seen in the checkpoint, for `info`
};

// Loads and checks every tensor of the layers in `range` (plus the embedding on the first layer,
// the final norm and LM head on the last); `indexer_layers[l]` says whether layer l needs indexer
// weights. Tensors of other layers are not read (only the shard headers are).
StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const SafetensorsCheckpoint& ckpt,
                                        const std::vector<bool>& indexer_layers, LayerRange range = {});
// `range` with end resolved, checked against the model's layer count (errors name the range).
StatusOr<LayerRange> ResolveLayerRange(LayerRange range, int64_t num_layers);

// One tensor as a float matrix [rows, cols] (or vector when cols == 0), dequantising FP8; errors
// name the shard file and the tensor. Exposed for export and tests.
StatusOr<Matrix> LoadMatrix(const SafetensorsCheckpoint& ckpt, const std::string& name, int64_t rows, int64_t cols,
                            const QuantConfig& quant);
StatusOr<Vector> LoadVector(const SafetensorsCheckpoint& ckpt, const std::string& name, int64_t size);

}  // namespace indexcache
