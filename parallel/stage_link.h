// StageLink: moves backend tensors between neighbouring pipeline stages without the host.
//
// The default pipeline transfer (parallel/stage_forward.h) goes through host MPI: the stream comes
// down to the host as f32, crosses, and goes up again, 3.8 GB per boundary and micro-batch for
// V3.2 at 128K. Between GPUs a link sends the device tensors as they are (bf16 stream, int32
// indices) over NCCL: NVLink within a node, the network across nodes. The tensors are the
// backend's activation dtype, so the transfer is lossless.
#pragma once

#include "core/tensor.h"

namespace indexcache {

class StageLink {
 public:
  virtual ~StageLink() = default;
  // Both return once the transfer is complete (the host may then reuse or read the buffer), so a
  // stage's waiting time is measured where it happens. `stage` is the peer's rank in the
  // pipeline. Recv writes into `t`, whose dtype and shape the receiver knows (T from the tokens).
  virtual void Send(const Tensor& t, int stage) = 0;
  virtual void Recv(Tensor* t, int stage) = 0;
};

}  // namespace indexcache
