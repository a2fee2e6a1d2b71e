// indexcache logits / eval / generate: run the model on token ids.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/limits.h"
#include "core/npy.h"
#include "data/token_array.h"
#include "model/dsa_model.h"
#include "model/lm_loss.h"
#include "tools/commands.h"

namespace indexcache {

Status CheckDeviceFlag(const Flags& flags) {
  const std::string device = flags.GetOr("device", "cpu");
  if (device == "cpu" || device == "cuda") return Status::Ok();
  return InvalidArgument("--device must be cpu or cuda, got '" + device + "'");
}

namespace {

StatusOr<DsaModel> LoadModel(const Flags& flags) {
  std::optional<std::string> pattern = flags.Get("pattern");
  return DsaModel::Load(*flags.Get("model"), pattern, flags.GetOr("device", "cpu"));
}

}  // namespace

Status RunLogits(const Flags& flags) {
  RETURN_IF_ERROR(CheckDeviceFlag(flags));
  ASSIGN_OR_RETURN(DsaModel model, LoadModel(flags));
  const std::string tokens_path = *flags.Get("tokens");
  ASSIGN_OR_RETURN(TokenArray tokens, ReadTokenArray(tokens_path, model.config().vocab_size));
  const int64_t B = tokens.rows(), T = tokens.cols(), V = model.config().vocab_size;
  Tensor logits = Tensor::Zeros(DType::kF32, {B, T, V});
  for (int64_t b = 0; b < B; ++b) {
    ASSIGN_OR_RETURN(ForwardResult r, model.Forward(tokens.Row(b)));
    std::copy(r.logits.data<float>(), r.logits.data<float>() + T * V, logits.data<float>() + b * T * V);
  }
  if (tokens.shape.size() == 1) {
    ASSIGN_OR_RETURN(logits, logits.Reshape({T, V}));
  }
  return WriteNpy(*flags.Get("out"), logits);
}

Status RunEval(const Flags& flags) {
  RETURN_IF_ERROR(CheckDeviceFlag(flags));
  ASSIGN_OR_RETURN(int64_t seq_len, flags.GetInt("seq-len", 0, 2, kMaxSeqLen));
  ASSIGN_OR_RETURN(int64_t max_seqs, flags.GetInt("max-seqs", 0, 0, std::numeric_limits<int64_t>::max()));
  ASSIGN_OR_RETURN(DsaModel model, LoadModel(flags));
  const std::string data_path = *flags.Get("data");
  ASSIGN_OR_RETURN(TokenArray data, ReadTokenArray(data_path, model.config().vocab_size));
  // Each row (a 1-D array is one row) is cut into whole windows of seq_len tokens.
  std::vector<std::vector<int32_t>> seqs;
  for (int64_t r = 0; r < data.rows(); ++r) {
    for (int64_t s = 0; s + seq_len <= data.cols(); s += seq_len) {
      if (max_seqs && static_cast<int64_t>(seqs.size()) >= max_seqs) break;
      const auto begin = data.ids.begin() + r * data.cols() + s;
      seqs.emplace_back(begin, begin + seq_len);
    }
  }
  if (seqs.empty()) {
    return InvalidArgument(data_path + ": no complete sequence of --seq-len " + std::to_string(seq_len) +
                           " tokens (rows have " + std::to_string(data.cols()) + ")");
  }
  LossSum total;
  for (const auto& seq : seqs) {
    ForwardOptions opts;
    ASSIGN_OR_RETURN(ForwardResult r, model.Forward(seq, opts));
    total.Add(NextTokenLoss(r.logits, seq));
  }
  const double loss = total.mean();
  if (flags.GetBool("json")) {
    nlohmann::json j = {{"model", *flags.Get("model")},
                        {"data", data_path},
                        {"pattern", model.pattern().ToString()},
                        {"seq_len", seq_len},
                        {"sequences", seqs.size()},
                        {"predicted_tokens", total.count},
                        {"loss", loss},
                        {"perplexity", std::exp(loss)}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("pattern     %s\nsequences   %zu x %lld tokens\npredicted   %lld tokens\nloss        %.6f nats/token\n"
                "perplexity  %.4f\n",
                model.pattern().ToString().c_str(), seqs.size(), static_cast<long long>(seq_len),
                static_cast<long long>(total.count), loss, std::exp(loss));
  }
  return Status::Ok();
}

Status RunGenerate(const Flags& flags) {
  RETURN_IF_ERROR(CheckDeviceFlag(flags));
  ASSIGN_OR_RETURN(int64_t max_new, flags.GetInt("max-new", 0, 1, kMaxSeqLen));
  ASSIGN_OR_RETURN(DsaModel model, LoadModel(flags));
  const std::string tokens_path = *flags.Get("tokens");
  ASSIGN_OR_RETURN(TokenArray prompts, ReadTokenArray(tokens_path, model.config().vocab_size));
  const int64_t B = prompts.rows(), T = prompts.cols(), V = model.config().vocab_size;
  // Positions beyond the model's context are not what it was trained for, and bounding them keeps
  // the cache size (layers x positions x latent) a sane product.
  if (T + max_new > model.config().max_position_embeddings) {
    return InvalidArgument(tokens_path + ": prompt of " + std::to_string(T) + " tokens + --max-new " +
                           std::to_string(max_new) + " exceeds the model's max_position_embeddings (" +
                           std::to_string(model.config().max_position_embeddings) + ")");
  }
  Tensor out = Tensor::Zeros(DType::kI32, {B, T + max_new});
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int32_t> prompt = prompts.Row(b);
    ASSIGN_OR_RETURN(KvCache cache, model.NewCache(T + max_new));
    ForwardOptions step;
    step.cache = &cache;
    step.logits_last_row_only = true;
    // Prefill the prompt, then one token per step, each the argmax of the last logits.
    ASSIGN_OR_RETURN(ForwardResult r, model.Forward(prompt, step));
    std::vector<int32_t> seq = prompt;
    for (int64_t i = 0; i < max_new; ++i) {
      const float* last = r.logits.data<float>();
      const int32_t next = static_cast<int32_t>(std::max_element(last, last + V) - last);
      seq.push_back(next);
      if (i + 1 < max_new) {
        ASSIGN_OR_RETURN(r, model.Forward({next}, step));
      }
    }
    std::copy(seq.begin(), seq.end(), out.data<int32_t>() + b * (T + max_new));
    std::printf("row %lld:", static_cast<long long>(b));
    for (int64_t i = T; i < T + max_new; ++i) std::printf(" %d", seq[i]);
    std::printf("\n");
  }
  if (auto path = flags.Get("out")) {
    if (prompts.shape.size() == 1) {
      ASSIGN_OR_RETURN(out, out.Reshape({T + max_new}));
    }
    RETURN_IF_ERROR(WriteNpy(*path, out));
  }
  return Status::Ok();
}

}  // namespace indexcache
