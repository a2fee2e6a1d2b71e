// Host tensors as point-to-point messages: a fixed header (dtype, rank, dims) and the bytes.
// The receiver bounds what it accepts, so a confused peer is an error, never a huge allocation.
#pragma once

#include <cstdint>
#include <string>

#include "core/safetensors.h"
#include "core/status.h"
#include "core/tensor.h"
#include "trainer/comm.h"

namespace indexcache {

// Sends a contiguous host tensor (an empty Tensor() travels as "absent").
void SendTensor(Communicator& comm, const Tensor& t, int dest, int tag);
// Receives what SendTensor sent; more than `max_elements` elements is an error naming `what`.
StatusOr<Tensor> RecvTensor(Communicator& comm, int source, int tag, int64_t max_elements, const std::string& what);

// A list of named tensors (checkpoint pieces gathered from pipeline stages).
void SendNamedTensors(Communicator& comm, const NamedTensors& tensors, int dest, int tag);
StatusOr<NamedTensors> RecvNamedTensors(Communicator& comm, int source, int tag, int64_t max_elements,
                                        const std::string& what);

}  // namespace indexcache
