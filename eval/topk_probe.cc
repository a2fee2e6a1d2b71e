#include "eval/topk_probe.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace indexcache {

std::vector<int64_t> SampleQueries(int64_t T, int64_t k, int64_t max_queries) {
  std::vector<int64_t> out;
  if (T < 1) return out;
  const int64_t first = std::min(k, T - 1), span = T - first;
  const int64_t n = max_queries <= 0 ? span : std::min(span, max_queries);
  for (int64_t i = 0; i < n; ++i) {
    // Evenly spread, the last sampled query at T - 1 (the longest context).
    const int64_t p = first + (n == 1 ? span - 1 : (i * (span - 1)) / (n - 1));
    if (out.empty() || p != out.back()) out.push_back(p);
  }
  return out;
}

double AttentionMassOnKeys(Backend& be, const Tensor& q_row, const Tensor& kv, float scale, int64_t position,
                           const int32_t* used, int64_t k) {
  const int64_t H = q_row.size(0), L = position + 1;
  Tensor scores = be.Alloc(DType::kF32, {H, L});
  be.Gemm(q_row, false, kv.Slice0(0, L), true, scale, 0.0f, &scores);
  const Tensor host = be.ToHost(scores);
  const float* s = host.data<float>();
  // The selected keys, once each (a reused top-k row may repeat a key only as padding, but be safe).
  std::vector<int32_t> keys;
  for (int64_t i = 0; i < k; ++i) {
    if (used[i] >= 0 && used[i] < L) keys.push_back(used[i]);
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  double mass = 0.0;
  for (int64_t h = 0; h < H; ++h) {
    const float* row = s + h * L;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < L; ++j) m = std::max(m, static_cast<double>(row[j]));
    double z = 0.0;
    for (int64_t j = 0; j < L; ++j) z += std::exp(row[j] - m);
    double on = 0.0;
    for (int32_t j : keys) on += std::exp(row[j] - m);
    mass += on / z;
  }
  return H ? mass / H : 0.0;
}

namespace {

// Bytes one traced layer keeps on the backend during a probe pass.
int64_t TraceBytesPerLayer(const ModelConfig& c, int64_t T, DType adt, bool attention) {
  int64_t bytes = T * c.index_topk * 4;
  if (attention) {
    bytes += T * c.num_heads * c.latent_dim() * DTypeSize(adt) + T * c.latent_dim() * DTypeSize(adt) +
             T * c.num_heads * 4;
  }
  return bytes;
}

}  // namespace

StatusOr<std::vector<LayerProbe>> ProbeLayers(const DsaModel& model, const std::vector<int32_t>& tokens,
                                              const IndexPattern& pattern, const std::vector<int64_t>& queries,
                                              bool mass_recall) {
  RETURN_IF_ERROR(model.CheckPattern(pattern));
  const ModelConfig& c = model.config();
  Backend& be = model.backend();
  const int64_t T = static_cast<int64_t>(tokens.size()), N = c.num_layers, S = static_cast<int64_t>(queries.size());
  if (S > kMaxProbeQueries) return InvalidArgument("too many probe queries");
  for (int64_t p : queries) {
    if (p < 0 || p >= T) return InvalidArgument("probe query " + std::to_string(p) + " outside the window");
  }
  // As many layers per pass as fit in half the free device memory (the host backend: all).
  int64_t per_pass = N;
  const int64_t free_bytes = be.FreeDeviceBytes();
  if (free_bytes >= 0) {
    const int64_t per_layer = std::max<int64_t>(1, TraceBytesPerLayer(c, T, be.activation_dtype(), mass_recall));
    per_pass = std::max<int64_t>(1, std::min<int64_t>(N, free_bytes / 2 / per_layer));
  }
  std::vector<LayerProbe> probes(N);
  for (int64_t first = 0; first < N; first += per_pass) {
    const int64_t last = std::min(N, first + per_pass);
    ForwardOptions opt;
    opt.pattern = &pattern;
    opt.end_layer = static_cast<int>(last);
    opt.compute_logits = false;
    opt.trace.topk = true;
    opt.trace.attention = mass_recall;
    opt.trace_on_device = true;
    opt.trace_layers.assign(N, false);
    for (int64_t l = first; l < last; ++l) opt.trace_layers[l] = true;
    ASSIGN_OR_RETURN(ForwardResult r, model.Forward(tokens, opt));
    for (int64_t l = first; l < last; ++l) {
      const LayerTrace& tr = r.layers[l];
      const int64_t k = tr.topk.size(1);
      LayerProbe& probe = probes[l];
      probe.topk_rows = Tensor::Zeros(DType::kI32, {S, k});
      for (int64_t i = 0; i < S; ++i) {
        const Tensor row = be.ToHost(tr.topk.Slice0(queries[i], queries[i] + 1));
        std::copy(row.data<int32_t>(), row.data<int32_t>() + k, probe.topk_rows.data<int32_t>() + i * k);
      }
      if (!mass_recall || S == 0) continue;
      const int64_t H = tr.attn_q.size(1), D = tr.attn_q.size(2);
      double sum = 0.0;
      for (int64_t i = 0; i < S; ++i) {
        ASSIGN_OR_RETURN(Tensor q_row, tr.attn_q.Slice0(queries[i], queries[i] + 1).Reshape({H, D}));
        sum += AttentionMassOnKeys(be, q_row, tr.attn_kv, tr.attn_scale, queries[i],
                                   probe.topk_rows.data<int32_t>() + i * k, k);
      }
      probe.mass_recall = sum / S;
    }
  }
  return probes;
}

TopkOverlap::TopkOverlap(int num_layers) : n_(num_layers), sum_(static_cast<size_t>(num_layers) * num_layers, 0.0) {}

void TopkOverlap::Add(const std::vector<LayerProbe>& probes, const std::vector<int64_t>& positions) {
  if (static_cast<int>(probes.size()) != n_ || probes.empty()) return;
  const int64_t k = probes[0].topk_rows.size(1);
  std::vector<std::vector<int32_t>> sets(n_);
  for (size_t i = 0; i < positions.size(); ++i) {
    if (positions[i] + 1 <= k) continue;  // every key is in every layer's top-k: nothing to compare
    for (int l = 0; l < n_; ++l) {
      const int32_t* row = probes[l].topk_rows.data<int32_t>() + i * k;
      sets[l].assign(row, row + k);
      sets[l].erase(std::remove(sets[l].begin(), sets[l].end(), -1), sets[l].end());
      std::sort(sets[l].begin(), sets[l].end());
      sets[l].erase(std::unique(sets[l].begin(), sets[l].end()), sets[l].end());
    }
    for (int a = 0; a < n_; ++a) {
      for (int b = a; b < n_; ++b) {
        std::vector<int32_t> common;
        std::set_intersection(sets[a].begin(), sets[a].end(), sets[b].begin(), sets[b].end(),
                              std::back_inserter(common));
        const double v = static_cast<double>(common.size()) / k;
        sum_[a * n_ + b] += v;
        if (a != b) sum_[b * n_ + a] += v;
      }
    }
    ++queries_;
  }
}

std::vector<std::vector<double>> TopkOverlap::Matrix() const {
  std::vector<std::vector<double>> m(n_, std::vector<double>(n_, std::numeric_limits<double>::quiet_NaN()));
  if (queries_ == 0) return m;
  for (int a = 0; a < n_; ++a) {
    for (int b = 0; b < n_; ++b) m[a][b] = sum_[a * n_ + b] / queries_;
  }
  return m;
}

}  // namespace indexcache
