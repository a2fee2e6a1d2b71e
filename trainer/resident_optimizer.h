// The trainer's AdamW step where the weights live. On the GPU the fp32 masters, AdamW's m and v
// and the gradients stay in device memory for the whole run: the step is a few kernels (per-tensor
// sums of squares for the global norm, one scale for clipping, the fused AdamW update), and only
// the per-tensor sums (8 bytes each) come to the host. Before this, every step downloaded the
// gradients and uploaded the masters: 8 bytes per parameter each way, 7 GB per step for
// DeepSeek-V3.2's 61 indexers of ~14M parameters.
//
// optim/adamw.h's host AdamW stays the reference and the checkpoint format: the resident state
// starts as a copy of it (fresh or resumed) and is copied back into it (Download) before a
// checkpoint is written. The element arithmetic is the same (optim/adamw_update.h) and the norm
// is summed per tensor in the same order, so on the CPU backend the two paths agree bitwise
// (trainer_test checks it); on CUDA the norm's reduction order differs, by rounding only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "model/backend.h"
#include "optim/adamw.h"

namespace indexcache {

// One trainable tensor inside the flat buffers.
struct ResidentSlot {
  std::string name;
  int64_t offset = 0;  // in elements
  Shape shape;
  int64_t size() const { return NumElements(shape); }
};

class ResidentAdamW {
 public:
  // Places the masters (`masters[i]` holds slot i's values) and `host`'s m, v and step on `be`.
  // `host` has one parameter per slot, in slot order, of the same sizes.
  static StatusOr<ResidentAdamW> Create(Backend& be, std::vector<ResidentSlot> slots,
                                        const std::vector<const float*>& masters, const AdamW& host);

  // The flat fp32 weights [N] on the backend; slot i is params().Sub(slots()[i].offset, shape).
  const Tensor& params() const { return params_; }
  const std::vector<ResidentSlot>& slots() const { return slots_; }
  int64_t step() const { return step_; }

  // sum(g^2) of each slot's part of the flat gradient `grads` [N], on the host, in slot order.
  std::vector<double> SumsOfSquares(const Tensor& grads) const;

  // One AdamW step with learning rate `lr` over every slot (increments step() first, as AdamW).
  void Step(const Tensor& grads, double lr);

  // Copies the weights into `masters` (slot order) and m, v and the step into `host`.
  Status Download(const std::vector<float*>& masters, AdamW* host) const;

 private:
  ResidentAdamW(Backend& be) : be_(&be) {}
  Backend* be_;
  std::vector<ResidentSlot> slots_;
  std::vector<double> weight_decay_;
  AdamWOptions options_;
  Tensor params_, exp_avg_, exp_avg_sq_;  // f32 [N] each
  int64_t step_ = 0;
};

}  // namespace indexcache
