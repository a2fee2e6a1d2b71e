// Communicator: the data-parallel job's ranks. Under mpirun or srun each process is one rank and
// gradients are summed with MPI_Allreduce; started alone it is a single rank and no MPI call is
// made. (On GPUs the gradient all-reduce is meant for NCCL, whose unique id rank 0 creates and
// broadcasts with Broadcast(); the CPU backend all-reduces with MPI, which is what CI tests.)
//
// Any MPI failure, and any rank's fatal error, ends the whole job through MPI_Abort with a
// non-zero exit: a failed rank never leaves the others waiting in a collective.
//
// Split() makes sub-communicators (a pipeline's stages, a stage's data-parallel replicas:
// parallel/pipeline_grid.h); their collectives and point-to-point calls stay inside the group,
// while Abort() always ends the whole job.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace indexcache {

class Communicator {
 public:
  // Joins MPI when the environment shows a launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK,
  // SLURM_NTASKS > 1); otherwise returns a single-rank communicator.
  static std::unique_ptr<Communicator> Create(int* argc, char*** argv);
  ~Communicator();

  int rank() const { return rank_; }
  int world() const { return world_; }
  bool uses_mpi() const { return mpi_; }
  // This process's rank in the whole job (for messages).
  int job_rank() const { return job_rank_; }

  // The ranks with the same `color`, ordered by `key` (a collective over this communicator).
  std::unique_ptr<Communicator> Split(int color, int key);

  // In-place sums over all ranks, in buckets of at most kBucketElements per MPI call.
  void AllReduceSum(float* data, int64_t n);
  void AllReduceSum(double* data, int64_t n);
  void Broadcast(void* data, int64_t bytes, int root);
  void Barrier();
  // Blocking point-to-point messages of raw bytes within this communicator, in chunks of at most
  // kBucketElements * 4 bytes per MPI call (MPI counts are int).
  void Send(const void* data, int64_t bytes, int dest, int tag);
  void Recv(void* data, int64_t bytes, int source, int tag);
  // Ends every rank of the job with `code` (MPI_Abort), or this process when alone.
  [[noreturn]] void Abort(int code);

  static constexpr int64_t kBucketElements = 8 << 20;  // 32 MiB of fp32 per collective

 private:
  struct Group;  // the MPI communicator handle (comm.cc)
  Communicator();
  bool mpi_ = false;
  bool owns_mpi_ = false;  // the job's communicator: finalizes MPI
  int rank_ = 0, world_ = 1, job_rank_ = 0;
  std::unique_ptr<Group> group_;
};

}  // namespace indexcache
