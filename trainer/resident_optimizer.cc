#include "trainer/resident_optimizer.h"

#include <cstring>
#include <utility>

namespace indexcache {

namespace {

// The host tensor [N] holding every slot's part of `parts` (parts[i] has slot i's values).
Tensor Gather(const std::vector<ResidentSlot>& slots, int64_t n, const std::vector<const float*>& parts) {
  Tensor flat = Tensor::Zeros(DType::kF32, {n});
  for (size_t i = 0; i < slots.size(); ++i) {
    std::memcpy(flat.data<float>() + slots[i].offset, parts[i], static_cast<size_t>(slots[i].size()) * sizeof(float));
  }
  return flat;
}

}  // namespace

StatusOr<ResidentAdamW> ResidentAdamW::Create(Backend& be, std::vector<ResidentSlot> slots,
                                              const std::vector<const float*>& masters, const AdamW& host) {
  if (slots.size() != masters.size() || slots.size() != host.num_params()) {
    return InvalidArgument("resident optimizer: " + std::to_string(slots.size()) + " slots, " +
                           std::to_string(masters.size()) + " masters and " + std::to_string(host.num_params()) +
                           " optimizer parameters");
  }
  int64_t n = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i].offset != n || slots[i].size() != host.params()[i].second.numel()) {
      return InvalidArgument("resident optimizer: slot '" + slots[i].name + "' is not contiguous or has another size");
    }
    n += slots[i].size();
  }
  ResidentAdamW r(be);
  r.options_ = host.options();
  for (size_t i = 0; i < slots.size(); ++i) r.weight_decay_.push_back(host.weight_decay(i));
  std::vector<const float*> m, v;
  for (size_t i = 0; i < slots.size(); ++i) {
    m.push_back(host.exp_avg(i).data());
    v.push_back(host.exp_avg_sq(i).data());
  }
  r.params_ = be.ToDevice(Gather(slots, n, masters));
  r.exp_avg_ = be.ToDevice(Gather(slots, n, m));
  r.exp_avg_sq_ = be.ToDevice(Gather(slots, n, v));
  r.step_ = host.step();
  r.slots_ = std::move(slots);
  return r;
}

std::vector<double> ResidentAdamW::SumsOfSquares(const Tensor& grads) const {
  std::vector<double> sums;
  for (const ResidentSlot& s : slots_) sums.push_back(be_->SumOfSquares(grads.Sub(s.offset, s.shape)));
  return sums;
}

void ResidentAdamW::Step(const Tensor& grads, double lr) {
  ++step_;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const ResidentSlot& s = slots_[i];
    const AdamWScalars k =
        MakeAdamWScalars(lr, options_.beta1, options_.beta2, options_.eps, weight_decay_[i], step_);
    Tensor p = params_.Sub(s.offset, s.shape), m = exp_avg_.Sub(s.offset, s.shape),
           v = exp_avg_sq_.Sub(s.offset, s.shape);
    be_->AdamWUpdate(&p, &m, &v, grads.Sub(s.offset, s.shape), k);
  }
}

Status ResidentAdamW::Download(const std::vector<float*>& masters, AdamW* host) const {
  if (masters.size() != slots_.size()) return InvalidArgument("resident optimizer: wrong number of masters");
  const Tensor p = be_->ToHost(params_), m = be_->ToHost(exp_avg_), v = be_->ToHost(exp_avg_sq_);
  AdamWState state;
  state.step = step_;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const ResidentSlot& s = slots_[i];
    const size_t bytes = static_cast<size_t>(s.size()) * sizeof(float);
    std::memcpy(masters[i], p.data<float>() + s.offset, bytes);
    Tensor mi = Tensor::Zeros(DType::kF32, s.shape), vi = Tensor::Zeros(DType::kF32, s.shape);
    std::memcpy(mi.data<float>(), m.data<float>() + s.offset, bytes);
    std::memcpy(vi.data<float>(), v.data<float>() + s.offset, bytes);
    state.tensors.push_back({s.name + kExpAvgSuffix, std::move(mi)});
    state.tensors.push_back({s.name + kExpAvgSqSuffix, std::move(vi)});
  }
  return host->ImportState(state);
}

}  // namespace indexcache
