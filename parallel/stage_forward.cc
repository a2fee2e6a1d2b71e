#include "parallel/stage_forward.h"

#include <chrono>

#include "parallel/tensor_messages.h"

namespace indexcache {

namespace {

constexpr int kActivationTag = 11;

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

StatusOr<StageForward> ForwardStage(const DsaModel& model, const StageContext& ctx, const std::vector<int32_t>& tokens,
                                    ForwardOptions opts) {
  const ModelConfig& c = model.config();
  const int n = static_cast<int>(c.num_layers);
  if (opts.end_layer != -1) return InvalidArgument("ForwardStage runs to the last layer (end_layer must be -1)");
  if (!ctx.split) {
    StageForward out;
    out.ran = true;
    ASSIGN_OR_RETURN(out.result, model.Forward(tokens, opts));
    return out;
  }
  const LayerRange r = ctx.layers(n);
  StageForward out;
  if (opts.start_layer >= r.end) return out;
  const std::string where = "pipeline stage " + std::to_string(ctx.stage);
  const int64_t T = static_cast<int64_t>(tokens.size());
  auto t0 = Clock::now();
  Backend& be = model.backend();
  if (opts.start_layer < r.begin) {  // the forward began on an earlier stage
    if (ctx.link) {
      Tensor hidden = be.Alloc(be.activation_dtype(), {T, c.hidden_size});
      Tensor topk = be.Alloc(DType::kI32, {T, c.index_topk});
      ctx.link->Recv(&hidden, ctx.stage - 1);
      ctx.link->Recv(&topk, ctx.stage - 1);
      opts.hidden_in = std::move(hidden);
      opts.initial_topk = topk;
      out.topk_in = std::move(topk);
    } else {
      ASSIGN_OR_RETURN(Tensor hidden, RecvTensor(*ctx.pipeline, ctx.stage - 1, kActivationTag, T * c.hidden_size,
                                                 where + ": stream from stage " + std::to_string(ctx.stage - 1)));
      ASSIGN_OR_RETURN(Tensor topk, RecvTensor(*ctx.pipeline, ctx.stage - 1, kActivationTag, T * c.index_topk,
                                               where + ": indices from stage " + std::to_string(ctx.stage - 1)));
      opts.hidden_in = std::move(hidden);
      opts.initial_topk = topk;
      out.topk_in = std::move(topk);
    }
    opts.start_layer = r.begin;
  }
  if (ctx.times) ctx.times->wait_s += Since(t0);
  t0 = Clock::now();
  opts.end_layer = r.end;
  if (ctx.link) opts.outputs_on_device = true;
  ASSIGN_OR_RETURN(out.result, model.Forward(tokens, opts));
  out.ran = true;
  if (ctx.link) be.Synchronize();  // the stage's compute ends here, not inside the send
  if (ctx.times) ctx.times->compute_s += Since(t0);
  if (!ctx.last_stage()) {
    t0 = Clock::now();
    const Tensor& h = out.result.hidden_out;
    if (ctx.link) {
      if (out.result.topk.shape() != Shape{T, c.index_topk}) {
        return Internal(where + ": no [T, index_topk] indices buffer to send on");
      }
      ctx.link->Send(h, ctx.stage + 1);
      ctx.link->Send(out.result.topk, ctx.stage + 1);
    } else {
      SendTensor(*ctx.pipeline, h.dtype() == DType::kF32 ? h : h.ToFloat32(), ctx.stage + 1, kActivationTag);
      SendTensor(*ctx.pipeline, out.result.topk, ctx.stage + 1, kActivationTag);
    }
    if (ctx.times) ctx.times->wait_s += Since(t0);
  }
  return out;
}

}  // namespace indexcache
