#include "model/random_weights.h"

#include <cmath>

namespace indexcache {

namespace {

// splitmix64: a counter-based generator, so any element can be filled independently in parallel.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class Filler {
 public:
  explicit Filler(uint64_t seed) : stream_(Mix(seed)) {}
  Matrix Random(int64_t rows, int64_t cols) {
    Matrix m(rows, cols);
    const uint64_t base = Mix(++stream_);
    const float a = std::sqrt(3.0f / static_cast<float>(cols));  // uniform(-a, a) has std 1/sqrt(cols)
    float* p = m.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float u = static_cast<float>(Mix(base + static_cast<uint64_t>(i)) >> 40) * (1.0f / 16777216.0f);
      p[i] = (2.0f * u - 1.0f) * a;
    }
    return m;
  }
  static Vector Ones(int64_t n) { return Vector::Ones(n); }

 private:
  uint64_t stream_;
};

MlpWeights RandomMlp(Filler& f, int64_t hidden, int64_t inter) {
  return {f.Random(inter, hidden), f.Random(inter, hidden), f.Random(hidden, inter)};
}

}  // namespace

ModelWeights RandomModelWeights(const ModelConfig& c, uint64_t seed) {
  Filler f(seed);
  const int64_t H = c.hidden_size;
  ModelWeights w;
  w.embed = f.Random(c.vocab_size, H);
  w.final_norm = Filler::Ones(H);
  w.lm_head = f.Random(c.vocab_size, H);
  w.layers.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights& L = w.layers[l];
    L.input_norm = L.post_attention_norm = Filler::Ones(H);
    L.q_a = f.Random(c.q_lora_rank, H);
    L.q_a_norm = Filler::Ones(c.q_lora_rank);
    L.q_b = f.Random(c.num_heads * c.qk_head_dim(), c.q_lora_rank);
    L.kv_a = f.Random(c.latent_dim(), H);
    L.kv_a_norm = Filler::Ones(c.kv_lora_rank);
    L.kv_b = f.Random(c.num_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    L.o = f.Random(H, c.num_heads * c.v_head_dim);
    L.has_indexer = true;
    L.indexer.wq_b = f.Random(c.index_n_heads * c.index_head_dim, c.q_lora_rank);
    L.indexer.wk = f.Random(c.index_head_dim, H);
    L.indexer.k_norm_weight = Filler::Ones(c.index_head_dim);
    L.indexer.k_norm_bias = Vector::Zero(c.index_head_dim);
    L.indexer.weights_proj = f.Random(c.index_n_heads, H);
    L.is_moe = c.layer_is_moe[l];
    if (!L.is_moe) {
      L.mlp = RandomMlp(f, H, c.intermediate_size);
      continue;
    }
    L.moe.router = f.Random(c.n_routed_experts, H);
    L.moe.score_bias = Vector::Zero(c.n_routed_experts);
    for (int64_t e = 0; e < c.n_routed_experts; ++e) L.moe.experts.push_back(RandomMlp(f, H, c.moe_intermediate_size));
    L.moe.has_shared = c.n_shared_experts > 0;
    if (L.moe.has_shared) L.moe.shared = RandomMlp(f, H, c.moe_intermediate_size * c.n_shared_experts);
  }
  w.source_dtypes = {"random"};
  return w;
}

ModelConfig SyntheticV32Config(int num_layers, int64_t vocab) {
  const nlohmann::json j = {
      {"model_type", "deepseek_v32"}, {"vocab_size", vocab},       {"hidden_size", 7168},
      {"num_hidden_layers", num_layers}, {"num_attention_heads", 128}, {"q_lora_rank", 1536},
      {"kv_lora_rank", 512},          {"qk_nope_head_dim", 128},    {"qk_rope_head_dim", 64},
      {"v_head_dim", 128},            {"index_topk", 2048},         {"index_n_heads", 64},
      {"index_head_dim", 128},        {"intermediate_size", 18432}, {"first_k_dense_replace", num_layers},
      {"rope_theta", 10000.0},        {"max_position_embeddings", 163840},
  };
  auto c = ParseModelConfig(j, "synthetic V3.2 config");
  IC_CHECK(c.ok());
  return *c;
}

}  // namespace indexcache
