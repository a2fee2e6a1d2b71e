// WeightInventory: every weight tensor a DSA model's checkpoint holds, derived from config.json
// alone (names as Hugging Face writes them, shapes, and whether an FP8 checkpoint stores the tensor
// as e4m3 with 128x128 block scales or keeps it in bf16/fp32). No safetensors are read.
//
// It answers "how many parameters" (`indexcache info` on a directory without weights) and "how
// many bytes does layer l occupy on the GPU" (`indexcache plan`): FP8 tensors stay FP8 there
// (1 byte per element plus one fp32 scale per block), the rest are bf16 (the router's
// e_score_correction_bias fp32). The MTP block (num_nextn_predict_layers) is not part of it: the
// runtime never loads it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace indexcache {

struct WeightTensor {
  std::string name;  // "model.layers.3.mlp.experts.17.up_proj.weight"; for experts only expert 0 is named
  int64_t rows = 0, cols = 1;  // cols = 1 for vectors
  int64_t copies = 1;          // routed experts: one entry stands for n_routed_experts copies
  bool fp8 = false;            // stored as e4m3 with `weight_scale_inv` blocks in an FP8 checkpoint
  bool fp32 = false;           // stored in fp32 (the router's correction bias)

  int64_t elements() const { return rows * cols * copies; }
  // Bytes on the device: FP8 elements plus fp32 block scales, or bf16 / fp32 elements.
  int64_t device_bytes(const QuantConfig& quant) const;
};

// Which part of the model a group of tensors belongs to.
struct WeightGroup {
  int layer = -1;  // -1: embedding, num_layers: final norm + lm_head
  std::vector<WeightTensor> tensors;
  int64_t parameters() const;
  int64_t indexer_parameters() const;  // tensors under `.self_attn.indexer.`
  int64_t device_bytes(const QuantConfig& quant) const;
};

struct WeightInventory {
  WeightGroup embedding;
  std::vector<WeightGroup> layers;  // one per decoder layer
  WeightGroup head;                 // model.norm + lm_head (absent lm_head when tied)
  int64_t parameters() const;
  int64_t indexer_parameters() const;
  int64_t device_bytes(const QuantConfig& quant) const;
};

// The tensors of `config`. A Shared layer carries no indexer tensors when the config lists
// `indexer_types` (GLM-5.2 checkpoints ship none there); otherwise every layer has an indexer.
// Errors (one line, naming config.json) when a size overflows 64 bits.
StatusOr<WeightInventory> InventoryFromConfig(const ModelConfig& config);

// Parameters of a tensor-size product, overflow-checked: a * b, or an error naming `what`.
StatusOr<int64_t> CheckedMul(int64_t a, int64_t b, const std::string& what);

}  // namespace indexcache
