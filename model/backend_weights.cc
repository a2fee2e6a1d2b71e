#include "model/backend_weights.h"

namespace indexcache {

namespace {

Tensor W(Backend* b, const Matrix& m) { return b->Weight(m.data(), {m.rows(), m.cols()}); }
Tensor V(Backend* b, const Vector& v) { return b->Weight(v.data(), {v.size()}); }

BackendMlp PlaceMlp(const MlpWeights& m, Backend* b) { return {W(b, m.gate), W(b, m.up), W(b, m.down)}; }

}  // namespace

void PlaceIndexer(const IndexerWeights& I, Backend* b, BackendIndexer* out) {
  out->wq_b = W(b, I.wq_b);
  out->wk = W(b, I.wk);
  out->k_norm_weight = V(b, I.k_norm_weight);
  out->k_norm_bias = V(b, I.k_norm_bias);
  out->weights_proj = b->WeightF32(I.weights_proj.data(), {I.weights_proj.rows(), I.weights_proj.cols()});
}

BackendWeights PlaceWeights(const ModelWeights& host, Backend* b) {
  BackendWeights w;
  // A pipeline stage holds the embedding (first stage) and the head (last stage) only where it runs them.
  if (host.embed.size() > 0) w.embed = W(b, host.embed);
  if (host.final_norm.size() > 0) w.final_norm = V(b, host.final_norm);
  if (host.lm_head.size() > 0) w.lm_head = W(b, host.lm_head);
  w.layers.resize(host.layers.size());
  for (size_t l = 0; l < host.layers.size(); ++l) {
    const LayerWeights& h = host.layers[l];
    BackendLayer& L = w.layers[l];
    if (!h.loaded) continue;  // another stage's layer
    L.input_norm = V(b, h.input_norm);
    L.post_attention_norm = V(b, h.post_attention_norm);
    L.q_a = W(b, h.q_a);
    L.q_a_norm = V(b, h.q_a_norm);
    L.q_b = W(b, h.q_b);
    L.kv_a = W(b, h.kv_a);
    L.kv_a_norm = V(b, h.kv_a_norm);
    L.kv_b = W(b, h.kv_b);
    L.o = W(b, h.o);
    L.has_indexer = h.has_indexer;
    if (h.has_indexer) PlaceIndexer(h.indexer, b, &L.indexer);
    L.is_moe = h.is_moe;
    if (!h.is_moe) {
      L.mlp = PlaceMlp(h.mlp, b);
      continue;
    }
    L.moe.router = b->WeightF32(h.moe.router.data(), {h.moe.router.rows(), h.moe.router.cols()});
    L.moe.score_bias = b->WeightF32(h.moe.score_bias.data(), {h.moe.score_bias.size()});
    for (const MlpWeights& e : h.moe.experts) L.moe.experts.push_back(PlaceMlp(e, b));
    L.moe.has_shared = h.moe.has_shared;
    if (h.moe.has_shared) L.moe.shared = PlaceMlp(h.moe.shared, b);
  }
  return w;
}

}  // namespace indexcache
