#include "search/prefix_cache.h"

#include <algorithm>
#include <string>

#include "model/lm_loss.h"

namespace indexcache {

PrefixCache::PrefixCache(const DsaModel* model, std::vector<std::vector<int32_t>> sequences,
                         int64_t device_budget_bytes, StageContext stage)
    : model_(model),
      stage_(stage),
      held_(stage.layers(static_cast<int>(model->config().num_layers))),
      sequences_(std::move(sequences)),
      entries_(sequences_.size()),
      device_budget_bytes_(device_budget_bytes) {
  const int n = static_cast<int>(model_->config().num_layers);
  for (Entry& e : entries_) {
    e.hidden_in.resize(n);
    e.topk_out.resize(n);
  }
}

Status PrefixCache::CheckPrefix(const IndexPattern& pattern, int layer, const char* what) const {
  const int n = static_cast<int>(model_->config().num_layers);
  if (pattern.num_layers() != n || layer < 0 || layer >= n) {
    return InvalidArgument(std::string(what) + ": layer " + std::to_string(layer) + " / pattern of " +
                           std::to_string(pattern.num_layers()) + " layers does not fit a model of " +
                           std::to_string(n));
  }
  if (layer == 0) return Status::Ok();
  if (!has_committed_) return InvalidArgument(std::string(what) + ": nothing committed yet");
  for (int l = 0; l < layer; ++l) {
    if (pattern.is_full(l) != committed_.is_full(l)) {
      return InvalidArgument(std::string(what) + ": pattern " + pattern.ToString() + " differs from the committed " +
                             committed_.ToString() + " at layer " + std::to_string(l) + ", before layer " +
                             std::to_string(layer));
    }
  }
  return Status::Ok();
}

Tensor PrefixCache::Keep(const Tensor& t) {
  Backend& be = model_->backend();
  if (t.device() == Device::kCpu) {
    host_bytes_ += t.nbytes();
    return t;
  }
  if (device_budget_bytes_ < 0 || device_bytes_ + t.nbytes() <= device_budget_bytes_) {
    device_bytes_ += t.nbytes();
    return t;
  }
  Tensor host = be.ToHost(t);  // f32 (or int32 for indices): what Forward accepts from the host
  host_bytes_ += host.nbytes();
  return host;
}

void PrefixCache::Release(const Tensor& t) {
  if (t.empty()) return;
  (t.device() == Device::kCpu ? host_bytes_ : device_bytes_) -= t.nbytes();
}

ForwardOptions PrefixCache::ResumeAt(const Entry& e, const IndexPattern& pattern, int start) const {
  ForwardOptions opt;
  opt.pattern = &pattern;
  opt.start_layer = start;
  if (start > 0 && start >= held_.begin) {  // starts on this stage (later stages receive their input)
    opt.hidden_in = e.hidden_in[start];
    const int source = committed_.source_of(start - 1);
    opt.initial_topk = source >= held_.begin ? e.topk_out[source] : e.topk_into_stage;
  }
  opt.compute_logits = false;
  opt.compute_loss = true;
  return opt;
}

StatusOr<std::vector<double>> PrefixCache::Commit(const IndexPattern& pattern, int from) {
  RETURN_IF_ERROR(CheckPrefix(pattern, from, "PrefixCache::Commit"));
  RETURN_IF_ERROR(model_->CheckPattern(pattern));
  const int n = pattern.num_layers();
  std::vector<double> losses(sequences_.size());
  for (size_t i = 0; i < sequences_.size(); ++i) {
    Entry& e = entries_[i];
    ForwardOptions opt = ResumeAt(e, pattern, from);
    opt.trace.hidden_in = opt.trace.topk = true;
    opt.trace_on_device = true;
    opt.trace_layers.assign(n, false);
    const int first = std::max(from, held_.begin);
    for (int l = first; l < held_.end; ++l) opt.trace_layers[l] = true;
    ASSIGN_OR_RETURN(StageForward f, ForwardStage(*model_, stage_, sequences_[i], opt));
    if (!f.ran) continue;  // the change begins after this stage: its cache stays valid
    const ForwardResult& r = f.result;
    if (!f.topk_in.empty()) {
      Release(e.topk_into_stage);
      e.topk_into_stage = Keep(model_->backend().ToDevice(f.topk_in));
    }
    for (int l = first; l < held_.end; ++l) {
      if (l > from) {  // the stream entering `from` is unchanged
        Release(e.hidden_in[l]);
        e.hidden_in[l] = Keep(r.layers[l].hidden_in);
      }
      Release(e.topk_out[l]);
      e.topk_out[l] = pattern.is_full(l) ? Keep(r.layers[l].topk) : Tensor();
    }
    losses[i] = SumLosses(r.token_nll).nll;
  }
  committed_ = pattern;
  has_committed_ = true;
  return losses;
}

StatusOr<std::vector<double>> PrefixCache::Score(const IndexPattern& pattern, int start) const {
  RETURN_IF_ERROR(CheckPrefix(pattern, start, "PrefixCache::Score"));
  RETURN_IF_ERROR(model_->CheckPattern(pattern));
  std::vector<double> losses(sequences_.size());
  for (size_t i = 0; i < sequences_.size(); ++i) {
    ASSIGN_OR_RETURN(StageForward f, ForwardStage(*model_, stage_, sequences_[i], ResumeAt(entries_[i], pattern, start)));
    losses[i] = SumLosses(f.result.token_nll).nll;  // 0 before the last stage
  }
  return losses;
}

}  // namespace indexcache
