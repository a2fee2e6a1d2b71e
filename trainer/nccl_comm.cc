#include "trainer/nccl_comm.h"

#include <algorithm>
#include <cstdio>

#include "core/cuda_check.h"

namespace indexcache {

#define NCCL_CHECK(expr)                                                                                \
  do {                                                                                                  \
    const ncclResult_t _ic_rc = (expr);                                                                 \
    if (_ic_rc != ncclSuccess) {                                                                        \
      std::fprintf(stderr, "[rank %d] %s:%d: NCCL error %d: %s in %s\n", mpi_->rank(), __FILE__, __LINE__, \
                   static_cast<int>(_ic_rc), ncclGetErrorString(_ic_rc), #expr);                        \
      mpi_->Abort(1);                                                                                   \
    }                                                                                                   \
  } while (0)

std::unique_ptr<NcclCommunicator> NcclCommunicator::Create(Communicator& mpi) {
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->mpi_ = &mpi;
  c->rank_ = mpi.rank();
  c->world_ = mpi.world();
  Communicator* mpi_ = &mpi;  // for NCCL_CHECK
  ncclUniqueId id;
  if (mpi.rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  mpi.Broadcast(&id, sizeof(id), 0);
  NCCL_CHECK(ncclCommInitRank(&c->comm_, mpi.world(), id, mpi.rank()));
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
}

void NcclCommunicator::AllReduceSum(float* data, int64_t n, cudaStream_t stream) {
  if (world_ == 1) return;
  for (int64_t i = 0; i < n; i += Communicator::kBucketElements) {
    const size_t count = static_cast<size_t>(std::min(Communicator::kBucketElements, n - i));
    NCCL_CHECK(ncclAllReduce(data + i, data + i, count, ncclFloat, ncclSum, comm_, stream));
  }
}

void NcclCommunicator::SendBytes(const void* data, int64_t bytes, int peer, cudaStream_t stream) {
  NCCL_CHECK(ncclSend(data, static_cast<size_t>(bytes), ncclUint8, peer, comm_, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void NcclCommunicator::RecvBytes(void* data, int64_t bytes, int peer, cudaStream_t stream) {
  NCCL_CHECK(ncclRecv(data, static_cast<size_t>(bytes), ncclUint8, peer, comm_, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace indexcache
