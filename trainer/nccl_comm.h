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

#include "trainer/comm.h"

namespace indexcache {

class NcclCommunicator {
 public:
  static std::unique_ptr<NcclCommunicator> Create(Communicator& mpi);
  ~NcclCommunicator();

  // In-place sum over ranks of a device buffer, in buckets of Communicator::kBucketElements.
  void AllReduceSum(float* device_data, int64_t n, cudaStream_t stream);
  int rank() const { return rank_; }
  int world() const { return world_; }

 private:
  NcclCommunicator() = default;
  ncclComm_t comm_ = nullptr;
  Communicator* mpi_ = nullptr;
  int rank_ = 0, world_ = 1;
};

}  // namespace indexcache
