// indexcache bench: measured ceilings, the DSA kernels at DeepSeek-V3.2 sizes, and a stack of
// V3.2-shaped layers under IndexCache patterns (prefill time and decode tokens/s per context).
//
// Timing follows docs/benchmarks.md: warm-up runs, then CUDA events around each run, medians.
// The ceilings are measured in the same process: a bf16 GEMM (8192^3, cuBLAS) and a 1 GiB
// device-to-device copy (counted as read + write).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/limits.h"

#include "core/cuda_check.h"
#include "core/file_util.h"
#include "kernels/bench_util.h"
#include "kernels/indexer_topk_cuda.h"
#include "kernels/latent_fp8_cuda.h"
#include "kernels/sparse_mla_cuda.h"
#include "model/batched_kv_cache.h"
#include "model/dsa_model.h"
#include "model/random_weights.h"
#include "search/prefix_cache.h"
#include "tools/bench_distill.h"
#include "tools/commands.h"
#include "trainer/comm.h"
#include "trainer/distill.h"
#include "trainer/nccl_comm.h"
#include "trainer/resident_optimizer.h"
#include "optim/adamw.h"
#include "optim/clip.h"

namespace indexcache {

namespace {

using json = nlohmann::json;
using bf16 = __nv_bfloat16;

struct Ceilings {
  double gemm_tflops = 0, copy_gbps = 0;
};

Ceilings MeasureCeilings() {
  Ceilings c;
  c.gemm_tflops = MeasureBf16GemmTflops(8192);
  c.copy_gbps = MeasureCopyGbps(size_t{1} << 30);  // 1 GiB
  return c;
}

// Indexer scores + top-k for the last 2048 queries of a context of L keys (V3.2: 64 heads x 128).
json BenchIndexer(int64_t L, const Ceilings& ceil) {
  const int64_t T = std::min<int64_t>(2048, L), H = 64, D = 128, K = 2048;
  bf16* q = NewRandomBf16(size_t(T * H * D), 3);
  bf16* k = NewRandomBf16(size_t(L * D), 4);
  std::vector<float> w_host(T * H);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-0.125f, 0.125f);
  for (auto& v : w_host) v = dist(rng);
  float* w = DeviceAlloc<float>(w_host.size());
  CUDA_CHECK(cudaMemcpy(w, w_host.data(), w_host.size() * 4, cudaMemcpyHostToDevice));
  IndexerTopkCudaParams p;
  p.q = q;
  p.k = k;
  p.weights = w;
  p.T = T;
  p.L = L;
  p.H = H;
  p.D = D;
  p.topk = K;
  p.query_offset = L - T;
  p.scale = 1.0f / std::sqrt(float(D));
  p.out_indices = DeviceAlloc<int32_t>(size_t(T * K));
  p.workspace_bytes = IndexerTopkCudaWorkspaceBytes(p);
  p.workspace = DeviceAlloc<char>(p.workspace_bytes);
  const double ms = MedianMs([&] { IndexerTopkCuda(p); }, 2, L >= 65536 ? 7 : 15);
  double pairs = 0;  // causal (query, key) pairs
  for (int64_t t = 0; t < T; ++t) pairs += double(L - T + t + 1);
  const double flops = 2.0 * H * D * pairs;
  const double floor_ms = flops / (ceil.gemm_tflops * 1e12) * 1e3;
  const double bytes = double(L) * D * 2 + double(T) * H * D * 2 + double(T) * K * 4;
  for (void* ptr : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(w),
                    static_cast<void*>(p.out_indices), p.workspace}) {
    CUDA_CHECK(cudaFree(ptr));
  }
  return {{"kernel", "indexer_topk"}, {"context", L}, {"queries", T}, {"ms", ms},
          {"tflops", flops / (ms * 1e-3) / 1e12}, {"gbps", bytes / (ms * 1e-3) / 1e9},
          {"of_gemm_ceiling", flops / (ms * 1e-3) / 1e12 / ceil.gemm_tflops}, {"floor_ms", floor_ms},
          {"x_floor", ms / floor_ms}};
}

// Sparse MLA prefill: 4096 queries, 128 heads, d_qk 576, d_v 512, top-k 2048 random keys of L.
json BenchSparseMla(int64_t L, const Ceilings& ceil) {
  const int64_t T = 4096, H = 128, DQK = 576, DV = 512, K = 2048;
  bf16* q = NewRandomBf16(size_t(T * H * DQK), 6);
  bf16* kv = NewRandomBf16(size_t(L * DQK), 7);
  std::vector<int32_t> idx(T * K);
  std::mt19937 rng(8);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(L - 1));
  for (auto& v : idx) v = pick(rng);
  int32_t* d_idx = DeviceAlloc<int32_t>(idx.size());
  CUDA_CHECK(cudaMemcpy(d_idx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
  SparseMlaCudaParams p;
  p.q = q;
  p.kv = kv;
  p.indices = d_idx;
  p.T = T;
  p.H = H;
  p.d_qk = DQK;
  p.d_v = DV;
  p.L = L;
  p.topk = K;
  p.scale = 1.0f / std::sqrt(192.0f);
  p.out = DeviceAlloc<bf16>(size_t(T * H * DV));
  p.lse = DeviceAlloc<float>(size_t(T * H));
  const double ms = MedianMs([&] { SparseMlaCuda(p, nullptr); }, 2, 10);
  const double flops = 2.0 * H * (DQK + DV) * K * double(T);
  const double bytes = double(T) * K * DQK * 2;  // latents gathered (no reuse counted)
  for (void* ptr : {static_cast<void*>(q), static_cast<void*>(kv), static_cast<void*>(d_idx), static_cast<void*>(p.out),
                    static_cast<void*>(p.lse)}) {
    CUDA_CHECK(cudaFree(ptr));
  }
  return {{"kernel", "sparse_mla"}, {"context", L}, {"queries", T}, {"ms", ms},
          {"tflops", flops / (ms * 1e-3) / 1e12}, {"gbps", bytes / (ms * 1e-3) / 1e9},
          {"of_gemm_ceiling", flops / (ms * 1e-3) / 1e12 / ceil.gemm_tflops}};
}

double Seconds(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One greedy step of the pattern search on a V3.2-shaped stack (one sequence of T random tokens):
// the prefix cache's build, one naive evaluation (a full forward), every candidate of step 1 from
// its own layer, and the refresh after the commit. The step's layer-forwards against the naive
// search's (candidates x full forwards), and the measured time against the naive estimate.
Status BenchSearch(const Flags& flags, json* out) {
  ASSIGN_OR_RETURN(std::vector<int64_t> seqs, ParseInts(flags.GetOr("search-seq", "8192,32768"), "search-seq"));
  ASSIGN_OR_RETURN(int64_t layers, flags.GetInt("search-layers", 16, 2, 128));
  const int n = static_cast<int>(layers);
  const ModelConfig config = SyntheticV32Config(n);
  ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, MakeBackend("cuda"));
  ASSIGN_OR_RETURN(DsaModel model, DsaModel::FromParts(config, RandomModelWeights(config, 11), IndexPattern::AllFull(n),
                                                       backend));
  std::printf("\nPattern search, step 1 (all-F -> one Shared layer): %d V3.2-shaped layers, one sequence\n\n"
              "| tokens | cache build s | full forward s | step s (%d candidates) | naive step s | refresh s | "
              "layer-forwards / naive | time / naive | cache GB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
              n, n - 1);
  std::mt19937 rng(12);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(config.vocab_size - 1));
  for (int64_t T : seqs) {
    std::vector<int32_t> tokens(T);
    for (auto& t : tokens) t = tok(rng);
    PrefixCache cache(&model, {tokens});
    const IndexPattern all = IndexPattern::AllFull(n);
    Status status;
    auto timed = [&](const std::function<Status()>& fn) {
      const double s = Seconds([&] {
        status = fn();
        backend->Synchronize();
      });
      return s;
    };
    timed([&] { return cache.Score(all, 0).status(); });  // warm-up: cuBLAS heuristics, the pool
    RETURN_IF_ERROR(status);
    const double build_s = timed([&] { return cache.Commit(all, 0).status(); });
    RETURN_IF_ERROR(status);
    const double full_s = timed([&] { return cache.Score(all, 0).status(); });
    RETURN_IF_ERROR(status);
    double step_s = 0, best_loss = 0;
    int best = -1;
    int64_t step_layers = 0;
    for (int l = 1; l < n; ++l) {
      std::string p = all.ToString();
      p[l] = 'S';
      const IndexPattern q = *IndexPattern::Parse(p, n);
      StatusOr<std::vector<double>> loss = std::vector<double>{};
      step_s += timed([&] {
        loss = cache.Score(q, l);
        return loss.status();
      });
      RETURN_IF_ERROR(status);
      if (best < 0 || (*loss)[0] < best_loss) best = l, best_loss = (*loss)[0];
      step_layers += n - l;
    }
    std::string p = all.ToString();
    p[best] = 'S';
    const double refresh_s = timed([&] { return cache.Commit(*IndexPattern::Parse(p, n), best).status(); });
    RETURN_IF_ERROR(status);
    step_layers += n - best;
    const double naive_s = (n - 1) * full_s;
    const double ratio = double(step_layers) / double((n - 1) * n);
    const double cache_gb = (cache.device_bytes() + cache.host_bytes()) / 1e9;
    std::printf("| %lld | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.1f |\n", static_cast<long long>(T), build_s,
                full_s, step_s + refresh_s, naive_s, refresh_s, ratio, (step_s + refresh_s) / naive_s, cache_gb);
    std::fflush(stdout);
    (*out)["search"].push_back({{"tokens", T}, {"layers", n}, {"cache_build_s", build_s}, {"full_forward_s", full_s},
                                {"step_s", step_s + refresh_s}, {"refresh_s", refresh_s}, {"naive_step_s", naive_s},
                                {"layer_forward_ratio", ratio}, {"cache_bytes", cache.device_bytes() + cache.host_bytes()}});
  }
  return Status::Ok();
}

// The trainer's optimizer step for N V3.2-sized indexers (wq_b 8192 x 1536, wk 128 x 7168, k_norm,
// weights_proj 64 x 7168), both ways the trainer can take it (optimizer.on_host): on the host
// (download the flat gradient, norm, clip, AdamW on the CPU, upload every master again and
// convert the model's copy), and on the device (per-tensor norms, scale, fused AdamW, the model's
// bf16 copy converted on the device). Bytes moved over PCIe by the host path: 8 per parameter.
Status BenchOptimizer(const Flags& flags, json* out) {
  ASSIGN_OR_RETURN(int64_t layers, flags.GetInt("optimizer-layers", 8, 1, 128));
  ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, MakeBackend("cuda"));
  Backend& be = *backend;
  std::vector<ResidentSlot> slots;
  int64_t n = 0;
  for (int64_t l = 0; l < layers; ++l) {
    for (const Shape& s : {Shape{8192, 1536}, Shape{128, 7168}, Shape{128}, Shape{128}, Shape{64, 7168}}) {
      slots.push_back({"l" + std::to_string(l) + "." + std::to_string(slots.size() % 5), n, s});
      n += NumElements(s);
    }
  }
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.f, 0.02f);
  std::vector<std::vector<float>> masters(slots.size());
  NamedTensors params;
  std::vector<const float*> master_ptrs;
  for (size_t i = 0; i < slots.size(); ++i) {
    masters[i].resize(slots[i].size());
    for (float& v : masters[i]) v = normal(rng);
    params.push_back({slots[i].name, Tensor::View(DType::kF32, slots[i].shape, masters[i].data(), nullptr)});
    master_ptrs.push_back(masters[i].data());
  }
  AdamWOptions options;
  options.no_decay = IsNormOrBias;
  ASSIGN_OR_RETURN(AdamW host, AdamW::Create(params, options));
  ASSIGN_OR_RETURN(ResidentAdamW resident, ResidentAdamW::Create(be, slots, master_ptrs, host));
  Tensor grads_host = Tensor::Zeros(DType::kF32, {n});
  for (int64_t i = 0; i < n; ++i) grads_host.data<float>()[i] = normal(rng);
  Tensor grads = be.ToDevice(grads_host);

  auto host_step = [&] {
    Tensor g = be.ToHost(grads);
    std::vector<FloatSpan> spans;
    for (const ResidentSlot& s : slots) spans.push_back({g.data<float>() + s.offset, s.size()});
    const float coef = ClipCoefficient(GlobalGradNorm(spans), 1.0);
    if (coef != 1.0f) {
      for (const FloatSpan& sp : spans) ScaleInPlace(sp.data, sp.size, coef);
    }
    host.Step(spans, 1e-4);
    for (size_t i = 0; i < slots.size(); ++i) {  // PlaceStudents + SyncModel: f32 and bf16 copies up
      Tensor f32 = be.WeightF32(masters[i].data(), slots[i].shape);
      if (slots[i].shape.size() == 2) Tensor b = be.Weight(masters[i].data(), slots[i].shape);
    }
    be.Synchronize();
  };
  auto device_step = [&] {
    double sum = 0.0;
    for (double s : resident.SumsOfSquares(grads)) sum += s;
    const float coef = ClipCoefficient(std::sqrt(sum), 1.0);
    if (coef != 1.0f) be.Scale(&grads, coef);
    resident.Step(grads, 1e-4);
    for (const ResidentSlot& s : slots) {  // SetIndexerOnBackend: the bf16 copies converted on the device
      if (s.shape.size() == 2) Tensor b = be.Convert(resident.params().Sub(s.offset, s.shape), DType::kBF16);
    }
    be.Synchronize();
  };
  std::printf("\nOptimizer step, %lld V3.2 indexers (%.1fM parameters)\n\n| where | median ms | PCIe GB moved |\n"
              "|---|---:|---:|\n", static_cast<long long>(layers), n / 1e6);
  for (const char* where : {"host", "device"}) {
    std::vector<double> times;
    for (int it = 0; it < 6; ++it) {
      const double s = Seconds(where[0] == 'h' ? std::function<void()>(host_step) : std::function<void()>(device_step));
      if (it > 0) times.push_back(s);
    }
    std::sort(times.begin(), times.end());
    const double ms = 1e3 * times[times.size() / 2];
    const double gb = where[0] == 'h' ? 8.0 * n / 1e9 : 8.0 * static_cast<double>(slots.size()) / 1e9;
    std::printf("| %s | %.2f | %.3f |\n", where, ms, gb);
    (*out)["optimizer"].push_back({{"where", where}, {"layers", layers}, {"params", n}, {"ms", ms}});
  }
  return Status::Ok();
}

// Batched decode (DsaModel::DecodeStep): B requests, each at context L, one token each per step,
// on the V3.2-shaped stack under each pattern. The pooled caches are filled with random latents and
// indexer keys instead of running B prefills of L tokens (decode time does not depend on the
// values): a random tile per buffer kind, copied over every request's rows at a different shift.
// tokens/s = B / step time (median of the timed steps after two warm-up steps; every step ends
// with the logits on the host, so the device is synchronised); each step is rolled back so every
// step runs at context L.
Status BenchBatchedDecode(const Flags& flags, const std::vector<int64_t>& contexts,
                          const std::vector<std::string>& patterns, int64_t num_layers, int64_t steps, json* out) {
  ASSIGN_OR_RETURN(std::vector<int64_t> batches, ParseInts(*flags.Get("decode-batch"), "decode-batch"));
  std::vector<std::string> cache_kinds;  // bf16, fp8 (read in place) or fp8-gather (dequantised copy first)
  std::stringstream kinds(flags.GetOr("decode-cache", "bf16"));
  for (std::string kind; std::getline(kinds, kind, ',');) {
    if (kind != "bf16" && kind != "fp8" && kind != "fp8-gather") {
      return InvalidArgument("--decode-cache: each entry is bf16, fp8 or fp8-gather, got '" + kind + "'");
    }
    cache_kinds.push_back(kind);
  }
  if (cache_kinds.empty()) return InvalidArgument("--decode-cache: no cache kind given");
  for (int64_t B : batches) {
    if (B > BatchedKvCache::kMaxRequests) {
      return InvalidArgument("--decode-batch: at most " + std::to_string(BatchedKvCache::kMaxRequests) + " requests");
    }
  }
  const int n = static_cast<int>(num_layers);
  const ModelConfig config = SyntheticV32Config(n);
  ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, MakeBackend("cuda"));
  ASSIGN_OR_RETURN(DsaModel model, DsaModel::FromParts(config, RandomModelWeights(config, 42), IndexPattern::AllFull(n),
                                                       backend));
  // Random tiles the pools are filled from (latent values never change the work; indexer keys only
  // through the score distribution, so a long tile of keys).
  const int64_t D = config.latent_dim(), ID = config.index_head_dim;
  const int64_t lat_tile = 16384, key_tile = 131072;
  bf16* lat_src = NewRandomBf16(size_t(lat_tile * D), 21);
  bf16* key_src = NewRandomBf16(size_t(key_tile * ID), 22);
  // The same latent tile as FP8 rows, for --decode-cache fp8.
  ASSIGN_OR_RETURN(const LatentFp8Layout fp8_layout, MakeLatentFp8Layout(config.kv_lora_rank, config.qk_rope_head_dim));
  uint8_t* lat_fp8_src = nullptr;
  {
    CUDA_CHECK(cudaMalloc(&lat_fp8_src, size_t(lat_tile * fp8_layout.row_bytes())));
    std::vector<int32_t> iota(lat_tile);
    for (int64_t i = 0; i < lat_tile; ++i) iota[i] = static_cast<int32_t>(i);
    int32_t* rows = nullptr;
    CUDA_CHECK(cudaMalloc(&rows, iota.size() * sizeof(int32_t)));
    CUDA_CHECK(cudaMemcpy(rows, iota.data(), iota.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    QuantizeLatentRowsCuda(reinterpret_cast<const __nv_bfloat16*>(lat_src), rows, lat_tile, fp8_layout, lat_fp8_src,
                           nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaFree(rows));
  }
  // Copies rows of a tile (tile_rows rows of the pool's row size), cyclically from `shift`, over
  // rows [base, base + rows) of a pool.
  auto fill = [](Tensor* pool, int64_t base, int64_t rows, const void* tile, int64_t tile_rows, int64_t shift) {
    const int64_t row_bytes = pool->nbytes() / pool->size(0);
    char* dst = static_cast<char*>(pool->raw()) + base * row_bytes;
    const char* src = static_cast<const char*>(tile);
    for (int64_t r = 0; r < rows;) {
      const int64_t from = (r + shift) % tile_rows, len = std::min(rows - r, tile_rows - from);
      CUDA_CHECK(cudaMemcpyAsync(dst + r * row_bytes, src + from * row_bytes, size_t(len * row_bytes),
                                 cudaMemcpyDeviceToDevice, nullptr));
      r += len;
    }
  };
  std::printf("Batched decode: %d V3.2-shaped layers (dense MLP 18432, bf16), B requests each at context L, one "
              "token per request per step (DsaModel::DecodeStep). The pooled caches are filled with RANDOM latents "
              "and indexer keys, not by prefill (decode time does not depend on the values); median of %lld timed "
              "steps after 2 warm-up steps, each rolled back to context L.\n\n"
              "indexer ms / Full layer: the B requests' indexer (one query over its own L + 1 keys each, "
              "Backend::IndexerTopkRequests as DecodeStep runs it) timed alone; share = Full layers x that / step.\n\n"
              "| context | batch | latent cache | pattern | step ms | tokens/s | speedup over %s | indexer ms / Full "
              "layer | indexer share |\n|---:|---:|---|---|---:|---:|---:|---:|---:|\n",
              n, static_cast<long long>(steps), patterns.front().c_str());
  std::mt19937 rng(13);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(config.vocab_size - 1));
  for (int64_t L : contexts) {
    for (int64_t B : batches) {
      for (const std::string& kind : cache_kinds) {
        const bool fp8 = kind != "bf16";
        const char* cache_name = kind.c_str();
        backend->set_fused_fp8_latents(kind != "fp8-gather");
        double base_tps = 0;
        for (const std::string& spec : patterns) {
          ASSIGN_OR_RETURN(IndexPattern pattern, IndexPattern::Parse(spec, n));
          BatchedKvCacheOptions cache_options;
          cache_options.fp8_latents = fp8;
          StatusOr<BatchedKvCache> made = BatchedKvCache::Create(model, B * (L + 1), &pattern, cache_options);
          if (!made.ok()) {  // too large for this device: say so and go on
            std::printf("| %lld | %lld | %s | %s | - | - | %s | - | - |\n", static_cast<long long>(L),
                        static_cast<long long>(B), cache_name, spec.c_str(), made.status().message().c_str());
            std::fflush(stdout);
            continue;
          }
          BatchedKvCache cache = std::move(*made);
          std::vector<int64_t> ids;
          for (int64_t r = 0; r < B; ++r) {
            ASSIGN_OR_RETURN(int64_t id, cache.Add(L + 1));
            const int64_t base = cache.Find(id)->base;
            for (int l = 0; l < n; ++l) {
              const int64_t shift = (r * 7919 + l * 104729) % key_tile;
              fill(&cache.latent[l], base, L, fp8 ? static_cast<const void*>(lat_fp8_src) : lat_src, lat_tile,
                   shift % lat_tile);
              if (!cache.index_keys[l].empty()) fill(&cache.index_keys[l], base, L, key_src, key_tile, shift);
            }
            RETURN_IF_ERROR(cache.SetLength(id, L));
            ids.push_back(id);
          }
          backend->Synchronize();
          std::vector<double> step_s;
          for (int64_t i = 0; i < steps + 2; ++i) {
            std::vector<int32_t> tokens(B);
            for (auto& t : tokens) t = tok(rng);
            Status status;
            const double sec = Seconds([&] {
              status = model.DecodeStep(ids, tokens, &cache).status();
              backend->Synchronize();
            });
            RETURN_IF_ERROR(status);
            for (int64_t id : ids) RETURN_IF_ERROR(cache.SetLength(id, L));
            if (i >= 2) step_s.push_back(sec);
          }
          std::sort(step_s.begin(), step_s.end());
          const double med = step_s[step_s.size() / 2], tps = double(B) / med;
          if (base_tps == 0) base_tps = tps;
          // The indexer of one Full layer as DecodeStep runs it (Backend::IndexerTopkRequests: B queries,
          // each over its own L + 1 keys in layer 0's pool; random queries and weights), to show its
          // share of the step.
          std::vector<double> idx_s;
          {
            Tensor q_host = Tensor::Zeros(DType::kF32, {B, config.index_n_heads * ID});
            Tensor w_host = Tensor::Zeros(DType::kF32, {B, config.index_n_heads});
            std::normal_distribution<float> normal(0.f, 1.f);
            for (int64_t i = 0; i < q_host.numel(); ++i) q_host.data<float>()[i] = normal(rng);
            for (int64_t i = 0; i < w_host.numel(); ++i) w_host.data<float>()[i] = 0.125f * normal(rng);
            const Tensor q = backend->Convert(backend->ToDevice(q_host), backend->activation_dtype());
            const Tensor w = backend->ToDevice(w_host);
            Tensor idx = backend->Alloc(DType::kI32, {B, config.index_topk});
            std::vector<int64_t> begin, count(B, L + 1);
            for (int64_t id : ids) begin.push_back(cache.Find(id)->base);
            for (int rep = 0; rep < 4; ++rep) {
              const double sec = Seconds([&] {
                backend->IndexerTopkRequests(q, cache.index_keys[0], w, config.index_topk, begin, count,
                                             1.0f / std::sqrt(float(ID)), &idx);
                backend->Synchronize();
              });
              if (rep > 0) idx_s.push_back(sec);
            }
            std::sort(idx_s.begin(), idx_s.end());
          }
          const double idx_ms = 1e3 * idx_s[idx_s.size() / 2];
          int full = 0;
          for (int l = 0; l < n; ++l) full += pattern.is_full(l);
          std::printf("| %lld | %lld | %s | %s (%s) | %.2f | %.0f | %.2fx | %.2f | %.0f %% |\n", static_cast<long long>(L),
                      static_cast<long long>(B), cache_name, spec.c_str(), pattern.ToString().c_str(), med * 1e3, tps,
                      tps / base_tps, idx_ms, 100.0 * full * idx_ms / (med * 1e3));
          std::fflush(stdout);
          (*out)["batched_decode"].push_back({{"context", L}, {"batch", B}, {"latent_cache", cache_name}, {"pattern", spec},
                                              {"layers", pattern.ToString()}, {"step_ms", med * 1e3},
                                              {"step_ms_min", step_s.front() * 1e3}, {"tokens_per_s", tps},
                                              {"speedup", tps / base_tps}, {"indexer_ms_per_full_layer", idx_ms},
                                              {"full_layers", full}, {"filled", "random"}});
        }
      }
    }
  }
  std::printf("\n");
  CUDA_CHECK(cudaFree(lat_src));
  CUDA_CHECK(cudaFree(key_src));
  CUDA_CHECK(cudaFree(lat_fp8_src));
  return Status::Ok();
}

}  // namespace

Status RunBench(const Flags& flags) {
  if (!CudaDeviceAvailable()) return Unimplemented("bench needs a CUDA device; none is usable here");
  ASSIGN_OR_RETURN(std::vector<int64_t> contexts, ParseInts(flags.GetOr("contexts", "8192,32768,131072"), "contexts"));
  ASSIGN_OR_RETURN(int64_t num_layers, flags.GetInt("layers", 8, 1, kMaxLayers));
  ASSIGN_OR_RETURN(int64_t chunk, flags.GetInt("chunk", 8192, 1, kMaxSeqLen));
  ASSIGN_OR_RETURN(int64_t decode_steps, flags.GetInt("decode-steps", 16, 1, kMaxSeqLen));
  std::vector<std::string> patterns;
  {
    std::stringstream ss(flags.GetOr("patterns", "all,1/2,1/4,1/8"));
    std::string p;
    while (std::getline(ss, p, ',')) patterns.push_back(p);
  }
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  json out = {{"device", prop.name}};
  const Ceilings ceil = MeasureCeilings();
  out["ceilings"] = {{"bf16_gemm_tflops", ceil.gemm_tflops}, {"copy_gbps", ceil.copy_gbps}};
  std::printf("## %s\n\nCeilings (measured now): bf16 GEMM 8192^3 %.0f TFLOP/s, device copy %.0f GB/s\n\n", prop.name,
              ceil.gemm_tflops, ceil.copy_gbps);

  if (!flags.GetBool("skip-kernels")) {
    std::printf("| kernel | context | queries | median ms | TFLOP/s | GB/s | of GEMM ceiling | x floor |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int64_t L : contexts) {
      for (const json& r : {BenchIndexer(L, ceil), BenchSparseMla(L, ceil)}) {
        std::printf("| %s | %lld | %lld | %.3f | %.0f | %.0f | %.0f %% | %s |\n", r["kernel"].get<std::string>().c_str(),
                    static_cast<long long>(L), static_cast<long long>(r["queries"].get<int64_t>()), r["ms"].get<double>(),
                    r["tflops"].get<double>(), r["gbps"].get<double>(), 100 * r["of_gemm_ceiling"].get<double>(),
                    r.contains("x_floor") ? std::to_string(r["x_floor"].get<double>()).substr(0, 4).c_str() : "-");
        out["kernels"].push_back(r);
      }
    }
    std::printf("\n");
  }

  if (!flags.GetBool("skip-stack")) {
    const ModelConfig config = SyntheticV32Config(static_cast<int>(num_layers));
    ModelWeights weights = RandomModelWeights(config, 42);
    ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, MakeBackend("cuda"));
    ASSIGN_OR_RETURN(DsaModel model, DsaModel::FromParts(config, std::move(weights),
                                                         IndexPattern::AllFull(static_cast<int>(num_layers)), backend));
    backend->set_indexer_fp8(flags.GetBool("indexer-fp8"));
    std::printf("Layer stack: %lld V3.2-shaped layers (dense MLP 18432), random weights, prefill in chunks of %lld%s\n\n"
                "| context | pattern | prefill s | speedup | decode tok/s | speedup |\n|---:|---|---:|---:|---:|---:|\n",
                static_cast<long long>(num_layers), static_cast<long long>(chunk),
                flags.GetBool("indexer-fp8") ? "; indexer in FP8 for prefill" : "");
    std::mt19937 rng(10);
    std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(config.vocab_size - 1));
    {
      // Warm-up (cuBLAS heuristics, the memory pool, lazy module loads) so the first timed
      // pattern does not pay for it: one untimed chunk of prefill and one decode step.
      const int64_t n = std::min(chunk, contexts.front());
      ASSIGN_OR_RETURN(KvCache warm, model.NewCache(n + 1));
      ForwardOptions opts;
      opts.cache = &warm;
      opts.logits_last_row_only = true;
      RETURN_IF_ERROR(model.Forward(std::vector<int32_t>(n, 1), opts).status());
      RETURN_IF_ERROR(model.Forward({1}, opts).status());
      backend->Synchronize();
    }
    for (int64_t L : contexts) {
      std::vector<int32_t> tokens(L);
      for (auto& t : tokens) t = tok(rng);
      double base_prefill = 0, base_decode = 0;
      for (const std::string& spec : patterns) {
        ASSIGN_OR_RETURN(IndexPattern pattern, IndexPattern::Parse(spec, static_cast<int>(num_layers)));
        ASSIGN_OR_RETURN(KvCache cache, model.NewCache(L + 1, &pattern));
        ForwardOptions opts;
        opts.cache = &cache;
        opts.compute_logits = false;
        Status status;
        const double prefill_s = Seconds([&] {
          for (int64_t s = 0; s < L && status.ok(); s += chunk) {
            const std::vector<int32_t> part(tokens.begin() + s, tokens.begin() + std::min(L, s + chunk));
            status = model.Forward(part, opts).status();
          }
          backend->Synchronize();
        });
        RETURN_IF_ERROR(status);
        // Decode at a fixed context: each step writes position L and is then rolled back.
        opts.compute_logits = true;
        opts.logits_last_row_only = true;
        std::vector<double> step_s;
        for (int64_t i = 0; i < decode_steps + 2; ++i) {
          cache.length = L;
          const double s = Seconds([&] { status = model.Forward({tokens[i % L]}, opts).status(); });
          RETURN_IF_ERROR(status);
          if (i >= 2) step_s.push_back(s);  // two warm-up steps
        }
        std::sort(step_s.begin(), step_s.end());
        const double decode_tps = 1.0 / step_s[step_s.size() / 2];
        if (base_prefill == 0) {
          base_prefill = prefill_s;
          base_decode = decode_tps;
        }
        std::printf("| %lld | %s (%s) | %.3f | %.2fx | %.1f | %.2fx |\n", static_cast<long long>(L), spec.c_str(),
                    pattern.ToString().c_str(), prefill_s, base_prefill / prefill_s, decode_tps, decode_tps / base_decode);
        std::fflush(stdout);
        out["stack"].push_back({{"context", L}, {"pattern", spec}, {"layers", pattern.ToString()}, {"indexer_fp8", flags.GetBool("indexer-fp8")},
                                {"prefill_s", prefill_s}, {"prefill_speedup", base_prefill / prefill_s},
                                {"decode_tokens_per_s", decode_tps}, {"decode_speedup", decode_tps / base_decode}});
      }
    }
  }
  if (flags.Get("decode-batch")) {
    RETURN_IF_ERROR(BenchBatchedDecode(flags, contexts, patterns, num_layers, decode_steps, &out));
  }
  if (flags.GetBool("distill")) RETURN_IF_ERROR(BenchDistill(flags, &out));
  if (flags.GetBool("search")) RETURN_IF_ERROR(BenchSearch(flags, &out));
  if (flags.GetBool("optimizer")) RETURN_IF_ERROR(BenchOptimizer(flags, &out));
  if (auto path = flags.Get("json")) RETURN_IF_ERROR(WriteFileAtomic(*path, out.dump(2)));
  return Status::Ok();
}

}  // namespace indexcache
