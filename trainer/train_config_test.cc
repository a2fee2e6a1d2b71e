#include "trainer/train_config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace indexcache {
namespace {

// The smallest config that validates; tests add or break one thing at a time.
constexpr char kMinimal[] = R"(
model_dir: "m"
data { path: "t.npy" }
seq_len: 16
global_batch: 4
steps: 10
optimizer { lr: 1e-3 }
)";

std::string ErrorOf(const std::string& text, const std::vector<std::string>& overrides = {}) {
  const auto config = ParseTrainConfig(text, "x.textproto", overrides);
  EXPECT_FALSE(config.ok()) << "expected an error for:\n" << text;
  return config.ok() ? "" : config.status().message();
}

TEST(TrainConfigTest, LoadsTinyExample) {
  const auto config = LoadTrainConfig("configs/distill_tiny.textproto", {});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->model_dir(), "tests/data/dsv32_moe_groups");
  EXPECT_EQ(config->seq_len(), 32);
  EXPECT_EQ(config->global_batch(), 4);
  EXPECT_EQ(config->micro_batch(), 2);
  EXPECT_EQ(config->steps(), 10);
  EXPECT_EQ(config->loss_mode(), TrainConfig::DENSE);
  EXPECT_EQ(config->data().path(), "tests/data/dsv32_moe_groups/tokens.npy");
  EXPECT_EQ(config->device(), "cpu");
}

TEST(TrainConfigTest, LoadsV32Example) {
  const auto config = LoadTrainConfig("configs/distill_v32.textproto", {});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->pattern(), "1/4");
  EXPECT_EQ(config->seq_len(), 131072);
  EXPECT_EQ(config->global_batch(), 16);
  EXPECT_EQ(config->steps(), 1000);
  EXPECT_DOUBLE_EQ(config->optimizer().lr(), 1e-3);
  EXPECT_EQ(config->loss_mode(), TrainConfig::SPARSE);
  EXPECT_EQ(config->device(), "cuda");
  EXPECT_TRUE(CheckWorldSize(*config, 8).ok());
  EXPECT_EQ(GradAccumulationSteps(*config, 8), 2);
}

TEST(TrainConfigTest, MissingFileNamesIt) {
  const auto config = LoadTrainConfig("configs/no_such.textproto", {});
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("configs/no_such.textproto"), std::string::npos);
}

TEST(TrainConfigTest, FillsDefaults) {
  const auto config = ParseTrainConfig(kMinimal, "x.textproto");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->micro_batch(), 1);
  EXPECT_EQ(config->loss_mode(), TrainConfig::DENSE);
  EXPECT_DOUBLE_EQ(config->optimizer().beta1(), 0.9);
  EXPECT_DOUBLE_EQ(config->optimizer().beta2(), 0.95);
  EXPECT_DOUBLE_EQ(config->optimizer().eps(), 1e-8);
  EXPECT_DOUBLE_EQ(config->optimizer().weight_decay(), 0.0);
  EXPECT_EQ(config->schedule().kind(), "constant");
  EXPECT_EQ(config->schedule().warmup_steps(), 0);
  EXPECT_DOUBLE_EQ(config->clip_grad_norm(), 1.0);
  EXPECT_EQ(config->checkpoint().keep_last(), 3);
  EXPECT_EQ(config->checkpoint().interval(), 0);
  EXPECT_EQ(config->log().interval(), 1);
  EXPECT_EQ(config->max_nonfinite_steps(), 3);
  EXPECT_EQ(config->device(), "cpu");
  EXPECT_FALSE(config->data().cross_documents());
  EXPECT_TRUE(config->pattern().empty());  // the model's own pattern
}

TEST(TrainConfigTest, ExplicitZeroIsNotReplacedByDefault) {
  const auto config = ParseTrainConfig(std::string(kMinimal) + "clip_grad_norm: 0\n", "x.textproto");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_DOUBLE_EQ(config->clip_grad_norm(), 0.0);
}

TEST(TrainConfigTest, ResolvedTextRoundTrips) {
  const auto config = LoadTrainConfig("configs/distill_v32.textproto", {"optimizer.lr=2e-4"});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const std::string text = ResolvedConfigText(*config);
  // Every default is written out, so the saved config means the same under other defaults.
  EXPECT_NE(text.find("beta2: 0.95"), std::string::npos) << text;
  EXPECT_NE(text.find("lr: 0.0002"), std::string::npos) << text;
  EXPECT_NE(text.find("loss_mode: SPARSE"), std::string::npos) << text;
  const auto again = ParseTrainConfig(text, "saved.textproto");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(ResolvedConfigText(*again), text);
}

TEST(TrainConfigTest, UnknownFieldNamesFileLineAndField) {
  const std::string msg =
      ErrorOf(std::string(kMinimal) + "schedule {\n  kind: \"constant\"\n  warmup: 3\n}\n");
  EXPECT_EQ(msg.rfind("x.textproto:10:3: field 'schedule.warmup': ", 0), 0u) << msg;
  EXPECT_NE(msg.find("no field named \"warmup\""), std::string::npos) << msg;
}

TEST(TrainConfigTest, DuplicateFieldNamesIt) {
  const std::string msg = ErrorOf(std::string(kMinimal) + "steps: 3\n");
  EXPECT_EQ(msg.rfind("x.textproto:8:1: field 'steps': ", 0), 0u) << msg;
}

TEST(TrainConfigTest, BadEnumNamesFieldAndLine) {
  // Protobuf notices the bad value only at the next token (here the end of the file, line 9);
  // the error points at the field instead.
  const std::string msg = ErrorOf(std::string(kMinimal) + "loss_mode: MEDIUM\n");
  EXPECT_EQ(msg.rfind("x.textproto:8:1: field 'loss_mode': ", 0), 0u) << msg;
  EXPECT_NE(msg.find("MEDIUM"), std::string::npos) << msg;
}

TEST(TrainConfigTest, SyntaxErrorNamesLine) {
  std::string msg = ErrorOf("model_dir: \"m\"\nseq_len 16 16\n");
  EXPECT_EQ(msg.rfind("x.textproto:2:9: field 'seq_len': Expected", 0), 0u) << msg;
  msg = ErrorOf("data { path: \"t\" }\n}\n");  // a stray brace: reported where it is
  EXPECT_EQ(msg, "x.textproto:2:1: Expected identifier, got: }");
  msg = ErrorOf("optimizer { lr: 1e-3\n");  // unterminated message
  EXPECT_EQ(msg, "x.textproto:2:1: field 'optimizer': Expected identifier, got: end of file");
}

TEST(TrainConfigTest, WrongTypeNamesField) {
  const std::string msg = ErrorOf("# comment\noptimizer {\n  lr: \"fast\"\n}\n");
  EXPECT_EQ(msg.rfind("x.textproto:3:7: field 'optimizer.lr': ", 0), 0u) << msg;
}

TEST(TrainConfigTest, ErrorsAreOneLine) {
  for (const std::string& text :
       {std::string("a: 1"), std::string("seq_len: {"), std::string(kMinimal) + "steps: -1"}) {
    const std::string msg = ErrorOf(text);
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

struct InvalidCase {
  std::string extra;  // appended to kMinimal (a later value of a field replaces nothing: it is an error)
  std::vector<std::string> overrides;
  std::string field;  // must appear in the message as 'field'
};

TEST(TrainConfigTest, InvalidValuesNameTheField) {
  const std::vector<InvalidCase> cases = {
      {"", {"seq_len=0"}, "seq_len"},
      {"", {"steps=-3"}, "steps"},
      {"", {"global_batch=0"}, "global_batch"},
      {"micro_batch: 3\n", {}, "global_batch"},
      {"", {"micro_batch=0"}, "micro_batch"},
      {"", {"optimizer.lr=-1e-4"}, "optimizer.lr"},
      {"", {"optimizer.lr=nan"}, "optimizer.lr"},
      {"", {"optimizer.beta1=1"}, "optimizer.beta1"},
      {"", {"optimizer.beta2=-0.1"}, "optimizer.beta2"},
      {"", {"optimizer.eps=0"}, "optimizer.eps"},
      {"", {"optimizer.weight_decay=-1"}, "optimizer.weight_decay"},
      {"schedule { kind: \"linear\" }\n", {}, "schedule.kind"},
      {"schedule { kind: \"warmup_cosine\" warmup_steps: 11 }\n", {}, "schedule.warmup_steps"},
      {"schedule { warmup_steps: 2 }\n", {}, "schedule.warmup_steps"},
      {"schedule { kind: \"warmup_cosine\" min_lr: 1 }\n", {}, "schedule.min_lr"},
      {"clip_grad_norm: -1\n", {}, "clip_grad_norm"},
      {"checkpoint { dir: \"c\" keep_last: 0 }\n", {}, "checkpoint.keep_last"},
      {"checkpoint { interval: 5 }\n", {}, "checkpoint.interval"},
      {"eval_interval: 5\n", {}, "data.eval_path"},
      {"log { interval: 0 }\n", {}, "log.interval"},
      {"max_nonfinite_steps: 0\n", {}, "max_nonfinite_steps"},
      {"device: \"tpu\"\n", {}, "device"},
      {"pattern: \"FSX\"\n", {}, "pattern"},
      {"pattern: \"SF\"\n", {}, "pattern"},
      {"pattern: \"2/3\"\n", {}, "pattern"},
      {"", {"model_dir="}, "model_dir"},
      {"", {"data.path="}, "data.path"},
  };
  for (const InvalidCase& c : cases) {
    const std::string msg = ErrorOf(kMinimal + c.extra, c.overrides);
    EXPECT_NE(msg.find("field '" + c.field + "'"), std::string::npos) << c.extra << " -> " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(TrainConfigTest, MissingRequiredFieldsAreNamed) {
  EXPECT_NE(ErrorOf("").find("field 'model_dir' is required"), std::string::npos);
  EXPECT_NE(ErrorOf("model_dir: \"m\" data { path: \"t\" } global_batch: 1 steps: 1 optimizer { lr: 0 }")
                .find("field 'seq_len' is required"),
            std::string::npos);
  EXPECT_NE(ErrorOf("model_dir: \"m\" data { path: \"t\" } seq_len: 1 global_batch: 1 steps: 1")
                .find("field 'optimizer.lr' is required"),
            std::string::npos);
}

// Issue 12: proto3 enums are open, so `--set loss_mode=9` printed 9 and trained as DENSE.
TEST(TrainConfigTest, UnknownEnumNumbersAreRejected) {
  const std::string from_set = ErrorOf(kMinimal, {"loss_mode=9"});
  EXPECT_NE(from_set.find("loss_mode"), std::string::npos) << from_set;
  EXPECT_NE(from_set.find("DENSE, SPARSE"), std::string::npos) << from_set;
  const std::string from_file = ErrorOf(std::string(kMinimal) + "loss_mode: 7\n");
  EXPECT_NE(from_file.find("loss_mode"), std::string::npos) << from_file;
  EXPECT_TRUE(ParseTrainConfig(kMinimal, "x.textproto", {"loss_mode=1"}).ok());
}

// Issue 12: `--set global_batch=1000000000` aborted on an allocation failure.
TEST(TrainConfigTest, SizesAreBounded) {
  for (const std::string o : {"global_batch=1000000000", "seq_len=1000000000000", "micro_batch=4611686018427387904",
                              "steps=4611686018427387904"}) {
    SCOPED_TRACE(o);
    const std::string e = ErrorOf(kMinimal, {o});
    EXPECT_EQ(e.rfind("--set " + o + ": field '" + o.substr(0, o.find('=')) + "'", 0), 0u) << e;
  }
  // Each bounded alone, but too many tokens per step together.
  const std::string e = ErrorOf(kMinimal, {"global_batch=1048576", "seq_len=1048576"});
  EXPECT_NE(e.find("tokens per step"), std::string::npos) << e;
}

TEST(TrainConfigTest, ErrorBlamesTheOverrideThatSetTheField) {
  const std::string from_set = ErrorOf(kMinimal, {"optimizer.lr=-1"});
  EXPECT_EQ(from_set.rfind("--set optimizer.lr=-1: field 'optimizer.lr'", 0), 0u) << from_set;
  const std::string from_file = ErrorOf(std::string(kMinimal) + "steps: 0\n");
  EXPECT_NE(from_file.find("x.textproto"), std::string::npos) << from_file;
}

TEST(TrainConfigTest, OverridesScalarsNestedAndEnums) {
  const auto config = ParseTrainConfig(
      kMinimal, "x.textproto",
      {"optimizer.lr=3e-4", "loss_mode=SPARSE", "schedule.kind=warmup_cosine", "schedule.warmup_steps=2",
       "checkpoint.dir=/tmp/ckpt dir", "data.cross_documents=true", "seed=42", "pattern=\"1/2\"",
       "seq_len=64", "seq_len=128"});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_DOUBLE_EQ(config->optimizer().lr(), 3e-4);
  EXPECT_EQ(config->loss_mode(), TrainConfig::SPARSE);
  EXPECT_EQ(config->schedule().kind(), "warmup_cosine");
  EXPECT_EQ(config->schedule().warmup_steps(), 2);
  EXPECT_EQ(config->checkpoint().dir(), "/tmp/ckpt dir");
  EXPECT_TRUE(config->data().cross_documents());
  EXPECT_EQ(config->seed(), 42u);
  EXPECT_EQ(config->pattern(), "1/2");
  EXPECT_EQ(config->seq_len(), 128);  // the last override wins
}

TEST(TrainConfigTest, OverrideErrorsNameTheOverride) {
  const auto error = [](const std::string& o) { return ErrorOf(kMinimal, {o}); };
  std::string msg = error("optimizer.learning_rate=1");
  EXPECT_NE(msg.find("--set optimizer.learning_rate=1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown field 'learning_rate' in 'optimizer'"), std::string::npos) << msg;
  msg = error("nosuch=1");
  EXPECT_NE(msg.find("unknown field 'nosuch'"), std::string::npos) << msg;
  msg = error("loss_mode=MEDIUM");
  EXPECT_NE(msg.find("bad value 'MEDIUM' for field 'loss_mode' (expected one of DENSE, SPARSE)"),
            std::string::npos)
      << msg;
  msg = error("seq_len=abc");
  EXPECT_NE(msg.find("bad value 'abc' for field 'seq_len'"), std::string::npos) << msg;
  msg = error("seq_len=1.5");
  EXPECT_NE(msg.find("for field 'seq_len'"), std::string::npos) << msg;
  msg = error("optimizer.lr=1e-3 junk");
  EXPECT_NE(msg.find("for field 'optimizer.lr'"), std::string::npos) << msg;
  msg = error("seed=-1");
  EXPECT_NE(msg.find("for field 'seed'"), std::string::npos) << msg;
  msg = error("optimizer=1");
  EXPECT_NE(msg.find("field 'optimizer' is a message"), std::string::npos) << msg;
  msg = error("seq_len.x=1");
  EXPECT_NE(msg.find("field 'seq_len' is not a message"), std::string::npos) << msg;
  msg = error("seq_len");
  EXPECT_NE(msg.find("expected field=value"), std::string::npos) << msg;
}

TEST(TrainConfigTest, WorldSizeMustDivideTheBatch) {
  const auto config = ParseTrainConfig(std::string(kMinimal) + "micro_batch: 2\n", "x.textproto");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_TRUE(CheckWorldSize(*config, 1).ok());
  EXPECT_TRUE(CheckWorldSize(*config, 2).ok());
  EXPECT_EQ(GradAccumulationSteps(*config, 1), 2);
  const Status s = CheckWorldSize(*config, 3);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("global_batch"), std::string::npos) << s.message();
}

TEST(TrainConfigTest, LossModeNames) {
  EXPECT_EQ(LossModeName(TrainConfig::DENSE), "DENSE");
  EXPECT_EQ(LossModeName(TrainConfig::SPARSE), "SPARSE");
}

}  // namespace
}  // namespace indexcache
