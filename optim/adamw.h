// AdamW over named fp32 host parameter buffers, with torch.optim.AdamW's semantics (decoupled
// weight decay, bias correction; amsgrad off), per-parameter weight decay, and its state (m, v,
// step) exported and imported as NamedTensors so that a checkpoint restores it bitwise.
//
//   AdamWOptions options;
//   options.weight_decay = 0.1;
//   options.no_decay = IsNormOrBias;
//   ASSIGN_OR_RETURN(AdamW opt, AdamW::Create(params, options));
//   for (int64_t step = 0; ...; ++step) {
//     ... gradients into grads (one FloatSpan per parameter, in order) ...
//     const double norm = ClipGradNorm(grads, 1.0);      // optim/clip.h
//     if (!std::isfinite(norm)) continue;                // skip the step
//     opt.Step(grads, schedule.LearningRate(step));      // optim/schedule.h
//   }
//
// The element arithmetic lives in optim/adamw_update.h, shared with the fused CUDA kernel.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "core/status.h"
#include "core/tensor.h"
#include "optim/adamw_update.h"
#include "optim/span.h"

namespace indexcache {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // torch.optim.AdamW's default
  // Parameters whose name this accepts get weight decay 0 (a second parameter group); null: all
  // parameters decay.
  std::function<bool(const std::string&)> no_decay;

  // betas in [0, 1), eps > 0, weight_decay >= 0, all finite.
  Status Validate() const;
};

// The usual no-decay group: biases and normalisation weights ("....bias", or a name with a
// component containing "norm", e.g. "model.layers.3.self_attn.indexer.k_norm.weight").
bool IsNormOrBias(const std::string& name);

// Suffixes of the exported state tensors: "<param>.exp_avg", "<param>.exp_avg_sq" (PyTorch's names).
constexpr const char* kExpAvgSuffix = ".exp_avg";
constexpr const char* kExpAvgSqSuffix = ".exp_avg_sq";
// Safetensors metadata key holding the step in files written by SaveAdamWState.
constexpr const char* kAdamWStepKey = "adamw.step";

// The optimiser's state: the number of steps taken and, per parameter, fp32 m and v of its shape.
struct AdamWState {
  int64_t step = 0;
  NamedTensors tensors;  // "<param>.exp_avg", "<param>.exp_avg_sq", in parameter order
};

class AdamW {
 public:
  // params: unique non-empty names, fp32 contiguous host tensors. The optimiser shares their
  // storage and updates them in place. m and v start at zero, step at 0.
  static StatusOr<AdamW> Create(NamedTensors params, AdamWOptions options = {});

  // One optimiser step with learning rate `lr` (>= 0, finite): grads[i] is the gradient of
  // params()[i], of the same number of elements. Increments step() first, so the first call uses
  // bias corrections for t = 1. Deterministic: the same inputs give bitwise the same outputs.
  void Step(const std::vector<FloatSpan>& grads, double lr);

  int64_t step() const { return step_; }
  const AdamWOptions& options() const { return options_; }
  size_t num_params() const { return params_.size(); }
  const NamedTensors& params() const { return params_; }
  // The weight decay of parameter i (options().weight_decay, or 0 in the no-decay group).
  double weight_decay(size_t i) const { return weight_decay_[i]; }
  // m and v of parameter i (host fp32, params()[i]'s size).
  const std::vector<float>& exp_avg(size_t i) const { return m_[i]; }
  const std::vector<float>& exp_avg_sq(size_t i) const { return v_[i]; }

  // Copies of m and v and the step.
  AdamWState ExportState() const;
  // Replaces m, v and the step with copies of `state`'s. Every parameter needs both tensors,
  // fp32 with its shape; a "<x>.exp_avg"/"<x>.exp_avg_sq" tensor for no parameter is an error,
  // tensors with other names are ignored. On error nothing changes.
  Status ImportState(const AdamWState& state);

 private:
  AdamW() = default;
  AdamWOptions options_;
  NamedTensors params_;
  std::vector<double> weight_decay_;
  std::vector<std::vector<float>> m_, v_;
  int64_t step_ = 0;
};

// The state as one safetensors file: the tensors of ExportState, the step in metadata
// kAdamWStepKey. Written atomically.
Status SaveAdamWState(const AdamW& opt, const std::string& path);
// Reads a file written by SaveAdamWState into `opt` (ImportState's checks; errors name the file).
// `tensor_filter`, when given, keeps only the tensors it accepts (a pipeline stage reads the
// state of its own parameters from a file holding every stage's).
Status LoadAdamWState(const std::string& path, AdamW* opt,
                      const std::function<bool(const std::string& tensor)>& tensor_filter = nullptr);

}  // namespace indexcache
