#include "parallel/layer_costs.h"

#include <algorithm>

#include "parallel/layer_flops.h"
#include "parallel/weight_inventory.h"

namespace indexcache {

namespace {

constexpr double kMaxBytes = 4.0e18;  // well inside int64
constexpr double kLossKernelSms = 132;
// trainer/distill.h's kDistillTeacherChunkBytes (the planner does not link the trainer).
constexpr int64_t kDistillTeacherChunkBytesForPlan = int64_t{2} << 30;

StatusOr<int64_t> ToBytes(double bytes, const std::string& what) {
  if (!(bytes >= 0) || bytes > kMaxBytes) return InvalidArgument(what + ": size overflows 64 bits");
  return static_cast<int64_t>(bytes);
}

double MlpWidth(const ModelConfig& c) {
  const double moe = static_cast<double>(c.num_experts_per_tok + c.n_shared_experts) * c.moe_intermediate_size;
  return std::max(static_cast<double>(c.intermediate_size), moe);
}

double LargestFp8MatrixElements(const WeightInventory& inv) {
  double largest = 0;
  for (const WeightGroup& g : inv.layers) {
    for (const WeightTensor& t : g.tensors) {
      if (t.fp8) largest = std::max(largest, static_cast<double>(t.rows) * t.cols);
    }
  }
  return largest;
}

}  // namespace

const char* PlanModeName(PlanMode mode) {
  switch (mode) {
    case PlanMode::kTrain: return "train";
    case PlanMode::kEval: return "eval";
    case PlanMode::kSearch: return "search";
  }
  return "?";
}

StatusOr<PlanMode> ParsePlanMode(const std::string& name) {
  if (name == "train") return PlanMode::kTrain;
  if (name == "eval") return PlanMode::kEval;
  if (name == "search") return PlanMode::kSearch;
  return InvalidArgument("--mode: '" + name + "' (expected train, eval or search)");
}

StatusOr<ModelCosts> EstimateCosts(const ModelConfig& c, const IndexPattern& pattern, const CostOptions& o) {
  if (pattern.num_layers() != c.num_layers) {
    return InvalidArgument("--pattern: " + std::to_string(pattern.num_layers()) + " layers, the model has " +
                           std::to_string(c.num_layers));
  }
  if (o.seq_len < 1 || o.chunk < 1 || o.sequences_per_replica < 1) {
    return InvalidArgument("--seq-len, --chunk and --sequences must be positive");
  }
  ASSIGN_OR_RETURN(WeightInventory inv, InventoryFromConfig(c));
  const double t = static_cast<double>(o.seq_len), h = static_cast<double>(c.hidden_size);
  const double k = static_cast<double>(c.index_topk), d = static_cast<double>(c.latent_dim());
  const double chunk = static_cast<double>(std::min(o.chunk, o.seq_len));
  const bool train = o.mode == PlanMode::kTrain;
  const DeviceProfile& dev = o.device;
  const double rest_rate = NonIndexerFlopsPerSecond(dev, o.seq_len);
  const double indexer_rate = IndexerFlopsPerSecond(dev, o.seq_len);
  const double fp8_gemm_factor = dev.gemm_bf16_flops / dev.gemm_fp8_flops;

  ModelCosts costs;
  costs.num_layers = static_cast<int>(c.num_layers);
  const double stream = t * (2 * h + 4 * k);
  ASSIGN_OR_RETURN(costs.boundary_bytes, ToBytes(stream, "--seq-len"));

  // Per-stage overhead.
  const double keys = t * 2 * (d + c.index_head_dim);
  const double chunk_activations =
      chunk * 2 *
      (static_cast<double>(c.num_heads) * (c.qk_head_dim() + 2 * d + c.v_head_dim) + c.q_lora_rank + d +
       static_cast<double>(c.index_n_heads) * (c.index_head_dim + 1) + 3 * MlpWidth(c) + 4 * h);
  const double dequant_scratch = c.quant.fp8 ? 2 * 2 * LargestFp8MatrixElements(inv) : 0;
  // Train, while one Full layer's loss runs: f32 copies of its inputs, the student's queries and
  // their gradient (f32 [T, index heads x dim] each), a chunk of rebuilt teacher queries, and the
  // loss kernel's row workspace.
  const double student = train ? t * 4 * (h + c.q_lora_rank) +
                                     2 * t * 4 * static_cast<double>(c.index_n_heads) * c.index_head_dim +
                                     static_cast<double>(kDistillTeacherChunkBytesForPlan)
                               : 0;
  const double loss_rows = train ? 2 * kLossKernelSms * t * 4 + student : 0;
  ASSIGN_OR_RETURN(costs.stage_overhead_bytes,
                   ToBytes(2 * stream + keys + chunk_activations + dequant_scratch + loss_rows, "--seq-len"));

  // Embedding: a gather of T rows.
  ItemCost embedding;
  embedding.name = "embedding";
  embedding.layer = -1;
  embedding.weight_bytes = inv.embedding.device_bytes(c.quant);
  embedding.seconds = embedding.seconds_fp8_gemm = 2 * t * h * 2 / dev.copy_bytes_per_s;
  costs.items.push_back(embedding);

  for (int l = 0; l < c.num_layers; ++l) {
    ItemCost item;
    item.name = "layer " + std::to_string(l);
    item.layer = l;
    item.full = pattern.is_full(l);
    item.weight_bytes = inv.layers[l].device_bytes(c.quant);
    item.indexer_parameters = item.full ? inv.layers[l].indexer_parameters() : 0;
    const LayerFlops f = ForwardFlops(c, l, item.full, o.seq_len);
    // Routed experts run once per forward chunk of `chunk` tokens, at the measured MoE rate.
    const double moe = f.routed_experts > 0 ? f.routed_experts / MoeFlopsPerSecond(dev, static_cast<int64_t>(chunk)) : 0;
    const double rest = (f.gemm + f.sparse_attention) / rest_rate + moe;
    const double rest_fp8 = (f.gemm * fp8_gemm_factor + f.sparse_attention) / rest_rate + moe * fp8_gemm_factor;
    double extra = f.indexer / indexer_rate, extra_fp8 = extra;
    double workspace = 0;
    if (o.mode == PlanMode::kSearch) {
      workspace = static_cast<double>(o.sequences_per_replica) * stream;
    } else if (train) {
      // Kept per layer for the teachers: q_latent and the latents (bf16).
      workspace = t * 2 * (static_cast<double>(c.q_lora_rank) + d);
      const double recompute = TeacherQueryFlops(c, o.seq_len) / rest_rate;
      extra += recompute;
      extra_fp8 += recompute * fp8_gemm_factor;
      if (item.full) {
        // The indexer input (bf16), the top-k (int32), the student's keys (f32) and optimizer state.
        workspace += t * (2 * h + 4 * (k + c.index_head_dim)) + 16.0 * item.indexer_parameters;
        const int served = static_cast<int>(pattern.served_by(l).size());
        const double loss = DistillLossFlops(c, o.seq_len, served, o.dense_loss) /
                            DistillLossFlopsPerSecond(dev, o.dense_loss, served);
        const double grads = 2 * IndexerProjectionFlops(c, o.seq_len) / rest_rate;
        extra += loss + grads;
        extra_fp8 += loss + grads;
      }
    }
    ASSIGN_OR_RETURN(item.workspace_bytes, ToBytes(workspace, "--seq-len x --sequences"));
    const double weight_read = static_cast<double>(item.weight_bytes) / dev.copy_bytes_per_s;
    item.seconds = std::max(rest + extra, weight_read);
    item.seconds_fp8_gemm = std::max(rest_fp8 + extra_fp8, weight_read);
    costs.items.push_back(item);
  }

  if (!train) {  // the trainer computes no logits
    ItemCost head;
    head.name = "head";
    head.layer = static_cast<int>(c.num_layers);
    head.weight_bytes = inv.head.device_bytes(c.quant);
    if (c.tie_word_embeddings) head.weight_bytes += embedding.weight_bytes;  // the last stage needs its own copy
    ASSIGN_OR_RETURN(head.workspace_bytes, ToBytes(chunk * c.vocab_size * 4, "--chunk"));
    head.seconds = LmHeadFlops(c, o.seq_len) / rest_rate;
    head.seconds_fp8_gemm = head.seconds * fp8_gemm_factor;
    costs.items.push_back(head);
  }
  return costs;
}

}  // namespace indexcache
