#include "parallel/tensor_messages.h"

#include <vector>

namespace indexcache {

namespace {

constexpr int kMaxRank = 4;
constexpr int64_t kMaxNameBytes = 4096;
constexpr int64_t kMaxTensorsPerList = 1 << 20;
// Header: dtype, rank (-1: absent), dims.
using Header = int64_t[2 + kMaxRank];

}  // namespace

void SendTensor(Communicator& comm, const Tensor& t, int dest, int tag) {
  Header h = {0, -1, 0, 0, 0, 0};
  if (!t.empty()) {
    h[0] = static_cast<int64_t>(t.dtype());
    h[1] = t.dim();
    for (int i = 0; i < t.dim() && i < kMaxRank; ++i) h[2 + i] = t.size(i);
  }
  comm.Send(h, sizeof(h), dest, tag);
  if (!t.empty()) comm.Send(t.raw(), t.nbytes(), dest, tag);
}

StatusOr<Tensor> RecvTensor(Communicator& comm, int source, int tag, int64_t max_elements, const std::string& what) {
  Header h;
  comm.Recv(h, sizeof(h), source, tag);
  if (h[1] < 0) return Tensor();
  Shape shape;
  int64_t n = 1;
  for (int i = 0; i < h[1] && i < kMaxRank; ++i) {
    shape.push_back(h[2 + i]);
    n *= h[2 + i];
  }
  if (h[1] > kMaxRank || h[0] < 0 || h[0] > static_cast<int64_t>(DType::kU8) || n < 0 || n > max_elements) {
    return Internal(what + ": received a malformed tensor header (rank " + std::to_string(h[1]) + ", " +
                    std::to_string(n) + " elements, at most " + std::to_string(max_elements) + " expected)");
  }
  Tensor t = Tensor::Zeros(static_cast<DType>(h[0]), shape);
  comm.Recv(t.raw(), t.nbytes(), source, tag);
  return t;
}

void SendNamedTensors(Communicator& comm, const NamedTensors& tensors, int dest, int tag) {
  int64_t count = static_cast<int64_t>(tensors.size());
  comm.Send(&count, sizeof(count), dest, tag);
  for (const auto& [name, t] : tensors) {
    int64_t len = static_cast<int64_t>(name.size());
    comm.Send(&len, sizeof(len), dest, tag);
    comm.Send(name.data(), len, dest, tag);
    SendTensor(comm, t, dest, tag);
  }
}

StatusOr<NamedTensors> RecvNamedTensors(Communicator& comm, int source, int tag, int64_t max_elements,
                                        const std::string& what) {
  int64_t count = 0;
  comm.Recv(&count, sizeof(count), source, tag);
  if (count < 0 || count > kMaxTensorsPerList) return Internal(what + ": received a malformed tensor count");
  NamedTensors out;
  for (int64_t i = 0; i < count; ++i) {
    int64_t len = 0;
    comm.Recv(&len, sizeof(len), source, tag);
    if (len < 0 || len > kMaxNameBytes) return Internal(what + ": received a malformed tensor name length");
    std::string name(static_cast<size_t>(len), '\0');
    comm.Recv(name.data(), len, source, tag);
    ASSIGN_OR_RETURN(Tensor t, RecvTensor(comm, source, tag, max_elements, what + ": tensor '" + name + "'"));
    out.emplace_back(std::move(name), std::move(t));
  }
  return out;
}

}  // namespace indexcache
