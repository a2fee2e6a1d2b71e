#include "model/random_weights.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "core/dtype.h"

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

// FP8 matrices over one shared pool of random e4m3 bytes (RandomWeightsOptions::fp8).
class Fp8Pool {
 public:
  static constexpr int64_t kBlock = 128;
  Fp8Pool(int64_t bytes, uint64_t seed) : bytes_(bytes) {
    auto* pool = new uint8_t[bytes];
    data_.reset(pool, [](void* p) { delete[] static_cast<uint8_t*>(p); });
    const uint64_t base = Mix(seed ^ 0xf8f8f8f8ull);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < bytes; ++i) {
      // uniform(-448, 448) rounded to e4m3: the largest finite magnitude, never NaN.
      const float u = static_cast<float>(Mix(base + static_cast<uint64_t>(i)) >> 40) * (1.0f / 16777216.0f);
      pool[i] = FloatToFp8E4M3((2.0f * u - 1.0f) * 448.0f);
    }
  }
  // A [rows, cols] matrix with std 1/sqrt(cols) like Filler::Random: the pool's values times one
  // scale per 128 x 128 block.
  WeightMatrix Matrix(const std::string& name, int64_t rows, int64_t cols) const {
    IC_CHECK(rows * cols <= bytes_);
    Fp8Source src;
    src.name = name;
    src.rows = rows;
    src.cols = cols;
    src.block_rows = src.block_cols = kBlock;
    src.data = Tensor::View(DType::kF8E4M3, {rows, cols}, data_.get(), data_);
    const int64_t br = (rows + kBlock - 1) / kBlock, bc = (cols + kBlock - 1) / kBlock;
    src.scale_inv = Tensor::Zeros(DType::kF32, {br, bc});
    const float scale = std::sqrt(3.0f / static_cast<float>(cols)) / 448.0f;
    std::fill(src.scale_inv.data<float>(), src.scale_inv.data<float>() + br * bc, scale);
    return WeightMatrix::FromFp8(std::move(src));
  }

 private:
  int64_t bytes_;
  std::shared_ptr<void> data_;
};

// One generator of every weight matrix: fp32 from the Filler, or FP8 views of the pool.
struct MatrixMaker {
  Filler* filler;
  const Fp8Pool* fp8;  // null: fp32
  WeightMatrix operator()(const std::string& name, int64_t rows, int64_t cols) const {
    return fp8 ? fp8->Matrix(name, rows, cols) : WeightMatrix(filler->Random(rows, cols));
  }
};

MlpWeights RandomMlp(const MatrixMaker& make, const std::string& name, int64_t hidden, int64_t inter) {
  return {make(name + ".gate_proj.weight", inter, hidden), make(name + ".up_proj.weight", inter, hidden),
          make(name + ".down_proj.weight", hidden, inter)};
}

// The largest WeightMatrix of a layer (the FP8 pool's size).
int64_t LargestMatrix(const ModelConfig& c) {
  const int64_t H = c.hidden_size;
  int64_t n = std::max({c.q_lora_rank * H, c.num_heads * c.qk_head_dim() * c.q_lora_rank, c.latent_dim() * H,
                        c.num_heads * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank,
                        H * c.num_heads * c.v_head_dim, c.intermediate_size * H});
  n = std::max(n, c.moe_intermediate_size * std::max<int64_t>(1, c.n_shared_experts) * H);
  return n;
}

}  // namespace

ModelWeights RandomModelWeights(const ModelConfig& c, uint64_t seed) {
  return RandomModelWeights(c, seed, RandomWeightsOptions{});
}

ModelWeights RandomModelWeights(const ModelConfig& c, uint64_t seed, const RandomWeightsOptions& options) {
  Filler f(seed);
  std::unique_ptr<Fp8Pool> pool;
  if (options.fp8) pool = std::make_unique<Fp8Pool>(LargestMatrix(c), seed);
  const int64_t H = c.hidden_size;
  ModelWeights w;
  w.range = options.range;
  if (w.range.end < 0) w.range.end = static_cast<int>(c.num_layers);
  if (w.has_embedding()) w.embed = f.Random(c.vocab_size, H);
  if (w.has_head(c.num_layers)) {
    w.final_norm = Filler::Ones(H);
    Filler head(Mix(seed) ^ Mix(0x4ead));  // its own stream: the last stage's head equals the whole model's
    w.lm_head = head.Random(c.vocab_size, H);
  }
  w.layers.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights& L = w.layers[l];
    L.loaded = l >= w.range.begin && l < w.range.end;
    if (!L.loaded) {  // another stage's layer: what it is, not its weights (as LoadModelWeights)
      L.has_indexer = true;
      L.is_moe = c.layer_is_moe[l];
      continue;
    }
    // Each layer draws from its own stream, so a stage's layers equal the whole model's.
    Filler lf(Mix(seed) ^ Mix(0x1a7e5 + static_cast<uint64_t>(l)));
    const MatrixMaker make{&lf, pool.get()};
    const std::string p = "model.layers." + std::to_string(l);
    L.input_norm = L.post_attention_norm = Filler::Ones(H);
    L.q_a = make(p + ".self_attn.q_a_proj.weight", c.q_lora_rank, H);
    L.q_a_norm = Filler::Ones(c.q_lora_rank);
    L.q_b = make(p + ".self_attn.q_b_proj.weight", c.num_heads * c.qk_head_dim(), c.q_lora_rank);
    L.kv_a = make(p + ".self_attn.kv_a_proj_with_mqa.weight", c.latent_dim(), H);
    L.kv_a_norm = Filler::Ones(c.kv_lora_rank);
    L.kv_b = make(p + ".self_attn.kv_b_proj.weight", c.num_heads * (c.qk_nope_head_dim + c.v_head_dim),
                  c.kv_lora_rank);
    L.o = make(p + ".self_attn.o_proj.weight", H, c.num_heads * c.v_head_dim);
    L.has_indexer = true;
    L.indexer.wq_b = lf.Random(c.index_n_heads * c.index_head_dim, c.q_lora_rank);
    L.indexer.wk = lf.Random(c.index_head_dim, H);
    L.indexer.k_norm_weight = Filler::Ones(c.index_head_dim);
    L.indexer.k_norm_bias = Vector::Zero(c.index_head_dim);
    L.indexer.weights_proj = lf.Random(c.index_n_heads, H);
    L.is_moe = c.layer_is_moe[l];
    if (!L.is_moe) {
      L.mlp = RandomMlp(make, p + ".mlp", H, c.intermediate_size);
      continue;
    }
    L.moe.router = lf.Random(c.n_routed_experts, H);
    L.moe.score_bias = Vector::Zero(c.n_routed_experts);
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      L.moe.experts.push_back(RandomMlp(make, p + ".mlp.experts." + std::to_string(e), H, c.moe_intermediate_size));
    }
    L.moe.has_shared = c.n_shared_experts > 0;
    if (L.moe.has_shared) {
      L.moe.shared = RandomMlp(make, p + ".mlp.shared_experts", H, c.moe_intermediate_size * c.n_shared_experts);
    }
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

ModelConfig SyntheticV32MoeConfig(int num_layers, int64_t vocab) {
  const nlohmann::json j = {
      {"model_type", "deepseek_v32"}, {"vocab_size", vocab},       {"hidden_size", 7168},
      {"num_hidden_layers", num_layers}, {"num_attention_heads", 128}, {"q_lora_rank", 1536},
      {"kv_lora_rank", 512},          {"qk_nope_head_dim", 128},    {"qk_rope_head_dim", 64},
      {"v_head_dim", 128},            {"index_topk", 2048},         {"index_n_heads", 64},
      {"index_head_dim", 128},        {"intermediate_size", 18432}, {"first_k_dense_replace", 0},
      {"moe_intermediate_size", 2048}, {"n_routed_experts", 256},   {"n_shared_experts", 1},
      {"num_experts_per_tok", 8},     {"n_group", 8},               {"topk_group", 4},
      {"norm_topk_prob", true},       {"routed_scaling_factor", 2.5},
      {"rope_theta", 10000.0},        {"max_position_embeddings", 163840},
  };
  auto c = ParseModelConfig(j, "synthetic V3.2 MoE config");
  IC_CHECK(c.ok());
  return *c;
}

}  // namespace indexcache
