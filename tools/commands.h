// The indexcache subcommands. Each is a table entry: name, summary, flags and a Run function that
// returns a Status; RunCommand prints help, reports errors on one line and maps them to exit 1.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/dsa_model.h"
#include "tools/flags.h"

namespace indexcache {

struct Command {
  std::string name;
  std::string summary;
  std::vector<FlagSpec> flags;
  std::function<Status(const Flags&)> run;
};

const std::vector<Command>& AllCommands();
int RunCommand(const Command& command, const std::vector<std::string>& args);

// Subcommand bodies (tools/cmd_*.cc).
Status RunInfo(const Flags& flags);
Status RunLogits(const Flags& flags);
Status RunEval(const Flags& flags);
Status RunGenerate(const Flags& flags);
Status RunBench(const Flags& flags);
Status RunTrain(const Flags& flags);
Status RunExport(const Flags& flags);
Status RunSearch(const Flags& flags);
Status RunPlan(const Flags& flags);
// --device is cpu or cuda.
Status CheckDeviceFlag(const Flags& flags);
// --indexer-fp8: turns the FP8 indexer on for `model`'s backend, or one error line naming the
// config field when the model's indexer shape is not the FP8 kernel's (index_head_dim 128,
// index_n_heads <= 64): asked for, it must not silently stay bf16.
Status ApplyIndexerFp8Flag(const Flags& flags, const DsaModel& model);
// On a GPU, one stderr line after the load: where the model's weight bytes are ("weights resident
// on the GPU: 1.23 GB fp8 + ..."), prefixed with the rank under MPI. Nothing on the CPU.
void LogResidentWeights(const std::string& command, const DsaModel& model);

}  // namespace indexcache
