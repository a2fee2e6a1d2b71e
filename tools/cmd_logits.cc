// indexcache logits / generate: run the model on token ids from any token source.
#include <algorithm>
#include <cstdio>

#include "core/npy.h"
#include "data/eval_windows.h"
#include "model/batched_kv_cache.h"
#include "model/dsa_model.h"
#include "tools/commands.h"

namespace indexcache {

namespace {

// Bounds on what logits / generate read: rows (documents) and tokens in all.
constexpr int64_t kMaxRows = 1 << 20;
constexpr int64_t kMaxLogitsElements = int64_t{1} << 32;  // 16 GiB of float32 logits

StatusOr<DsaModel> LoadModel(const Flags& flags, const std::string& command) {
  std::optional<std::string> pattern = flags.Get("pattern");
  ASSIGN_OR_RETURN(DsaModel model, DsaModel::Load(*flags.Get("model"), pattern, flags.GetOr("device", "cpu")));
  RETURN_IF_ERROR(ApplyIndexerFp8Flag(flags, model));
  LogResidentWeights(command, model);
  return model;
}

}  // namespace

Status CheckDeviceFlag(const Flags& flags) {
  const std::string device = flags.GetOr("device", "cpu");
  if (device == "cpu" || device == "cuda") return Status::Ok();
  return InvalidArgument("--device must be cpu or cuda, got '" + device + "'");
}

Status ApplyIndexerFp8Flag(const Flags& flags, const DsaModel& model) {
  if (!flags.GetBool("indexer-fp8")) return Status::Ok();
  const ModelConfig& c = model.config();
  if (c.index_head_dim != 128 || c.index_n_heads > 64) {
    return InvalidArgument("--indexer-fp8: the FP8 indexer takes index_head_dim 128 and index_n_heads <= 64; " +
                           *flags.Get("model") + "/config.json has index_head_dim " + std::to_string(c.index_head_dim) +
                           ", index_n_heads " + std::to_string(c.index_n_heads));
  }
  model.backend().set_indexer_fp8(true);
  return Status::Ok();
}

Status RunLogits(const Flags& flags) {
  RETURN_IF_ERROR(CheckDeviceFlag(flags));
  ASSIGN_OR_RETURN(DsaModel model, LoadModel(flags, "logits"));
  const std::string tokens_path = *flags.Get("tokens");
  const int64_t V = model.config().vocab_size;
  ASSIGN_OR_RETURN(TokenRows tokens, ReadTokenRows(tokens_path, V, kMaxRows, kMaxEvalSeqLen * 64));
  // One [B, T, V] array needs rows of one length: documents of different lengths are an error
  // (cut them with `eval`'s windows, or write one file per length).
  if (!tokens.equal_lengths()) {
    return InvalidArgument(tokens_path + ": documents have different lengths (" +
                           std::to_string(tokens.rows[0].size()) + " and others); logits writes one [B, T, V] "
                           "array, so every row must have the same length");
  }
  const int64_t B = static_cast<int64_t>(tokens.rows.size()), T = static_cast<int64_t>(tokens.rows[0].size());
  if (B * T * V > kMaxLogitsElements) {
    return InvalidArgument(tokens_path + ": " + std::to_string(B) + " x " + std::to_string(T) + " x " +
                           std::to_string(V) + " logits exceed 2^32 values");
  }
  Tensor logits = Tensor::Zeros(DType::kF32, {B, T, V});
  for (int64_t b = 0; b < B; ++b) {
    ASSIGN_OR_RETURN(ForwardResult r, model.Forward(tokens.rows[b]));
    std::copy(r.logits.data<float>(), r.logits.data<float>() + T * V, logits.data<float>() + b * T * V);
  }
  if (tokens.one_dimensional) {
    ASSIGN_OR_RETURN(logits, logits.Reshape({T, V}));
  }
  return WriteNpy(*flags.Get("out"), logits);
}

Status RunGenerate(const Flags& flags) {
  RETURN_IF_ERROR(CheckDeviceFlag(flags));
  ASSIGN_OR_RETURN(int64_t max_new, flags.GetInt("max-new", 0, 1, kMaxEvalSeqLen));
  ASSIGN_OR_RETURN(DsaModel model, LoadModel(flags, "generate"));
  const std::string tokens_path = *flags.Get("tokens");
  const int64_t V = model.config().vocab_size;
  ASSIGN_OR_RETURN(TokenRows prompts, ReadTokenRows(tokens_path, V, kMaxRows, kMaxEvalSeqLen * 64));
  // Prompts of different lengths generate side by side in batched decode steps; --out right-pads
  // the shorter rows with -1 so that one [B, longest + max_new] array holds them all.
  const int64_t B = static_cast<int64_t>(prompts.rows.size());
  int64_t longest = 0;
  for (const auto& p : prompts.rows) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
  if (longest + max_new > kMaxEvalSeqLen) {
    return InvalidArgument(tokens_path + ": prompt of " + std::to_string(longest) + " tokens + --max-new exceed " +
                           std::to_string(kMaxEvalSeqLen) + " tokens");
  }
  const int64_t width = longest + max_new;
  ASSIGN_OR_RETURN(int64_t group, flags.GetInt("decode-batch", 32, 1, BatchedKvCache::kMaxRequests));
  Tensor out = Tensor::Zeros(DType::kI32, {B, width});
  std::fill(out.data<int32_t>(), out.data<int32_t>() + B * width, -1);
  auto argmax = [V](const float* row) { return static_cast<int32_t>(std::max_element(row, row + V) - row); };
  // Up to --decode-batch prompts at a time share one batched cache: each prompt is prefilled into
  // its own rows, then every step decodes one token of each of them together (DsaModel::DecodeStep).
  for (int64_t g0 = 0; g0 < B; g0 += group) {
    const int64_t g1 = std::min(B, g0 + group);
    int64_t rows = 0;
    for (int64_t b = g0; b < g1; ++b) rows += static_cast<int64_t>(prompts.rows[b].size()) + max_new;
    BatchedKvCacheOptions cache_options;
    cache_options.fp8_latents = flags.GetBool("fp8-cache");
    ASSIGN_OR_RETURN(BatchedKvCache cache, BatchedKvCache::Create(model, rows, nullptr, cache_options));
    std::vector<int64_t> ids;
    std::vector<std::vector<int32_t>> seqs;
    std::vector<int32_t> next;
    for (int64_t b = g0; b < g1; ++b) {
      const std::vector<int32_t>& prompt = prompts.rows[b];
      ASSIGN_OR_RETURN(int64_t id, cache.Add(static_cast<int64_t>(prompt.size()) + max_new));
      ForwardOptions prefill;
      prefill.logits_last_row_only = true;
      ASSIGN_OR_RETURN(ForwardResult r, model.Prefill(&cache, id, prompt, prefill));
      ids.push_back(id);
      seqs.push_back(prompt);
      next.push_back(argmax(r.logits.data<float>()));
    }
    for (int64_t i = 0; i < max_new; ++i) {
      for (size_t k = 0; k < seqs.size(); ++k) seqs[k].push_back(next[k]);
      if (i + 1 == max_new) break;
      ASSIGN_OR_RETURN(DecodeStepResult step, model.DecodeStep(ids, next, &cache));
      for (size_t k = 0; k < seqs.size(); ++k) next[k] = argmax(step.logits.data<float>() + k * V);
    }
    for (int64_t b = g0; b < g1; ++b) {
      const std::vector<int32_t>& seq = seqs[b - g0];
      const int64_t T = static_cast<int64_t>(prompts.rows[b].size());
      std::copy(seq.begin(), seq.end(), out.data<int32_t>() + b * width);
      std::printf("row %lld:", static_cast<long long>(b));
      for (int64_t i = T; i < T + max_new; ++i) std::printf(" %d", seq[i]);
      std::printf("\n");
    }
  }
  if (auto path = flags.Get("out")) {
    if (prompts.one_dimensional) {
      ASSIGN_OR_RETURN(out, out.Reshape({width}));
    }
    RETURN_IF_ERROR(WriteNpy(*path, out));
  }
  return Status::Ok();
}

}  // namespace indexcache
