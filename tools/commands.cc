#include "tools/commands.h"

#include <cstdio>
#include <new>
#include <stdexcept>

#include "core/tensor.h"

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
      {"generate", "Greedy generation with the decode path: prefill the prompt (.npy [T] or [B, T]) into a latent + "
                   "indexer-key cache (Shared layers keep no indexer keys), then one token per step.",
       {kModel, {"tokens", "prompt token ids (.npy)", false, true},
        {"max-new", "tokens to generate", false, true},
        {"out", "optional .npy for prompt + generated ids (int32)"}, kPattern, kDevice},
       RunGenerate},
      {"train", "Training-aware IndexCache: fine-tunes the Full layers' indexers with the multi-layer distillation "
                "loss, the main model frozen. Alone or under mpirun/srun (one rank per process; gradients summed "
                "over ranks). Config: protobuf text format (configs/*.textproto, schema trainer/train_config.proto).",
       {{"config", "training config (.textproto)", false, true},
        {"set", "override a config field, e.g. --set optimizer.lr=3e-4 (repeatable)"},
        {"resume", "continue from the latest checkpoint in checkpoint.dir", true},
        {"stop-after-step", "stop (with a checkpoint) after this many steps, e.g. to fit a time slot", false, false, "0"}},
       RunTrain},
      {"export", "Writes an HF model directory whose Full layers carry a checkpoint's trained indexers and whose "
                 "config.json carries index_topk_pattern, indexer_types (and index_topk_freq / "
                 "index_skip_topk_offset when regular), for SGLang, vLLM and transformers.",
       {kModel, {"checkpoint", "a checkpoint directory, or a checkpoint root (its latest)", false, true},
        {"out", "output model directory (must not exist)", false, true},
        {"pattern", "override the checkpoint's pattern"},
        {"drop-shared-indexers", "leave the Shared layers' indexer tensors out (GLM-5.2 style)", true}},
       RunExport},
      {"bench", "GPU benchmarks: the device's ceilings (bf16 GEMM, copy), the fused indexer top-k and sparse MLA "
                "kernels at DeepSeek-V3.2 sizes, and a stack of V3.2-shaped layers with random weights: prefill "
                "time and decode tokens/s per context under patterns all-F, 1/2, 1/4, 1/8. Prints a markdown "
                "table; --json writes the numbers.",
       {{"contexts", "comma-separated context lengths", false, false, "8192,32768,131072"},
        {"layers", "layers in the synthetic stack", false, false, "8"},
        {"patterns", "comma-separated patterns", false, false, "all,1/2,1/4,1/8"},
        {"chunk", "prefill chunk (tokens per forward)", false, false, "8192"},
        {"decode-steps", "decode steps timed per context", false, false, "16"},
        {"skip-kernels", "skip the per-kernel section", true},
        {"distill", "also time distillation training steps (forward + fused loss + backward [+ NCCL all-reduce "
                    "under mpirun]) per GPU", true},
        {"distill-seq", "comma-separated sequence lengths for --distill", false, false, "8192,32768"},
        {"distill-layers", "layers of the --distill stack (layer 0 Full, serving all)", false, false, "4"},
        {"skip-stack", "skip the layer-stack section", true},
        {"json", "write results to this .json file"}},
       RunBench},
  };
  return kCommands;
}

int RunCommand(const Command& command, const std::vector<std::string>& args) {
  auto flags = Flags::Parse(args, command.flags);
  if (!flags.ok()) {
    std::fprintf(stderr, "indexcache %s: error: %s (try --help)\n", command.name.c_str(),
                 Printable(flags.status().message(), 4096).c_str());
    return 1;
  }
  if (flags->help_requested()) {
    std::fputs(Flags::Usage(command.name, command.summary, command.flags).c_str(), stdout);
    return 0;
  }
  // The last line of defence against sizes that passed every bound but still do not fit: an
  // allocation that fails (std::bad_alloc), a container asked for more than max_size()
  // (std::length_error) or a tensor whose size overflows (AllocationError) ends the command with
  // one line, never an abort. Sizes from files and flags are bounded before this (core/limits.h).
  Status status;
  try {
    status = command.run(*flags);
  } catch (const AllocationError& e) {
    status = InvalidArgument(std::string("a tensor is too large: ") + e.what());
  } catch (const std::bad_alloc&) {
    status = InvalidArgument("out of memory (an input size is too large for this machine)");
  } catch (const std::length_error& e) {
    status = InvalidArgument(std::string("a size is too large: ") + e.what());
  }
  if (!status.ok()) {
    // Printable(): whatever a message echoes (a value from a hostile file), it stays one line.
    std::fprintf(stderr, "indexcache %s: error: %s\n", command.name.c_str(),
                 Printable(status.message(), 4096).c_str());
    return 1;
  }
  return 0;
}

}  // namespace indexcache
