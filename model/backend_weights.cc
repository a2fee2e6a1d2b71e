#include "model/backend_weights.h"

#include <algorithm>
#include <cstdio>
#include <string>

namespace indexcache {

namespace {

Tensor V(Backend* b, const Vector& v) { return b->Weight(v.data(), {v.size()}); }

StatusOr<PlacedWeight> W(Backend* b, const WeightMatrix& m) {
  if (m.fp8) {
    const Fp8Source& s = *m.fp8;
    if (s.data.empty()) {
      return InvalidArgument("tensor '" + s.name + "': its FP8 data was released before the weights were placed");
    }
    return b->WeightFp8(s.name, s.data, s.scale_inv, s.block_rows, s.block_cols);
  }
  PlacedWeight w;
  w.values = b->Weight(m.data(), {m.rows(), m.cols()});
  return w;
}

StatusOr<BackendMlp> PlaceMlp(const MlpWeights& m, Backend* b) {
  BackendMlp out;
  ASSIGN_OR_RETURN(out.gate, W(b, m.gate));
  ASSIGN_OR_RETURN(out.up, W(b, m.up));
  ASSIGN_OR_RETURN(out.down, W(b, m.down));
  return out;
}

// The largest FP8 matrix's element count (0 if none).
int64_t LargestFp8(const ModelWeights& host) {
  int64_t largest = 0;
  auto see = [&](const WeightMatrix& m) {
    if (m.fp8) largest = std::max(largest, m.num_params());
  };
  auto see_mlp = [&](const MlpWeights& m) {
    see(m.gate);
    see(m.up);
    see(m.down);
  };
  see(host.lm_head);
  for (const LayerWeights& L : host.layers) {
    for (const WeightMatrix* m : {&L.q_a, &L.q_b, &L.kv_a, &L.kv_b, &L.o}) see(*m);
    see_mlp(L.mlp);
    for (const MlpWeights& e : L.moe.experts) see_mlp(e);
    see_mlp(L.moe.shared);
  }
  return largest;
}

}  // namespace

void PlaceIndexer(const IndexerWeights& I, Backend* b, BackendIndexer* out) {
  out->wq_b = b->Weight(I.wq_b.data(), {I.wq_b.rows(), I.wq_b.cols()});
  out->wk = b->Weight(I.wk.data(), {I.wk.rows(), I.wk.cols()});
  out->k_norm_weight = V(b, I.k_norm_weight);
  out->k_norm_bias = V(b, I.k_norm_bias);
  out->weights_proj = b->WeightF32(I.weights_proj.data(), {I.weights_proj.rows(), I.weights_proj.cols()});
}

StatusOr<BackendWeights> PlaceWeights(const ModelWeights& host, Backend* b) {
  BackendWeights w;
  if (const int64_t largest = LargestFp8(host); largest > 0) b->ReserveFp8Scratch(largest);
  // A pipeline stage holds the embedding (first stage) and the head (last stage) only where it runs them.
  if (host.embed.size() > 0) w.embed = b->Weight(host.embed.data(), {host.embed.rows(), host.embed.cols()});
  if (host.final_norm.size() > 0) w.final_norm = V(b, host.final_norm);
  if (host.lm_head.has_weight()) {
    ASSIGN_OR_RETURN(w.lm_head, W(b, host.lm_head));
  }
  w.layers.resize(host.layers.size());
  for (size_t l = 0; l < host.layers.size(); ++l) {
    const LayerWeights& h = host.layers[l];
    BackendLayer& L = w.layers[l];
    if (!h.loaded) continue;  // another stage's layer
    L.input_norm = V(b, h.input_norm);
    L.post_attention_norm = V(b, h.post_attention_norm);
    ASSIGN_OR_RETURN(L.q_a, W(b, h.q_a));
    L.q_a_norm = V(b, h.q_a_norm);
    ASSIGN_OR_RETURN(L.q_b, W(b, h.q_b));
    ASSIGN_OR_RETURN(L.kv_a, W(b, h.kv_a));
    L.kv_a_norm = V(b, h.kv_a_norm);
    ASSIGN_OR_RETURN(L.kv_b, W(b, h.kv_b));
    ASSIGN_OR_RETURN(L.o, W(b, h.o));
    L.has_indexer = h.has_indexer;
    if (h.has_indexer) PlaceIndexer(h.indexer, b, &L.indexer);
    L.is_moe = h.is_moe;
    if (!h.is_moe) {
      ASSIGN_OR_RETURN(L.mlp, PlaceMlp(h.mlp, b));
      continue;
    }
    L.moe.router = b->WeightF32(h.moe.router.data(), {h.moe.router.rows(), h.moe.router.cols()});
    L.moe.score_bias = b->WeightF32(h.moe.score_bias.data(), {h.moe.score_bias.size()});
    for (const MlpWeights& e : h.moe.experts) {
      ASSIGN_OR_RETURN(BackendMlp placed, PlaceMlp(e, b));
      L.moe.experts.push_back(std::move(placed));
    }
    L.moe.has_shared = h.moe.has_shared;
    if (h.moe.has_shared) {
      ASSIGN_OR_RETURN(L.moe.shared, PlaceMlp(h.moe.shared, b));
    }
  }
  return w;
}

ResidentWeightBytes CountResidentBytes(const BackendWeights& w, const Backend& backend) {
  ResidentWeightBytes bytes;
  auto add = [&](const Tensor& t) {
    if (t.empty()) return;
    switch (t.dtype()) {
      case DType::kF8E4M3: bytes.fp8 += t.nbytes(); break;
      case DType::kBF16: bytes.bf16 += t.nbytes(); break;
      default: bytes.f32 += t.nbytes(); break;
    }
  };
  auto add_weight = [&](const PlacedWeight& t) {
    add(t.values);
    if (t.is_fp8()) bytes.fp8 += t.scale_inv.nbytes();  // the scales belong to the FP8 form
  };
  auto add_mlp = [&](const BackendMlp& m) {
    add_weight(m.gate);
    add_weight(m.up);
    add_weight(m.down);
  };
  add(w.embed);
  add(w.final_norm);
  add_weight(w.lm_head);
  for (const BackendLayer& L : w.layers) {
    for (const Tensor* t : {&L.input_norm, &L.post_attention_norm, &L.q_a_norm, &L.kv_a_norm}) add(*t);
    for (const PlacedWeight* t : {&L.q_a, &L.q_b, &L.kv_a, &L.kv_b, &L.o}) add_weight(*t);
    if (L.has_indexer) {
      const BackendIndexer& I = L.indexer;
      for (const Tensor* t : {&I.wq_b, &I.wk, &I.k_norm_weight, &I.k_norm_bias, &I.weights_proj}) add(*t);
    }
    add_mlp(L.mlp);
    add(L.moe.router);
    add(L.moe.score_bias);
    for (const BackendMlp& e : L.moe.experts) add_mlp(e);
    add_mlp(L.moe.shared);
  }
  bytes.fp8_scratch = backend.Fp8ScratchBytes();
  return bytes;
}

std::string DescribeResidentBytes(const ResidentWeightBytes& b) {
  char line[160];
  std::snprintf(line, sizeof(line), "%.2f GB fp8 + %.2f GB bf16 + %.2f GB f32, dequantisation scratch %.2f GB",
                b.fp8 / 1e9, b.bf16 / 1e9, b.f32 / 1e9, b.fp8_scratch / 1e9);
  return line;
}

}  // namespace indexcache
