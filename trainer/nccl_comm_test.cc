// NCCL bootstrap over MPI and the bucketed device all-reduce, under `mpirun -np N` with one GPU
// per rank (skips alone or without GPUs). Also reports the all-reduce bus bandwidth.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <gtest/gtest.h>

#include "core/cuda_check.h"
#include "trainer/comm.h"
#include "trainer/nccl_comm.h"

namespace indexcache {
namespace {

Communicator* g_comm = nullptr;

TEST(NcclCommTest, AllReduceSumsEveryRanksBuffer) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  if (g_comm->world() < 2) GTEST_SKIP() << "run under mpirun -np 2 (or more) with one GPU per rank";
  int devices = 0;
  CUDA_CHECK(cudaGetDeviceCount(&devices));
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  CUDA_CHECK(cudaSetDevice((local ? std::atoi(local) : g_comm->rank()) % devices));
  auto nccl = NcclCommunicator::Create(*g_comm);
  const int world = g_comm->world(), rank = g_comm->rank();
  // Odd length spanning several buckets: rank r holds r + 1 + i % 7.
  const int64_t n = 2 * Communicator::kBucketElements + 12345;
  std::vector<float> host(n);
  for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>(rank + 1 + i % 7);
  float* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, n * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(d, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  nccl->AllReduceSum(d, n, nullptr);
  CUDA_CHECK(cudaMemcpy(host.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float want = static_cast<float>(world * (world + 1) / 2 + world * (i % 7));
    wrong += host[i] != want;
  }
  EXPECT_EQ(wrong, 0);

  // Bus bandwidth of a 256 MiB all-reduce (median of 10), as nccl-tests reports it.
  const int64_t m = 64 << 20;
  std::vector<float> ms;
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int it = 0; it < 13; ++it) {
    g_comm->Barrier();
    CUDA_CHECK(cudaEventRecord(a));
    nccl->AllReduceSum(d, m, nullptr);
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    if (it >= 3) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  const double sec = ms[ms.size() / 2] * 1e-3, bytes = double(m) * 4;
  if (rank == 0) {
    std::printf("all-reduce %d ranks, 256 MiB fp32: %.3f ms, algbw %.1f GB/s, busbw %.1f GB/s\n", world, sec * 1e3,
                bytes / sec / 1e9, bytes / sec / 1e9 * 2.0 * (world - 1) / world);
  }
  CUDA_CHECK(cudaFree(d));
}

// The pipeline's stage link: rank r sends an odd-sized buffer to r + 1, which receives it whole;
// also the point-to-point bandwidth of a V3.2 128K stream (1.9 GB bf16).
TEST(NcclCommTest, StageLinkMovesDeviceBuffersBetweenNeighbours) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  if (g_comm->world() < 2) GTEST_SKIP() << "run under mpirun -np 2 (or more) with one GPU per rank";
  int devices = 0;
  CUDA_CHECK(cudaGetDeviceCount(&devices));
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  CUDA_CHECK(cudaSetDevice((local ? std::atoi(local) : g_comm->rank()) % devices));
  NcclStageLink link(NcclCommunicator::Create(*g_comm));
  const int world = g_comm->world(), rank = g_comm->rank();
  const int64_t n = 1000003;
  int32_t* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, n * sizeof(int32_t)));
  Tensor t = Tensor::View(DType::kI32, {n}, d, nullptr, Device::kCuda);
  std::vector<int32_t> host(n);
  if (rank > 0) {
    link.Recv(&t, rank - 1);
    CUDA_CHECK(cudaMemcpy(host.data(), d, n * sizeof(int32_t), cudaMemcpyDeviceToHost));
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += host[i] != static_cast<int32_t>(i * 3 + rank - 1);
    EXPECT_EQ(wrong, 0);
  }
  if (rank + 1 < world) {
    for (int64_t i = 0; i < n; ++i) host[i] = static_cast<int32_t>(i * 3 + rank);
    CUDA_CHECK(cudaMemcpy(d, host.data(), n * sizeof(int32_t), cudaMemcpyHostToDevice));
    link.Send(t, rank + 1);
  }
  CUDA_CHECK(cudaFree(d));

  // 131072 x 7168 bf16 from rank 0 to rank 1 (median of 5).
  const int64_t bytes = int64_t{131072} * 7168 * 2;
  void* big = nullptr;
  CUDA_CHECK(cudaMalloc(&big, bytes));
  Tensor b = Tensor::View(DType::kU8, {bytes}, big, nullptr, Device::kCuda);
  std::vector<double> secs;
  for (int it = 0; it < 7; ++it) {
    g_comm->Barrier();
    const auto t0 = std::chrono::steady_clock::now();
    if (rank == 0) link.Send(b, 1);
    if (rank == 1) link.Recv(&b, 0);
    if (it >= 2) secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(secs.begin(), secs.end());
  if (rank == 1) {
    std::printf("stage link: %.2f GB in %.2f ms, %.1f GB/s\n", bytes / 1e9, secs[secs.size() / 2] * 1e3,
                bytes / secs[secs.size() / 2] / 1e9);
  }
  CUDA_CHECK(cudaFree(big));
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto comm = indexcache::Communicator::Create(&argc, &argv);
  indexcache::g_comm = comm.get();
  const int rc = RUN_ALL_TESTS();
  return rc;
}
