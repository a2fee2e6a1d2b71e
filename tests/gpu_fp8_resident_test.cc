// FP8-resident weights on the GPU: an FP8 checkpoint loaded onto the CUDA backend keeps its
// matrices as e4m3 + block scales and dequantises each just in time before its GEMM. Checked
// against the path that dequantises at load and uploads bf16 (what the CUDA backend did before):
// (a) the same logits, prefill and decode, on the FP8 fixture and on a synthetic FP8 model with
// MoE layers and an FP8 LM head; (b) about half the weight bytes on the device, by the placed
// tensors' sizes and by the device's free memory. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/cuda_check.h"
#include "core/safetensors.h"
#include "core/test_util.h"
#include "data/token_array.h"
#include "kernels/tolerances.h"
#include "model/dsa_model.h"
#include "model/model_writer.h"
#include "model/random_weights.h"

namespace indexcache {
namespace {

// The model as DsaModel::Load builds it, with the FP8 handling chosen by the test.
StatusOr<DsaModel> LoadWith(const std::string& dir, std::shared_ptr<Backend> backend, Fp8Weights fp8) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::Open(dir));
  std::vector<bool> indexer_layers(config.num_layers);
  for (int l = 0; l < config.num_layers; ++l) {
    indexer_layers[l] = ckpt.Has("model.layers." + std::to_string(l) + ".self_attn.indexer.wk.weight");
  }
  ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(config, ckpt, indexer_layers, {}, fp8));
  IndexPattern pattern = config.pattern;
  return DsaModel::FromParts(std::move(config), std::move(weights), std::move(pattern), std::move(backend));
}

std::shared_ptr<Backend> Cuda() {
  auto b = MakeBackend("cuda");
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return *b;
}

struct Difference {
  double rel_l2 = 0, max_abs = 0;
  int64_t unequal = 0;
};

Difference Compare(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  Difference d;
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = got.data<float>()[i], w = want.data<float>()[i];
    num += (g - w) * (g - w);
    den += w * w;
    d.max_abs = std::max(d.max_abs, std::fabs(g - w));
    d.unequal += g != w;
  }
  d.rel_l2 = std::sqrt(num / den);
  return d;
}

// Prefill of the first third, then one token per step through the decode cache.
StatusOr<Tensor> DecodeLogits(const DsaModel& m, const std::vector<int32_t>& seq) {
  const int64_t T = seq.size(), V = m.config().vocab_size, prefix = T / 3;
  ASSIGN_OR_RETURN(KvCache cache, m.NewCache(T));
  ForwardOptions step;
  step.cache = &cache;
  Tensor out = Tensor::Zeros(DType::kF32, {T, V});
  ASSIGN_OR_RETURN(ForwardResult pre, m.Forward(std::vector<int32_t>(seq.begin(), seq.begin() + prefix), step));
  std::copy(pre.logits.data<float>(), pre.logits.data<float>() + prefix * V, out.data<float>());
  for (int64_t t = prefix; t < T; ++t) {
    ASSIGN_OR_RETURN(ForwardResult r, m.Forward({seq[t]}, step));
    std::copy(r.logits.data<float>(), r.logits.data<float>() + V, out.data<float>() + t * V);
  }
  return out;
}

// Both paths end in the same bf16 weights (the kernel is bitwise the CPU dequantisation rounded
// to bf16) and the same GEMMs, so the logits agree to fp32 round-off at worst.
void ExpectSameLogits(const DsaModel& resident, const DsaModel& at_load, const std::vector<int32_t>& seq,
                      const std::string& what) {
  auto a = resident.Forward(seq);
  auto b = at_load.Forward(seq);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  auto da = DecodeLogits(resident, seq);
  auto db = DecodeLogits(at_load, seq);
  ASSERT_TRUE(da.ok()) << da.status().ToString();
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  const Difference prefill = Compare(a->logits, b->logits);
  const Difference decode = Compare(*da, *db);
  std::printf("%s: FP8-resident vs dequantised at load: prefill rel L2 %.3e (max |diff| %.3e, %lld of %lld "
              "unequal), decode rel L2 %.3e (%lld unequal)\n",
              what.c_str(), prefill.rel_l2, prefill.max_abs, static_cast<long long>(prefill.unequal),
              static_cast<long long>(a->logits.numel()), decode.rel_l2, static_cast<long long>(decode.unequal));
  EXPECT_LE(prefill.rel_l2, kRelL2TolF32) << what;
  EXPECT_LE(decode.rel_l2, kRelL2TolF32) << what;
}

TEST(GpuFp8ResidentTest, FixtureLogitsEqualTheDequantiseAtLoadPath) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = "tests/data/dsv32_yarn_fp8";  // 16 x 24 blocks: partial blocks, scalar kernel path
  auto resident = DsaModel::Load(dir, std::nullopt, "cuda");
  auto at_load = LoadWith(dir, Cuda(), Fp8Weights::kDequantize);
  ASSERT_TRUE(resident.ok()) << resident.status().ToString();
  ASSERT_TRUE(at_load.ok()) << at_load.status().ToString();
  EXPECT_GT(resident->ResidentBytes().fp8, 0);
  EXPECT_EQ(at_load->ResidentBytes().fp8, 0);
  EXPECT_EQ(resident->weights().layers[0].q_a.size(), 0) << "an fp32 host copy of an FP8-resident matrix";
  auto tokens = ReadTokenArray(dir + "/tokens.npy", resident->config().vocab_size);
  ASSERT_TRUE(tokens.ok());
  for (int64_t b = 0; b < tokens->rows(); ++b) ExpectSameLogits(*resident, *at_load, tokens->Row(b), dir);
}

// 16 layers (8 dense, 8 MoE of 4 experts + a shared one) whose FP8 matrices dominate the bytes,
// in 128 x 128 blocks, an FP8 LM head, and widths that are multiples of 16 (the vectorised kernel
// path). Every matrix is either under 512K elements or a multiple of 2M, so the backend's pool
// (4 KiB granules below 1 MiB, 2 MiB above) rounds neither its FP8 nor its bf16 form up much and
// the device's free memory can be compared with the tensor sizes.
nlohmann::json SyntheticFp8Config() {
  return {
      {"model_type", "deepseek_v32"}, {"vocab_size", 384},          {"hidden_size", 1024},
      {"num_hidden_layers", 16},      {"num_attention_heads", 8},   {"q_lora_rank", 384},
      {"kv_lora_rank", 256},          {"qk_nope_head_dim", 64},     {"qk_rope_head_dim", 32},
      {"v_head_dim", 48},             {"index_topk", 16},           {"index_n_heads", 4},
      {"index_head_dim", 64},         {"intermediate_size", 2048},  {"first_k_dense_replace", 8},
      {"n_routed_experts", 4},        {"moe_intermediate_size", 256}, {"num_experts_per_tok", 2},
      {"n_shared_experts", 1},        {"rope_theta", 10000.0},      {"max_position_embeddings", 512},
      {"tie_word_embeddings", false},
      {"quantization_config", {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {128, 128}}}},
  };
}

struct Measured {
  ResidentWeightBytes bytes;
  int64_t device_bytes = 0;  // drop in free device memory across the load
};

Measured LoadAndMeasure(const std::string& dir, Fp8Weights fp8, std::optional<DsaModel>* model) {
  std::shared_ptr<Backend> backend = Cuda();
  backend->Synchronize();
  const int64_t before = backend->FreeDeviceBytes();
  auto m = LoadWith(dir, backend, fp8);
  Measured r;
  if (!m.ok()) {
    ADD_FAILURE() << m.status().ToString();
    return r;
  }
  backend->Synchronize();
  r.device_bytes = before - backend->FreeDeviceBytes();
  r.bytes = m->ResidentBytes();
  model->emplace(std::move(*m));
  return r;
}

TEST(GpuFp8ResidentTest, SyntheticModelKeepsAboutHalfTheWeightBytes) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const nlohmann::json config = SyntheticFp8Config();
  auto parsed = ParseModelConfig(config, "synthetic FP8 config");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  const std::string dir = MakeTempDir("fp8_resident");
  Fp8Storage storage;
  storage.enabled = true;
  storage.lm_head = true;
  ASSERT_TRUE(WriteModelDirectory(dir, config, RandomModelWeights(*parsed, 11), storage).ok());
  std::vector<int32_t> seq(96);
  std::mt19937 rng(5);
  for (int32_t& t : seq) t = static_cast<int32_t>(rng() % 384);

  std::optional<DsaModel> resident, at_load;
  const Measured r = LoadAndMeasure(dir, Fp8Weights::kKeep, &resident);
  const Measured a = LoadAndMeasure(dir, Fp8Weights::kDequantize, &at_load);
  ASSERT_TRUE(resident.has_value() && at_load.has_value());
  // The bf16 bytes that the FP8-resident path holds as FP8 instead.
  const int64_t as_bf16 = a.bytes.bf16 - r.bytes.bf16;
  std::printf("weights resident, FP8 path:   %s; total %lld bytes, device free memory dropped %lld bytes\n",
              DescribeResidentBytes(r.bytes).c_str(), static_cast<long long>(r.bytes.total()),
              static_cast<long long>(r.device_bytes));
  std::printf("weights resident, bf16 path:  %s; total %lld bytes, device free memory dropped %lld bytes\n",
              DescribeResidentBytes(a.bytes).c_str(), static_cast<long long>(a.bytes.total()),
              static_cast<long long>(a.device_bytes));
  std::printf("FP8-resident matrices: %lld bytes (e4m3 + scales) against %lld as bf16: %.4f; whole model "
              "%.3f by tensor sizes, %.3f by free device memory\n",
              static_cast<long long>(r.bytes.fp8), static_cast<long long>(as_bf16), double(r.bytes.fp8) / as_bf16,
              double(r.bytes.total()) / a.bytes.total(), double(r.device_bytes) / a.device_bytes);
  EXPECT_EQ(a.bytes.fp8, 0);
  EXPECT_EQ(a.bytes.fp8_scratch, 0);
  // 1 byte per element instead of 2, plus 4 bytes per 128 x 128 block.
  EXPECT_GE(double(r.bytes.fp8) / as_bf16, 0.5);
  EXPECT_LE(double(r.bytes.fp8) / as_bf16, 0.501);
  // The scratch holds the largest FP8 matrix in bf16: a dense gate/up_proj [2048, 1024].
  EXPECT_EQ(r.bytes.fp8_scratch, 2048 * 1024 * 2);
  // The device's free memory says the same as the tensor sizes (nothing else stays behind on the
  // device, e.g. a bf16 copy or an outgrown scratch): within 10 % and 16 MiB of allocator slack
  // (the driver's page granularity and the pool's rounding of ~600 allocations).
  for (const Measured* m : {&r, &a}) {
    EXPECT_NEAR(double(m->device_bytes), double(m->bytes.total()), 0.1 * m->bytes.total() + (16 << 20));
  }
  // Whole model, the scratch and the bf16 embedding and indexers included: about 0.53 here.
  EXPECT_LT(double(r.bytes.total()) / a.bytes.total(), 0.6);
  EXPECT_LT(double(r.device_bytes) / a.device_bytes, 0.6);
  // DsaModel::Load on CUDA takes the FP8-resident path by itself.
  auto loaded = DsaModel::Load(dir, std::nullopt, "cuda");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->ResidentBytes().fp8, r.bytes.fp8);

  ExpectSameLogits(*resident, *at_load, seq, "synthetic FP8 model");
}

}  // namespace
}  // namespace indexcache
