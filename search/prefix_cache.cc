#include "search/prefix_cache.h"

#include <string>

namespace indexcache {

PrefixCache::PrefixCache(const DsaModel* model, std::vector<std::vector<int32_t>> sequences,
                         int64_t device_budget_bytes)
    : model_(model),
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

StatusOr<std::vector<double>> PrefixCache::Commit(const IndexPattern& pattern, int from) {
  RETURN_IF_ERROR(CheckPrefix(pattern, from, "PrefixCache::Commit"));
  RETURN_IF_ERROR(model_->CheckPattern(pattern));
  const int n = pattern.num_layers();
  std::vector<double> losses(sequences_.size());
  for (size_t i = 0; i < sequences_.size(); ++i) {
    Entry& e = entries_[i];
    ForwardOptions opt;
    opt.pattern = &pattern;
    opt.start_layer = from;
    if (from > 0) {
      opt.hidden_in = e.hidden_in[from];
      opt.initial_topk = e.topk_out[committed_.source_of(from - 1)];
    }
    opt.compute_logits = false;
    opt.compute_loss = true;
    opt.trace.hidden_in = opt.trace.topk = true;
    opt.trace_on_device = true;
    opt.trace_layers.assign(n, false);
    for (int l = from; l < n; ++l) opt.trace_layers[l] = true;
    ASSIGN_OR_RETURN(ForwardResult r, model_->Forward(sequences_[i], opt));
    for (int l = from; l < n; ++l) {
      if (l > from) {  // the stream entering `from` is unchanged
        Release(e.hidden_in[l]);
        e.hidden_in[l] = Keep(r.layers[l].hidden_in);
      }
      Release(e.topk_out[l]);
      e.topk_out[l] = pattern.is_full(l) ? Keep(r.layers[l].topk) : Tensor();
    }
    double sum = 0.0;
    for (double v : r.token_nll) sum += v;
    losses[i] = sum;
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
    const Entry& e = entries_[i];
    ForwardOptions opt;
    opt.pattern = &pattern;
    opt.start_layer = start;
    if (start > 0) {
      opt.hidden_in = e.hidden_in[start];
      opt.initial_topk = e.topk_out[committed_.source_of(start - 1)];
    }
    opt.compute_logits = false;
    opt.compute_loss = true;
    ASSIGN_OR_RETURN(ForwardResult r, model_->Forward(sequences_[i], opt));
    double sum = 0.0;
    for (double v : r.token_nll) sum += v;
    losses[i] = sum;
  }
  return losses;
}

}  // namespace indexcache
