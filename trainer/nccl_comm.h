// NcclCommunicator: the GPU gradient all-reduce of a data-parallel job, one rank per GPU.
//
// Rank 0 creates the NCCL unique id and broadcasts it over MPI (Communicator::Broadcast); every
// rank then joins the NCCL communicator on its current CUDA device (the backend picks the GPU of
// the local rank). NCCL failures print file:line with the rank and end the whole job.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdint>
#include <memory>

#include "parallel/stage_link.h"
#include "trainer/comm.h"

namespace indexcache {

class NcclCommunicator {
 public:
  static std::unique_ptr<NcclCommunicator> Create(Communicator& mpi);
  ~NcclCommunicator();

  // In-place sum over ranks of a device buffer, in buckets of Communicator::kBucketElements.
  void AllReduceSum(float* device_data, int64_t n, cudaStream_t stream);
  // Point-to-point bytes between device buffers (ncclSend / ncclRecv on `stream`); both return
  // once the transfer is complete.
  void SendBytes(const void* device_data, int64_t bytes, int peer, cudaStream_t stream);
  void RecvBytes(void* device_data, int64_t bytes, int peer, cudaStream_t stream);
  int rank() const { return rank_; }
  int world() const { return world_; }

 private:
  NcclCommunicator() = default;
  ncclComm_t comm_ = nullptr;
  Communicator* mpi_ = nullptr;
  int rank_ = 0, world_ = 1;
};

// A pipeline's device-to-device stage link over NCCL (the communicator of the pipeline's ranks,
// rank == stage), on the CUDA backend's legacy default stream so that it orders itself after the
// kernels that produced the tensor.
class NcclStageLink final : public StageLink {
 public:
  explicit NcclStageLink(std::unique_ptr<NcclCommunicator> comm) : comm_(std::move(comm)) {}
  void Send(const Tensor& t, int stage) override { comm_->SendBytes(t.raw(), t.nbytes(), stage, nullptr); }
  void Recv(Tensor* t, int stage) override { comm_->RecvBytes(t->raw(), t->nbytes(), stage, nullptr); }

 private:
  std::unique_ptr<NcclCommunicator> comm_;
};

}  // namespace indexcache
