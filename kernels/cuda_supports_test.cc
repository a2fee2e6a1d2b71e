// The CUDA kernels' Supports functions are host code: they run (and are tested) without a GPU.
// Issue 12: the kernels abort()ed on shapes they do not support (index_head_dim outside
// {32, 64, 128}, more than 64 index heads, index_topk > 2048); the CUDA backend now checks these
// functions when a model loads and fails with one line naming the config field.
#include <string>

#include "gtest/gtest.h"
#include "kernels/distill_loss_cuda.h"
#include "kernels/indexer_topk_cuda.h"
#include "kernels/sparse_mla_generic_cuda.h"

namespace indexcache {
namespace {

bool Names(const Status& s, const std::string& needle) { return s.message().find(needle) != std::string::npos; }

TEST(CudaSupportsTest, IndexerTopk) {
  IndexerTopkCudaSizes s;
  s.heads = 64;
  s.head_dim = 128;
  s.topk = 2048;
  EXPECT_TRUE(IndexerTopkCudaSupports(s).ok());  // DeepSeek-V3.2
  s.head_dim = 96;
  EXPECT_TRUE(Names(IndexerTopkCudaSupports(s), "field 'index_head_dim' = 96"));
  s.head_dim = 64;
  s.heads = 65;
  EXPECT_TRUE(Names(IndexerTopkCudaSupports(s), "field 'index_n_heads' = 65"));
  s.heads = 32;
  s.topk = 2049;
  EXPECT_TRUE(Names(IndexerTopkCudaSupports(s), "field 'index_topk' = 2049"));
}

TEST(CudaSupportsTest, SparseMla) {
  EXPECT_TRUE(SparseMlaCudaSupports(576, 512, 1 << 20).ok());  // the wgmma kernel: any top-k
  EXPECT_TRUE(SparseMlaCudaSupports(48, 32, 8192).ok());       // the generic kernel
  EXPECT_TRUE(Names(SparseMlaCudaSupports(48, 32, 8193), "field 'index_topk' = 8193"));
}

TEST(CudaSupportsTest, DistillLoss) {
  DistillLossCudaSizes s;
  s.index_heads = 64;
  s.index_head_dim = 128;
  s.attention_heads = 128;
  s.latent_dim = 576;
  s.max_served = 4;
  s.topk = 2048;
  s.sparse = true;
  EXPECT_TRUE(DistillLossCudaSupports(s).ok());
  s.attention_heads = 129;
  EXPECT_TRUE(Names(DistillLossCudaSupports(s), "num_attention_heads"));
  s.attention_heads = 16;
  s.max_served = 9;
  EXPECT_TRUE(Names(DistillLossCudaSupports(s), "serves 9 layers"));
  s.max_served = 2;
  s.index_head_dim = 20;
  EXPECT_TRUE(Names(DistillLossCudaSupports(s), "index_head_dim"));
}

}  // namespace
}  // namespace indexcache
