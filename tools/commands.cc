#include "tools/commands.h"

#include <cstdio>
#include <new>
#include <stdexcept>

#include "core/cuda_check.h"
#include "core/tensor.h"

#include "tools/pipeline_flags.h"

namespace indexcache {

namespace {
const FlagSpec kModel{"model", "model directory: config.json + safetensors (shards with an index)", false, true};
const FlagSpec kPattern{"pattern", "IndexCache pattern: F/S per layer (\"FSSS...\"), a ratio \"1/N\", or \"all\"; "
                                   "overrides the config's pattern keys"};
const FlagSpec kDevice{"device", "cpu or cuda", false, false, "cpu"};
const FlagSpec kIndexerFp8{"indexer-fp8", "run prefill-sized indexer calls in FP8 (e4m3 q per token and head, k per "
                                           "key; DeepSeek's production indexer; D = 128 models only)", true};
const FlagSpec kJson{"json", "print JSON instead of text", true};
}  // namespace

const std::vector<Command>& AllCommands() {
  static const std::vector<Command> kCommands = {
      {"info", "Prints a model's architecture, parameter count, weight dtypes and resolved IndexCache pattern.",
       {kModel, kPattern,
        {"config-only", "count parameters from config.json without reading safetensors (automatic when the "
                        "directory has none)", true},
        kJson},
       RunInfo},
      {"logits", "Runs the model on token ids (.npy int32/int64, [T] or [B, T]) and writes float32 logits "
                 "([T, V] or [B, T, V]) to a .npy file.",
       {kModel, {"tokens", "token ids (.npy)", false, true}, {"out", "output .npy for the logits", false, true},
        kPattern, kDevice, kIndexerFp8},
       RunLogits},
      {"eval", "Mean next-token cross-entropy (nats) and perplexity over token data cut into sequences of "
               "--seq-len tokens, document by document (an incomplete tail is dropped), for one or several "
               "IndexCache patterns; optionally loss by position, retrieval tasks (exact match by greedy decoding "
               "and answer loss), the layers' top-k overlap and attention mass recall. --out writes JSON and SVG "
               "pictures beside it. Data: .npy int32/int64 [N] (one document) or [B, T] (rows are documents), a "
               "Megatron prefix, an .ictok shard, or a comma-separated list of them.",
       {kModel, {"data", "token data (.npy, Megatron prefix, .ictok, or a comma-separated list)", false, true}, {"seq-len", "tokens per sequence", false, true},
        {"max-seqs", "evaluate at most this many sequences (0: all)", false, false, "0"}, kPattern,
        {"patterns", "comma-separated patterns to compare (F/S strings, 1/N, all, search.json paths); the first "
                     "is the reference of the 'difference' column"},
        {"bucket", "also report the loss by position in buckets of this many positions"},
        {"tasks", "retrieval tasks (.jsonl: prompt, answer, kind, context, depth; tools/make_tasks.py)"},
        {"overlap", "top-k overlap of every pair of layers under all-F, and per pattern each layer's attention "
                    "mass recall", true},
        {"overlap-queries", "queries sampled per sequence for --overlap (0: every query with more than k keys)",
         false, false, "64"},
        {"overlap-seqs", "sequences probed for --overlap (the first ones)", false, false, "4"},
        PipelineStagesFlag(), StageBoundariesFlag(),
        {"out", "write the JSON here, and the pictures next to it (FILE_overlap.svg, FILE_loss_by_position.svg, "
                "FILE_tasks_pI.svg)"},
        kDevice, kIndexerFp8, kJson},
       RunEval},
      {"generate", "Greedy generation with the decode path: prefill each prompt (.npy [T] or [B, T]) into its rows "
                   "of a pooled latent + indexer-key cache (Shared layers keep no indexer keys), then one token per "
                   "step for all prompts at once (batched decode).",
       {kModel, {"tokens", "prompt token ids (.npy)", false, true},
        {"max-new", "tokens to generate", false, true},
        {"decode-batch", "prompts decoded together (one pooled cache per group)", false, false, "32"},
        {"fp8-cache", "store the cached MLA latents as FP8 rows (512 e4m3 + 128-value scales + bf16 rope: 656 "
                      "instead of 1152 bytes per token and layer for V3.2)", true},
        {"out", "optional .npy for prompt + generated ids (int32)"}, kPattern, kDevice, kIndexerFp8},
       RunGenerate},
      {"search", "Training-free IndexCache: greedy search for the Full layers by calibration loss. From all-F (where "
                 "the checkpoint has indexer weights), each step flips to Shared the layer whose flip costs the least "
                 "loss, until --target Full layers remain (or, with --budget, while the loss stays within PCT % of "
                 "all-F). Candidates rerun only the layers from the flipped one on (a prefix cache of activations); "
                 "under mpirun the sequences are split over ranks. Writes --out after every step, and an SVG beside it.",
       {kModel, {"data", "calibration tokens: .npy, Megatron prefix, .ictok or a comma-separated list", false, true},
        {"seq-len", "tokens per calibration sequence", false, true},
        {"max-seqs", "use at most this many sequences (0: all)", false, false, "0"},
        {"target", "Full layers to keep: 1/N (ceil(layers / N)) or a count K"},
        {"budget", "instead of --target: the fewest Full layers whose loss stays within PCT % of all-F"},
        {"refine", "after greedy, move Full layers to neighbouring Shared positions while that lowers the loss", true},
        {"keep-full", "comma-separated layers that must stay Full (layer 0 always does)"},
        {"out", "result JSON (written atomically after every step)", false, false, "search.json"},
        {"resume", "continue the search recorded in --out", true},
        {"stop-after-step", "stop after this many new steps (--resume continues), e.g. to fit a time slot", false, false, "0"},
        {"cache-mb", "device memory for the prefix cache in MiB (default: half of what is free; the rest on the host)"},
        PipelineStagesFlag(), StageBoundariesFlag(),
        kDevice},
       RunSearch},
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
                 "index_skip_topk_offset when regular), for SGLang, vLLM and transformers. The trained indexers go "
                 "to a new shard (model-indexcache-00001.safetensors); unchanged shards are hard-linked from the "
                 "source, shards that held changed tensors are rewritten without them, and the index is "
                 "regenerated.",
       {kModel, {"checkpoint", "a checkpoint directory, or a checkpoint root (its latest); without it only the "
                               "pattern keys change"},
        {"out", "output model directory (must not exist)", false, true},
        {"pattern", "the pattern to write (F/S string, 1/N, all, or a search.json); default: the checkpoint's"},
        {"drop-shared-indexers", "leave the Shared layers' indexer tensors out (GLM-5.2 style)", true},
        {"indexer-dtype", "dtype of the trained indexer weights: 'checkpoint' (the model's own; FP8 re-quantised), "
                          "'bf16' (kept bf16 inside an FP8 checkpoint) or 'fp8'", false, false, "checkpoint"},
        {"force", "allow --drop-shared-indexers where transformers would initialise the missing indexers randomly", true},
        {"copy-shards", "copy the unchanged weight shards instead of hard-linking them (hard-linking falls back to "
                        "copying by itself where it fails, e.g. across filesystems)", true}},
       RunExport},
      {"plan", "Pipeline x data-parallel plan of a model on N GPUs from its config.json alone (no weights needed): "
               "the smallest number of pipeline stages whose stages fit in memory (the rest data-parallel), a "
               "contiguous split balancing the estimated per-layer time (train: stages begin only at Full layers), "
               "per-stage weight and workspace memory, which boundaries carry the indices buffer, pipeline efficiency "
               "and the step time estimated from the measured throughputs in docs/benchmarks.md.",
       {{"model", "model directory (only config.json is read)", false, true},
        {"gpus", "number of GPUs", false, true},
        {"seq-len", "tokens per sequence (one sequence = one micro-batch)", false, true},
        {"mode", "train (distillation), eval or search", false, false, "eval"},
        {"sequences", "sequences per step over all replicas (train: global batch; eval: the data; search: "
                      "calibration sequences)", false, false, "16"},
        {"pattern", "IndexCache pattern (F/S string, 1/N, all); default: the config's (search: all-F)"},
        {"pipeline-stages", "force P stages (must divide --gpus); default: the smallest P that fits"},
        {"gpu", "measured device profile: h200 or h100", false, false, "h200"},
        {"gpu-mem-gb", "memory per GPU in GB (1e9 bytes); default: the device's (H200 141, H100 80)"},
        {"reserve-gb", "per GPU, kept free for the CUDA context, library workspaces and allocator slack", false, false, "4"},
        {"chunk", "query rows per forward chunk (sizes the activations and the MoE GEMMs); default: the runtime's "
                  "(8 GiB of activations per chunk)"},
        {"loss", "train: dense or sparse distillation loss", false, false, "dense"},
        {"gpus-per-node", "GPUs per node (stage links across nodes are assumed slower)", false, false, "8"},
        kJson},
       RunPlan},
      {"bench", "GPU benchmarks: the device's ceilings (bf16 GEMM, copy), the fused indexer top-k and sparse MLA "
                "kernels at DeepSeek-V3.2 sizes, and a stack of V3.2-shaped layers with random weights: prefill "
                "time and decode tokens/s per context under patterns all-F, 1/2, 1/4, 1/8. Prints a markdown "
                "table; --json writes the numbers.",
       {{"contexts", "comma-separated context lengths", false, false, "8192,32768,131072"},
        {"layers", "layers in the synthetic stack", false, false, "8"},
        {"patterns", "comma-separated patterns", false, false, "all,1/2,1/4,1/8"},
        {"chunk", "prefill chunk (tokens per forward)", false, false, "8192"},
        {"decode-steps", "decode steps timed per context", false, false, "16"},
        {"decode-batch", "comma-separated batch sizes B: also time batched decode (DsaModel::DecodeStep) of B "
                         "requests each at every --contexts length under every --patterns pattern (pooled caches "
                         "filled with random values, not prefill); e.g. 1,32,64"},
        {"decode-cache", "--decode-batch: comma-separated latent caches to time: bf16 (activation dtype), fp8 "
                         "(kernels/latent_fp8.h rows, read in place by the sparse MLA), fp8-gather (the same "
                         "cache, selected rows dequantised into a bf16 copy first)", false, false, "bf16"},
        {"skip-kernels", "skip the per-kernel section", true},
        {"distill", "also time distillation training steps (forward + fused loss + backward [+ NCCL all-reduce "
                    "under mpirun]) per GPU", true},
        {"distill-seq", "comma-separated sequence lengths for --distill", false, false, "8192,32768"},
        {"distill-layers", "layers of the --distill stack", false, false, "4"},
        {"distill-pattern", "the --distill stack's pattern (default 1/<layers>: layer 0 Full, serving all)"},
        {"distill-modes", "comma-separated distillation losses for --distill: dense, sparse", false, false,
         "dense,sparse"},
        {"distill-moe", "--distill at full size: V3.2's MoE (256 experts of 2048, 8 per token) in every layer, "
                        "FP8-resident random weights (default: a dense MLP of equal FLOPs, bf16)", true},
        {"distill-micro", "sequences per step per data-parallel replica (they stream through the pipeline)", false,
         false, "1"},
        {"distill-chunk", "query rows per chunk of the forward and of the rebuilt teachers (0: automatic)", false,
         false, "0"},
        {"pipeline-stages", "--distill: pipeline stages P (world = P x replicas, under mpirun)", false, false, "1"},
        {"pipeline-link", "--distill: how activations cross stages: nccl (device to device) or mpi (through the "
                          "host)", false, false, "nccl"},
        {"skip-stack", "skip the layer-stack section", true},
        {"indexer-fp8", "the layer stack's prefill runs its indexer in FP8 (Backend::set_indexer_fp8)", true},
        {"search", "also time one step of the pattern search (prefix cache vs full forwards)", true},
        {"search-seq", "comma-separated sequence lengths for --search", false, false, "8192,32768"},
        {"search-layers", "layers of the --search stack", false, false, "16"},
        {"optimizer", "also time the trainer's optimizer step: on the host (gradients down, masters up) "
                      "against on the device (trainer/resident_optimizer.h)", true},
        {"optimizer-layers", "V3.2 indexers (about 14M parameters each) trained by --optimizer", false, false,
         "8"},
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

void LogResidentWeights(const std::string& command, const DsaModel& model) {
  if (model.backend().device() != Device::kCuda) return;
  const std::string rank = g_rank >= 0 ? "[rank " + std::to_string(g_rank) + "] " : "";
  std::fprintf(stderr, "%s%s: weights resident on the GPU: %s\n", rank.c_str(), command.c_str(),
               DescribeResidentBytes(model.ResidentBytes()).c_str());
}

}  // namespace indexcache
