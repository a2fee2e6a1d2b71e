// A CLI mutation test: seeded mutations of the fixtures (config.json values and bytes, the
// safetensors header, token .npy files, a training config, a checkpoint's trainer_state.json) run
// through the real binary's info / eval / train. Each run must end in one of two ways:
//   exit 0 with a valid result (eval: a finite loss), or
//   exit 1 with exactly one "indexcache <command>: error: ..." line on stderr (warning/notice
//   lines may precede it).
// A signal, a timeout, another exit code or any other stderr output (a trace, a sanitizer report,
// a second error line) fails that mutation's test case. Mutation i is reproducible from its seed.
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/test_util.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

constexpr int kMutations = 300;
const char kBinary[] = "tools/indexcache";
const char kGlm[] = "tests/data/glm_shared_bf16";  // 4 layers, one shard, 36-token rows

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

CliRun RunCli(const std::string& args, const std::string& dir) {
  const std::string cmd = "timeout 30 " + std::string(kBinary) + " " + args + " >" + dir + "/stdout 2>" + dir + "/stderr";
  const int status = std::system(cmd.c_str());
  CliRun r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = ReadBytes(dir + "/stdout");
  r.err = ReadBytes(dir + "/stderr");
  return r;
}

// The contract, or a description of how the run broke it.
std::string CheckContract(const CliRun& r, const std::string& command) {
  if (r.exit_code == 0) {
    if (command == "eval") {
      const size_t at = r.out.find("loss ");
      if (at == std::string::npos) return "exit 0 without a loss line";
      const double loss = std::strtod(r.out.c_str() + at + 5, nullptr);
      if (!std::isfinite(loss)) return "exit 0 with a non-finite loss: " + r.out;
    }
    return "";
  }
  if (r.exit_code != 1) return "exit code " + std::to_string(r.exit_code) + " (a signal or a timeout)";
  // stderr: optional warning/notice lines, then exactly one error line.
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin < r.err.size()) {
    const size_t end = r.err.find('\n', begin);
    if (end == std::string::npos) return "stderr does not end with a newline";
    lines.push_back(r.err.substr(begin, end - begin));
    begin = end + 1;
  }
  if (lines.empty()) return "exit 1 with nothing on stderr";
  const std::string prefix = "indexcache " + command + ": error: ";
  if (lines.back().rfind(prefix, 0) != 0) return "the last stderr line is not an error line";
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    if (lines[i].rfind("warning: ", 0) != 0 && lines[i].rfind("notice: ", 0) != 0) return "extra stderr line";
  }
  return "";
}

// ---- mutations ---------------------------------------------------------------------------------

json Interesting(std::mt19937& rng) {
  static const std::vector<json> kValues = {
      0, -1, 1, 2, 3, 64, 2147483648LL, 4294967299LL, 4611686018427387904LL, -9223372036854775807LL - 1,
      18446744073709551615ULL, 1e308, -1e308, 0.5, -0.0, "", "x", "yarn", "fp8", "\n", "../../etc/passwd",
      true, false, nullptr, json::array(), json::object(), json::parse("[[[[1]]]]"), json::parse("[1, 2]")};
  return kValues[std::uniform_int_distribution<size_t>(0, kValues.size() - 1)(rng)];
}

// Sets one leaf (found by flattening) to an interesting value, or deletes it.
void MutateJsonValue(json* j, std::mt19937& rng) {
  const json flat = j->flatten();
  if (flat.empty()) return;
  auto it = flat.begin();
  std::advance(it, std::uniform_int_distribution<size_t>(0, flat.size() - 1)(rng));
  const json::json_pointer ptr(it.key());
  if (std::uniform_int_distribution<int>(0, 9)(rng) == 0 && ptr.parent_pointer() != json::json_pointer()) {
    json& parent = (*j)[ptr.parent_pointer()];
    if (parent.is_object()) {
      parent.erase(ptr.back());
      return;
    }
  }
  (*j)[ptr] = Interesting(rng);
}

// Byte-level damage: flips, interesting bytes, truncation, a duplicated chunk.
void MutateBytes(std::string* s, std::mt19937& rng, size_t begin = 0, size_t end = std::string::npos) {
  end = std::min(end, s->size());
  if (begin >= end) return;
  auto pos = [&] { return std::uniform_int_distribution<size_t>(begin, end - 1)(rng); };
  switch (std::uniform_int_distribution<int>(0, 4)(rng)) {
    case 0:
      for (int i = 0; i < 3; ++i) (*s)[pos()] ^= static_cast<char>(1 << std::uniform_int_distribution<int>(0, 7)(rng));
      break;
    case 1: {
      const char kBytes[] = {'\0', '\xff', '9', '-', '[', '"', ',', '.', 'e', '\n'};
      (*s)[pos()] = kBytes[std::uniform_int_distribution<int>(0, 9)(rng)];
      break;
    }
    case 2:
      s->resize(pos());
      break;
    case 3: {
      const size_t p = pos(), n = std::min<size_t>(64, end - p);
      s->insert(p, s->substr(p, n));
      break;
    }
    default:
      s->insert(pos(), std::string(1, static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng))));
  }
}

class CliMutationTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("mutation");
    model_ = dir_ + "/model";
    ASSERT_EQ(std::system(("mkdir -p " + model_ + " && cp " + std::string(kGlm) + "/config.json " + kGlm +
                           "/model.safetensors " + kGlm + "/tokens.npy " + model_)
                              .c_str()),
              0);
  }
  void TearDown() override { EXPECT_EQ(std::system(("rm -rf " + dir_).c_str()), 0); }

  std::string Eval() { return "eval --model " + model_ + " --data " + model_ + "/tokens.npy --seq-len 18"; }
  // A short training run on the tiny MoE fixture, with its sizes pinned so that no mutation can
  // make it legitimately slow.
  std::string Train(const std::string& config, const std::string& extra = "") {
    return "train --config " + config + " --set seq_len=32 --set global_batch=4 --set micro_batch=2 --set eval_interval=0"
           " --set checkpoint.interval=1 --set checkpoint.dir=" + dir_ + "/ckpt --set log.jsonl=" + dir_ +
           "/m.jsonl --set log.tensorboard_dir= --stop-after-step 2 " + extra;
  }

  std::string dir_, model_;
};

TEST_P(CliMutationTest, OneCleanLineOrAValidResult) {
  const int seed = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(seed) * 2654435761u + 1);
  std::string command, args, what;
  switch (seed % 6) {
    case 0:
    case 1: {  // config.json: one value replaced or removed, then info or eval
      json j = json::parse(ReadBytes(model_ + "/config.json"));
      MutateJsonValue(&j, rng);
      WriteBytes(model_ + "/config.json", j.dump());
      command = seed % 2 ? "eval" : "info";
      what = "config.json value";
      break;
    }
    case 2: {  // config.json bytes
      std::string text = ReadBytes(model_ + "/config.json");
      MutateBytes(&text, rng);
      WriteBytes(model_ + "/config.json", text);
      command = "eval";
      what = "config.json bytes";
      break;
    }
    case 3: {  // the safetensors header: a value (shape, dtype, offsets) or its bytes
      std::string file = ReadBytes(model_ + "/model.safetensors");
      uint64_t len = 0;
      std::memcpy(&len, file.data(), 8);
      if (rng() % 2) {
        json header = json::parse(file.substr(8, len));
        MutateJsonValue(&header, rng);
        std::string h = header.dump();
        while ((8 + h.size()) % 8) h.push_back(' ');
        const uint64_t new_len = h.size();
        file = std::string(reinterpret_cast<const char*>(&new_len), 8) + h + file.substr(8 + len);
      } else {
        MutateBytes(&file, rng, 0, 8 + len);
      }
      WriteBytes(model_ + "/model.safetensors", file);
      command = "eval";
      what = "safetensors header";
      break;
    }
    case 4: {  // token data: header or ids
      std::string npy = ReadBytes(model_ + "/tokens.npy");
      MutateBytes(&npy, rng, 0, rng() % 3 ? 128 : npy.size());
      WriteBytes(model_ + "/tokens.npy", npy);
      command = "eval";
      what = "tokens.npy";
      break;
    }
    default: {  // training: the text config, or the state of a checkpoint resumed from
      command = "train";
      std::string text = ReadBytes("configs/distill_tiny.textproto");
      if (rng() % 2) {
        MutateBytes(&text, rng);
        what = "train config";
        WriteBytes(dir_ + "/train.textproto", text);
        args = Train(dir_ + "/train.textproto");
      } else {
        WriteBytes(dir_ + "/train.textproto", text);
        const CliRun first = RunCli(Train(dir_ + "/train.textproto"), dir_);
        ASSERT_EQ(first.exit_code, 0) << first.err;
        const std::string state = dir_ + "/ckpt/step_00000002/trainer_state.json";
        json j = json::parse(ReadBytes(state));
        MutateJsonValue(&j, rng);
        WriteBytes(state, j.dump());
        what = "trainer_state.json";
        args = Train(dir_ + "/train.textproto", "--resume --set steps=4 --stop-after-step 3");
      }
    }
  }
  if (args.empty()) args = command == "info" ? "info --model " + model_ : Eval();
  const CliRun r = RunCli(args, dir_);
  const std::string broken = CheckContract(r, command);
  EXPECT_EQ(broken, "") << "mutation " << seed << " (" << what << "): indexcache " << args << "\nexit "
                        << r.exit_code << "\nstderr:\n" << r.err.substr(0, 2000);
}

INSTANTIATE_TEST_SUITE_P(Seeds, CliMutationTest, ::testing::Range(0, kMutations));

}  // namespace
}  // namespace indexcache
