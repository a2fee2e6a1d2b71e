// ModelWeights: a DSA checkpoint's tensors, validated against the config and held in fp32.
//
// Any float dtype loads (F32, BF16, F16); FP8 e4m3 weights are dequantised with their
// `<name>_scale_inv` block scales (weight = fp8 * scale over blocks of quant.block_rows x
// quant.block_cols, edge blocks partial; kernels/fp8_dequant.h). A backend that keeps FP8
// weights resident (CUDA) loads with Fp8Weights::kKeep instead: the matrices the forward
// multiplies as they are (WeightMatrix: the MLA projections, o_proj, every MLP and expert, the LM
// head) then stay in their checkpoint form, zero-copy views of the shard mapping, and no fp32 copy
// of them is ever made; PlaceWeights uploads them tensor by tensor.
// Experts load from per-expert tensors (`mlp.experts.E.{gate,up,down}_proj.weight`, as released)
// or from transformers' fused `mlp.experts.gate_up_proj` [E, 2I, H] and `mlp.experts.down_proj`
// [E, H, I] (not FP8).
// Indexer weights load only for layers the pattern makes Full: Shared layers may have none.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "core/safetensors.h"
#include "core/status.h"
#include "model/config.h"

namespace indexcache {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXf;

// A checkpoint's FP8 e4m3 matrix as stored: the e4m3 bytes (a zero-copy view of the shard
// mapping) and the block scales (an fp32 copy: they are 1/4096 of the bytes, and the mapping may
// misalign them for float loads). rows/cols/blocks outlive ReleaseFp8Sources, which drops the two
// tensors once the backend has its own copy.
struct Fp8Source {
  std::string name;   // the checkpoint tensor, for errors
  Tensor data;        // F8_E4M3 [rows, cols]
  Tensor scale_inv;   // F32 [ceil(rows / block_rows), ceil(cols / block_cols)]
  int64_t rows = 0, cols = 0, block_rows = 0, block_cols = 0;
};

// A weight matrix the forward multiplies as it is (Linear, the MLA absorptions): the fp32 Matrix
// it derives from, or, loaded with Fp8Weights::kKeep from an FP8 checkpoint, an empty Matrix
// with `fp8` set. Anything assigned to it as a matrix clears `fp8`, so the two never disagree.
// (A subclass rather than a new field type so that the code reading host weights -- the CPU
// backend, tests, the model writer -- reads it as the Matrix it always was.)
class WeightMatrix : public Matrix {
 public:
  WeightMatrix() = default;
  WeightMatrix(Matrix&& m) : Matrix(std::move(m)) {}  // NOLINT: implicit, like the Matrix it replaces
  template <typename Other>
  WeightMatrix(const Eigen::MatrixBase<Other>& m) : Matrix(m) {}  // NOLINT
  WeightMatrix& operator=(Matrix&& m) {
    Matrix::operator=(std::move(m));
    fp8.reset();
    return *this;
  }
  template <typename Other>
  WeightMatrix& operator=(const Eigen::MatrixBase<Other>& m) {
    Matrix::operator=(m);
    fp8.reset();
    return *this;
  }
  static WeightMatrix FromFp8(Fp8Source source) {
    WeightMatrix w;
    w.fp8 = std::move(source);
    return w;
  }

  // The weight's shape and parameter count, whichever form it is in.
  int64_t weight_rows() const { return fp8 ? fp8->rows : rows(); }
  int64_t weight_cols() const { return fp8 ? fp8->cols : cols(); }
  int64_t num_params() const { return weight_rows() * weight_cols(); }
  bool has_weight() const { return num_params() > 0; }

  std::optional<Fp8Source> fp8;
};

struct MlpWeights {
  WeightMatrix gate, up;  // [I, hidden]
  WeightMatrix down;      // [hidden, I]
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
  WeightMatrix q_a;   // [q_lora_rank, hidden]
  Vector q_a_norm;    // [q_lora_rank]
  WeightMatrix q_b;   // [heads * (nope + rope), q_lora_rank]
  WeightMatrix kv_a;  // [kv_lora_rank + rope, hidden]
  Vector kv_a_norm;   // [kv_lora_rank]
  WeightMatrix kv_b;  // [heads * (nope + v), kv_lora_rank]
  WeightMatrix o;     // [hidden, heads * v]
  bool has_indexer = false;
  // Always fp32 on the host, also under Fp8Weights::kKeep: the indexer is what the trainer
  // updates (its fp32 masters start from here, DsaModel::SetIndexer re-places it) and export
  // writes it; it is 0.13 % of DeepSeek-V3.2's parameters.
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
  Matrix embed;          // [vocab, hidden] (a row gather, never FP8-resident)
  std::vector<LayerWeights> layers;
  Vector final_norm;     // [hidden]
  WeightMatrix lm_head;  // [vocab, hidden] (a copy of embed when tied)
  LayerRange range;   // the layers loaded (resolved: end >= 0); embed / head empty where not held
  bool has_embedding() const { return range.begin == 0; }
  bool has_head(int64_t num_layers) const { return range.end == num_layers; }
  std::vector<std::string> source_dtypes;  // distinct dtypes seen in the checkpoint, for `info`
};

// What LoadModelWeights does with an FP8 e4m3 WeightMatrix.
enum class Fp8Weights {
  kDequantize,  // fp32 on the host (the CPU backend, export, tests)
  kKeep,        // WeightMatrix::fp8 views, for a backend that keeps FP8 resident (Backend::KeepsFp8Weights)
};

// Loads and checks every tensor of the layers in `range` (plus the embedding on the first layer,
// the final norm and LM head on the last); `indexer_layers[l]` says whether layer l needs indexer
// weights. Tensors of other layers are not read (only the shard headers are). Under kKeep an FP8
// matrix's bytes are not touched here at all (its scales are checked and copied).
StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const SafetensorsCheckpoint& ckpt,
                                        const std::vector<bool>& indexer_layers, LayerRange range = {},
                                        Fp8Weights fp8 = Fp8Weights::kDequantize);
// Drops every WeightMatrix's FP8 views (shapes stay), once a backend holds its own copies: the
// shard mappings can then go.
void ReleaseFp8Sources(ModelWeights* weights);
// `range` with end resolved, checked against the model's layer count (errors name the range).
StatusOr<LayerRange> ResolveLayerRange(LayerRange range, int64_t num_layers);

// One tensor as a float matrix [rows, cols] (or vector when cols == 0), dequantising FP8; errors
// name the shard file and the tensor. Exposed for export and tests.
StatusOr<Matrix> LoadMatrix(const SafetensorsCheckpoint& ckpt, const std::string& name, int64_t rows, int64_t cols,
                            const QuantConfig& quant);
// The same, except that under kKeep an F8_E4M3 tensor comes back as its Fp8Source.
StatusOr<WeightMatrix> LoadWeightMatrix(const SafetensorsCheckpoint& ckpt, const std::string& name, int64_t rows,
                                        int64_t cols, const QuantConfig& quant, Fp8Weights fp8);
StatusOr<Vector> LoadVector(const SafetensorsCheckpoint& ckpt, const std::string& name, int64_t size);

}  // namespace indexcache
