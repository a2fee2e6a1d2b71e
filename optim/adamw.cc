#include "optim/adamw.h"

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <unordered_map>
#include <utility>

namespace indexcache {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Tensor CopyToTensor(const std::vector<float>& values, const Shape& shape) {
  Tensor t = Tensor::Zeros(DType::kF32, shape);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

}  // namespace

Status AdamWOptions::Validate() const {
  auto bad = [](const char* field, double v, const char* want) {
    return InvalidArgument(std::string("adamw: ") + field + " must be " + want + ", got " + std::to_string(v));
  };
  if (!(beta1 >= 0 && beta1 < 1)) return bad("beta1", beta1, "in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) return bad("beta2", beta2, "in [0, 1)");
  if (!(eps > 0 && std::isfinite(eps))) return bad("eps", eps, "positive and finite");
  if (!(weight_decay >= 0 && std::isfinite(weight_decay))) {
    return bad("weight_decay", weight_decay, "non-negative and finite");
  }
  return Status::Ok();
}

bool IsNormOrBias(const std::string& name) {
  if (name == "bias" || EndsWith(name, ".bias")) return true;
  // Any dot-separated component containing "norm" (k_norm, input_layernorm, norm, ...).
  size_t begin = 0;
  while (begin <= name.size()) {
    size_t end = name.find('.', begin);
    if (end == std::string::npos) end = name.size();
    if (name.substr(begin, end - begin).find("norm") != std::string::npos) return true;
    begin = end + 1;
  }
  return false;
}

StatusOr<AdamW> AdamW::Create(NamedTensors params, AdamWOptions options) {
  RETURN_IF_ERROR(options.Validate());
  std::set<std::string> seen;
  for (const auto& [name, t] : params) {
    if (name.empty()) return InvalidArgument("adamw: a parameter has an empty name");
    if (!seen.insert(name).second) return InvalidArgument("adamw: parameter '" + name + "' appears twice");
    if (t.empty() && t.numel() != 0) return InvalidArgument("adamw: parameter '" + name + "' has no storage");
    if (t.dtype() != DType::kF32) {
      return InvalidArgument("adamw: parameter '" + name + "' is " + DTypeName(t.dtype()) + ", expected F32");
    }
    if (t.device() != Device::kCpu) return InvalidArgument("adamw: parameter '" + name + "' is not in host memory");
    if (!t.is_contiguous()) return InvalidArgument("adamw: parameter '" + name + "' is not contiguous");
  }
  AdamW opt;
  opt.options_ = std::move(options);
  opt.params_ = std::move(params);
  for (const auto& [name, t] : opt.params_) {
    const bool decay = !(opt.options_.no_decay && opt.options_.no_decay(name));
    opt.weight_decay_.push_back(decay ? opt.options_.weight_decay : 0.0);
    opt.m_.emplace_back(t.numel(), 0.0f);
    opt.v_.emplace_back(t.numel(), 0.0f);
  }
  return opt;
}

void AdamW::Step(const std::vector<FloatSpan>& grads, double lr) {
  IC_CHECK(grads.size() == params_.size());
  IC_CHECK(std::isfinite(lr) && lr >= 0);
  ++step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].second;
    IC_CHECK(grads[i].size == p.numel());
    const AdamWScalars s =
        MakeAdamWScalars(lr, options_.beta1, options_.beta2, options_.eps, weight_decay_[i], step_);
    AdamWUpdateCpu(p.data<float>(), m_[i].data(), v_[i].data(), grads[i].data, p.numel(), s);
  }
}

AdamWState AdamW::ExportState() const {
  AdamWState state;
  state.step = step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    state.tensors.emplace_back(name + kExpAvgSuffix, CopyToTensor(m_[i], p.shape()));
    state.tensors.emplace_back(name + kExpAvgSqSuffix, CopyToTensor(v_[i], p.shape()));
  }
  return state;
}

Status AdamW::ImportState(const AdamWState& state) {
  if (state.step < 0) return InvalidArgument("adamw state: step must be non-negative, got " + std::to_string(state.step));
  std::unordered_map<std::string, size_t> param_index;
  for (size_t i = 0; i < params_.size(); ++i) param_index[params_[i].first] = i;

  // found[i][0]: exp_avg, found[i][1]: exp_avg_sq.
  std::vector<std::array<const Tensor*, 2>> found(params_.size(), {nullptr, nullptr});
  for (const auto& [name, t] : state.tensors) {
    int which;
    std::string param;
    if (EndsWith(name, kExpAvgSqSuffix)) {
      which = 1;
      param = name.substr(0, name.size() - std::strlen(kExpAvgSqSuffix));
    } else if (EndsWith(name, kExpAvgSuffix)) {
      which = 0;
      param = name.substr(0, name.size() - std::strlen(kExpAvgSuffix));
    } else {
      continue;
    }
    auto it = param_index.find(param);
    if (it == param_index.end()) return InvalidArgument("adamw state: tensor '" + name + "' matches no parameter");
    const size_t i = it->second;
    if (found[i][which] != nullptr) return InvalidArgument("adamw state: tensor '" + name + "' appears twice");
    if (t.dtype() != DType::kF32) {
      return InvalidArgument("adamw state: tensor '" + name + "' is " + DTypeName(t.dtype()) + ", expected F32");
    }
    if (t.device() != Device::kCpu || !t.is_contiguous()) {
      return InvalidArgument("adamw state: tensor '" + name + "' is not a contiguous host tensor");
    }
    if (t.shape() != params_[i].second.shape()) {
      return InvalidArgument("adamw state: tensor '" + name + "' has shape " + ShapeToString(t.shape()) +
                             ", expected " + ShapeToString(params_[i].second.shape()));
    }
    found[i][which] = &t;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    for (int which = 0; which < 2; ++which) {
      if (found[i][which] == nullptr) {
        return NotFound("adamw state: missing tensor '" + params_[i].first +
                        (which ? kExpAvgSqSuffix : kExpAvgSuffix) + "'");
      }
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t n = params_[i].second.numel();
    if (n == 0) continue;
    std::memcpy(m_[i].data(), found[i][0]->raw(), n * sizeof(float));
    std::memcpy(v_[i].data(), found[i][1]->raw(), n * sizeof(float));
  }
  step_ = state.step;
  return Status::Ok();
}

Status SaveAdamWState(const AdamW& opt, const std::string& path) {
  const AdamWState state = opt.ExportState();
  return WriteSafetensors(path, state.tensors, {{kAdamWStepKey, std::to_string(state.step)}});
}

Status LoadAdamWState(const std::string& path, AdamW* opt,
                      const std::function<bool(const std::string& tensor)>& tensor_filter) {
  ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  AdamWState state;
  auto it = file->metadata().find(kAdamWStepKey);
  if (it == file->metadata().end()) {
    return DataLoss(path + ": no '" + kAdamWStepKey + "' in the metadata (not an AdamW state file)");
  }
  char* end = nullptr;
  const long long step = std::strtoll(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0' || step < 0) {
    return DataLoss(path + ": metadata '" + kAdamWStepKey + "' is '" + it->second + "', expected a step count");
  }
  state.step = step;
  for (const std::string& name : file->names()) {
    if (tensor_filter && !tensor_filter(name)) continue;
    ASSIGN_OR_RETURN(Tensor t, file->Get(name));
    state.tensors.emplace_back(name, std::move(t));
  }
  return opt->ImportState(state).WithContext(path);
}

}  // namespace indexcache
