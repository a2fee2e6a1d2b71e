#include "tools/commands.h"

#include <cstdio>

namespace indexcache {

namespace {
const FlagSpec kModel{"model", "model directory: config.json + safetensors (shards with an index)", false, true};
const FlagSpec kPattern{"pattern", "IndexCache pattern: F/S per layer (\"FSSS...\"), a ratio \"1/N\", or \"all\"; "
                                   "overrides the config's pattern keys"};
const FlagSpec kDevice{"device", "cpu or cuda", false, false, "cpu"};
const FlagSpec kJson{"json", "print JSON instead of text", true};
}  // namespace

const std::vector<Command>& AllCommands() {
  static const std::vector<Command> kCommands = {
      {"info", "Prints a model's architecture, parameter count, weight dtypes and resolved IndexCache pattern.",
       {kModel, kPattern, kJson}, RunInfo},
      {"logits", "Runs the model on token ids (.npy int32/int64, [T] or [B, T]) and writes float32 logits "
                 "([T, V] or [B, T, V]) to a .npy file.",
       {kModel, {"tokens", "token ids (.npy)", false, true}, {"out", "output .npy for the logits", false, true},
        kPattern, kDevice},
       RunLogits},
      {"eval", "Mean next-token cross-entropy (nats) and perplexity over token data cut into sequences of "
               "--seq-len tokens (an incomplete tail is dropped). Data: .npy int32/int64 [N] (one stream) or "
               "[B, T] (rows are cut separately).",
       {kModel, {"data", "token data (.npy)", false, true}, {"seq-len", "tokens per sequence", false, true},
        {"max-seqs", "evaluate at most this many sequences (0: all)", false, false, "0"}, kPattern, kDevice, kJson},
       RunEval},
  };
  return kCommands;
}

int RunCommand(const Command& command, const std::vector<std::string>& args) {
  auto flags = Flags::Parse(args, command.flags);
  if (!flags.ok()) {
    std::fprintf(stderr, "indexcache %s: error: %s (try --help)\n", command.name.c_str(),
                 flags.status().message().c_str());
    return 1;
  }
  if (flags->help_requested()) {
    std::fputs(Flags::Usage(command.name, command.summary, command.flags).c_str(), stdout);
    return 0;
  }
  const Status status = command.run(*flags);
  if (!status.ok()) {
    std::fprintf(stderr, "indexcache %s: error: %s\n", command.name.c_str(), status.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace indexcache
