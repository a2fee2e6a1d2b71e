#include "trainer/comm.h"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"

namespace indexcache {

namespace {

bool LaunchedByMpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(var)) return true;
  }
  const char* slurm = std::getenv("SLURM_NTASKS");
  return slurm && std::atoi(slurm) > 1;
}

}  // namespace

struct Communicator::Group {
  MPI_Comm comm = MPI_COMM_WORLD;
};

Communicator::Communicator() : group_(new Group()) {}

// Prints the failing call with file:line and rank, then ends the whole job.
#define MPI_CHECK(expr)                                                                                  \
  do {                                                                                                   \
    const int _ic_rc = (expr);                                                                           \
    if (_ic_rc != MPI_SUCCESS) {                                                                         \
      char _ic_msg[MPI_MAX_ERROR_STRING];                                                                \
      int _ic_len = 0;                                                                                   \
      MPI_Error_string(_ic_rc, _ic_msg, &_ic_len);                                                       \
      std::fprintf(stderr, "[rank %d] %s:%d: MPI error: %s in %s\n", job_rank_, __FILE__, __LINE__, _ic_msg, \
                   #expr);                                                                               \
      std::fflush(stderr);                                                                               \
      MPI_Abort(MPI_COMM_WORLD, 1);                                                                      \
    }                                                                                                    \
  } while (0)

std::unique_ptr<Communicator> Communicator::Create(int* argc, char*** argv) {
  std::unique_ptr<Communicator> c(new Communicator());
  if (!LaunchedByMpi()) return c;
  c->mpi_ = true;
  c->owns_mpi_ = true;
  int job_rank_ = -1;  // for MPI_CHECK before the rank is known
  MPI_CHECK(MPI_Init(argc, argv));
  // Errors return codes to MPI_CHECK, which reports them with their place and aborts the job.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &c->world_));
  c->job_rank_ = c->rank_;
  g_rank = c->rank_;  // CUDA_CHECK lines carry the rank too
  return c;
}

Communicator::~Communicator() {
  if (!mpi_) return;
  if (owns_mpi_) {
    MPI_Finalize();
  } else {
    MPI_Comm_free(&group_->comm);
  }
}

std::unique_ptr<Communicator> Communicator::Split(int color, int key) {
  std::unique_ptr<Communicator> c(new Communicator());
  c->job_rank_ = job_rank_;
  if (!mpi_) return c;  // alone: a group of one
  c->mpi_ = true;
  MPI_CHECK(MPI_Comm_split(group_->comm, color, key, &c->group_->comm));
  MPI_CHECK(MPI_Comm_set_errhandler(c->group_->comm, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(c->group_->comm, &c->rank_));
  MPI_CHECK(MPI_Comm_size(c->group_->comm, &c->world_));
  return c;
}

void Communicator::Send(const void* data, int64_t bytes, int dest, int tag) {
  if (!mpi_) return;
  const int64_t chunk = kBucketElements * 4;
  const char* p = static_cast<const char*>(data);
  int64_t i = 0;
  do {  // an empty message is still one message
    const int count = static_cast<int>(std::min(chunk, bytes - i));
    MPI_CHECK(MPI_Send(p + i, count, MPI_BYTE, dest, tag, group_->comm));
    i += chunk;
  } while (i < bytes);
}

void Communicator::Recv(void* data, int64_t bytes, int source, int tag) {
  if (!mpi_) return;
  const int64_t chunk = kBucketElements * 4;
  char* p = static_cast<char*>(data);
  int64_t i = 0;
  do {
    const int count = static_cast<int>(std::min(chunk, bytes - i));
    MPI_CHECK(MPI_Recv(p + i, count, MPI_BYTE, source, tag, group_->comm, MPI_STATUS_IGNORE));
    i += chunk;
  } while (i < bytes);
}

void Communicator::AllReduceSum(float* data, int64_t n) {
  if (!mpi_ || world_ == 1) return;
  for (int64_t i = 0; i < n; i += kBucketElements) {
    const int count = static_cast<int>(std::min(kBucketElements, n - i));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + i, count, MPI_FLOAT, MPI_SUM, group_->comm));
  }
}

void Communicator::AllReduceSum(double* data, int64_t n) {
  if (!mpi_ || world_ == 1) return;
  for (int64_t i = 0; i < n; i += kBucketElements) {
    const int count = static_cast<int>(std::min(kBucketElements, n - i));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + i, count, MPI_DOUBLE, MPI_SUM, group_->comm));
  }
}

void Communicator::Broadcast(void* data, int64_t bytes, int root) {
  if (!mpi_ || world_ == 1) return;
  MPI_CHECK(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, group_->comm));
}

void Communicator::Barrier() {
  if (mpi_ && world_ > 1) MPI_CHECK(MPI_Barrier(group_->comm));
}

void Communicator::Abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace indexcache
