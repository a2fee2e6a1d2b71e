// indexcache: the command-line front end. One binary, one subcommand per job.
//
// Every error ends the process with exit code 1 and one line on stderr:
//   indexcache <command>: error: <file>: <tensor or field>: <what is wrong>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tools/commands.h"

namespace {

const char kUsage[] =
    "usage: indexcache <command> [flags]\n"
    "\n"
    "IndexCache for DeepSeek Sparse Attention models: run, evaluate, benchmark, train and export\n"
    "DSA checkpoints (deepseek_v32, glm_moe_dsa) under per-layer Full/Shared indexer patterns.\n"
    "\n"
    "commands:\n"
    "  info     architecture, parameter count, dtypes and resolved pattern of a model\n"
    "  logits   logits of token ids (.npy) under a pattern\n"
    "  eval     mean next-token cross-entropy and perplexity over token data\n"
    "  generate greedy generation through the decode cache\n"
    "  bench    GPU benchmarks: kernels and a layer stack under IndexCache patterns\n"
    "  search   training-free IndexCache: greedy search for the Full layers by calibration loss\n"
    "  train    distill the Full layers' indexers (training-aware IndexCache), MPI data-parallel\n"
    "  export   an HF model directory with trained indexers and IndexCache pattern keys\n"
    "  plan     pipeline x data-parallel stages, memory and step time of a model on N GPUs\n"
    "\n"
    "Run `indexcache <command> --help` for a command's flags.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 1 : 0;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  for (const indexcache::Command& c : indexcache::AllCommands()) {
    if (c.name == command) return indexcache::RunCommand(c, args);
  }
  std::fprintf(stderr, "indexcache: error: unknown command '%s' (try --help)\n", command.c_str());
  return 1;
}
