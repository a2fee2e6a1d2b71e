#include "trainer/metrics_log.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "trainer/fs_util.h"
#include "core/test_util.h"

namespace indexcache {
namespace {

// ---- A minimal reader, independent of the writer's helpers where it matters ----

uint64_t LoadLe(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

// Splits a TFRecord stream, checking both CRCs of each record.
std::vector<std::string> ReadTfRecords(const std::string& bytes) {
  std::vector<std::string> records;
  size_t at = 0;
  while (at < bytes.size()) {
    EXPECT_GE(bytes.size() - at, 12u) << "truncated header at " << at;
    if (bytes.size() - at < 12) break;
    const uint64_t len = LoadLe(bytes, at, 8);
    EXPECT_EQ(UnmaskCrc32c(static_cast<uint32_t>(LoadLe(bytes, at + 8, 4))), Crc32c(bytes.data() + at, 8));
    EXPECT_GE(bytes.size() - at - 12, len + 4) << "truncated record at " << at;
    if (bytes.size() - at - 12 < len + 4) break;
    const std::string data = bytes.substr(at + 12, len);
    EXPECT_EQ(UnmaskCrc32c(static_cast<uint32_t>(LoadLe(bytes, at + 12 + len, 4))),
              Crc32c(data.data(), data.size()));
    records.push_back(data);
    at += 12 + len + 4;
  }
  return records;
}

struct Field {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t varint = 0;  // wire types 0, 1 (raw bits) and 5 (raw bits)
  std::string bytes;    // wire type 2
};

uint64_t ReadVarint(const std::string& s, size_t* at) {
  uint64_t v = 0;
  for (int shift = 0; *at < s.size() && shift < 64; shift += 7) {
    const uint8_t b = static_cast<uint8_t>(s[(*at)++]);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return v;
  }
  ADD_FAILURE() << "bad varint";
  return v;
}

std::vector<Field> DecodeMessage(const std::string& s) {
  std::vector<Field> fields;
  size_t at = 0;
  while (at < s.size()) {
    const uint64_t key = ReadVarint(s, &at);
    Field f;
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire_type = static_cast<uint32_t>(key & 7);
    if (f.wire_type == 0) {
      f.varint = ReadVarint(s, &at);
    } else if (f.wire_type == 1) {
      f.varint = LoadLe(s, at, 8);
      at += 8;
    } else if (f.wire_type == 5) {
      f.varint = LoadLe(s, at, 4);
      at += 4;
    } else if (f.wire_type == 2) {
      const uint64_t len = ReadVarint(s, &at);
      f.bytes = s.substr(at, len);
      at += len;
    } else {
      ADD_FAILURE() << "unexpected wire type " << f.wire_type;
      break;
    }
    fields.push_back(f);
  }
  EXPECT_EQ(at, s.size());
  return fields;
}

double AsDouble(uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}
float AsFloat(uint64_t bits) {
  const uint32_t b = static_cast<uint32_t>(bits);
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

struct DecodedScalar {
  double wall_time = 0;
  int64_t step = 0;
  std::string tag;
  float value = 0;
};

DecodedScalar DecodeScalarEvent(const std::string& event) {
  DecodedScalar out;
  for (const Field& f : DecodeMessage(event)) {
    if (f.number == 1 && f.wire_type == 1) {
      out.wall_time = AsDouble(f.varint);
    } else if (f.number == 2 && f.wire_type == 0) {
      out.step = static_cast<int64_t>(f.varint);
    } else if (f.number == 5 && f.wire_type == 2) {
      const std::vector<Field> summary = DecodeMessage(f.bytes);
      EXPECT_EQ(summary.size(), 1u);
      EXPECT_EQ(summary[0].number, 1u);
      for (const Field& v : DecodeMessage(summary[0].bytes)) {
        if (v.number == 1 && v.wire_type == 2) {
          out.tag = v.bytes;
        } else if (v.number == 2 && v.wire_type == 5) {
          out.value = AsFloat(v.varint);
        } else
          ADD_FAILURE() << "unexpected Summary.Value field " << v.number;
      }
    } else {
      ADD_FAILURE() << "unexpected Event field " << f.number;
    }
  }
  return out;
}

// ---- CRC32C ----

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  const std::string ones(32, '\xff');
  EXPECT_EQ(Crc32c(ones.data(), ones.size()), 0x62A8AB43u);  // RFC 3720 B.4
  EXPECT_EQ(Crc32c("", 0), 0u);
}

TEST(Crc32cTest, ExtendsInPieces) {
  const std::string s = "hello, tensorboard";
  EXPECT_EQ(Crc32c(s.data() + 5, s.size() - 5, Crc32c(s.data(), 5)), Crc32c(s.data(), s.size()));
}

TEST(Crc32cTest, MaskRoundTrips) {
  for (uint32_t crc : {0u, 1u, 0xE3069283u, 0xffffffffu, 0x8A9136AAu}) {
    EXPECT_EQ(UnmaskCrc32c(MaskCrc32c(crc)), crc);
    EXPECT_EQ(MaskCrc32c(crc), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
  }
}

// ---- Records and events ----

TEST(TfRecordTest, FramesAndReadsBack) {
  std::string stream = FrameTfRecord("abc") + FrameTfRecord("") + FrameTfRecord(std::string(300, 'x'));
  EXPECT_EQ(stream.size(), (12 + 3 + 4) + (12 + 4) + (12 + 300 + 4u));
  const std::vector<std::string> records = ReadTfRecords(stream);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0], "abc");
  EXPECT_EQ(records[1], "");
  EXPECT_EQ(records[2], std::string(300, 'x'));
}

TEST(TfRecordTest, FileVersionEventBytes) {
  const std::vector<Field> fields = DecodeMessage(EncodeFileVersionEvent(1700000000.5));
  ASSERT_EQ(fields.size(), 2u);
  EXPECT_EQ(fields[0].number, 1u);
  EXPECT_EQ(fields[0].wire_type, 1u);
  EXPECT_EQ(AsDouble(fields[0].varint), 1700000000.5);
  EXPECT_EQ(fields[1].number, 3u);
  EXPECT_EQ(fields[1].bytes, "brain.Event:2");
}

TEST(TfRecordTest, ScalarEventBytes) {
  // Fixed bytes: Event{wall_time: 2.0, step: 300, summary{value{tag: "loss", simple_value: 1.5}}}.
  const std::string expected(
      "\x09\x00\x00\x00\x00\x00\x00\x00\x40"  // wall_time 2.0
      "\x10\xac\x02"                          // step 300
      "\x2a\x0d\x0a\x0b"                      // summary { value {
      "\x0a\x04loss"                          //   tag "loss"
      "\x15\x00\x00\xc0\x3f",                 //   simple_value 1.5 } }
      9 + 3 + 4 + 6 + 5);
  EXPECT_EQ(EncodeScalarEvent(2.0, 300, "loss", 1.5f), expected);

  const DecodedScalar d = DecodeScalarEvent(EncodeScalarEvent(1.25, -7, "kl/layer_4", -0.75f));
  EXPECT_EQ(d.wall_time, 1.25);
  EXPECT_EQ(d.step, -7);
  EXPECT_EQ(d.tag, "kl/layer_4");
  EXPECT_EQ(d.value, -0.75f);
}

TEST(TensorBoardWriterTest, WritesEventFile) {
  const std::string dir = JoinPath(MakeTempDir(), "tb/run1");  // created on demand
  auto writer = TensorBoardWriter::Create(dir);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  const std::string path = (*writer)->path();
  const std::string prefix = JoinPath(dir, "events.out.tfevents.");
  ASSERT_EQ(path.rfind(prefix, 0), 0u) << path;
  EXPECT_EQ(path.substr(path.find('.', prefix.size()) + 1), HostName()) << path;

  StepMetrics m;
  m.step = 12;
  m.loss = 1.25;
  m.lr = 3e-4;
  m.grad_norm = 0.5;
  m.tokens_per_s = 12345;
  m.extra = {{"kl/layer_4", 0.125}};
  ASSERT_TRUE((*writer)->Write(m).ok());
  ASSERT_TRUE((*writer)->WriteScalars(13, {{"eval_loss", 2.0}}).ok());

  // A second writer in the same second gets its own file.
  auto second = TensorBoardWriter::Create(dir);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_NE((*second)->path(), path);

  const auto bytes = ReadFileToString(path);
  ASSERT_TRUE(bytes.ok());
  const std::vector<std::string> records = ReadTfRecords(*bytes);
  ASSERT_EQ(records.size(), 1u + 5u + 1u);
  const std::vector<Field> first = DecodeMessage(records[0]);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_GT(AsDouble(first[0].varint), 1.5e9);
  EXPECT_EQ(first[1].bytes, "brain.Event:2");

  const std::vector<std::pair<std::string, float>> want = {
      {"loss", 1.25f}, {"lr", 3e-4f}, {"grad_norm", 0.5f}, {"tokens_per_s", 12345.f}, {"kl/layer_4", 0.125f}};
  for (size_t i = 0; i < want.size(); ++i) {
    const DecodedScalar d = DecodeScalarEvent(records[1 + i]);
    EXPECT_EQ(d.step, 12);
    EXPECT_EQ(d.tag, want[i].first);
    EXPECT_EQ(d.value, want[i].second);
    EXPECT_GT(d.wall_time, 1.5e9);
  }
  const DecodedScalar eval = DecodeScalarEvent(records.back());
  EXPECT_EQ(eval.step, 13);
  EXPECT_EQ(eval.tag, "eval_loss");
  EXPECT_EQ(eval.value, 2.0f);
}

// ---- JSON lines ----

TEST(JsonlWriterTest, OneObjectPerLineFlushedAsWritten) {
  const std::string path = JoinPath(MakeTempDir(), "logs/metrics.jsonl");
  auto writer = JsonlWriter::Open(path);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  StepMetrics m;
  m.step = 1;
  m.loss = 2.5;
  m.lr = 1e-3;
  m.grad_norm = 0.25;
  m.tokens_per_s = 1000;
  m.extra = {{"kl/layer_0", 0.5}, {"bad", std::numeric_limits<double>::quiet_NaN()}};
  ASSERT_TRUE((*writer)->Write(m).ok());
  // Read while the writer is still open: every line is already in the file.
  auto text = ReadFileToString(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text,
            "{\"step\":1,\"loss\":2.5,\"lr\":0.001,\"grad_norm\":0.25,\"tokens_per_s\":1000.0,"
            "\"kl/layer_0\":0.5,\"bad\":null}\n");

  ASSERT_TRUE((*writer)->WriteScalars(2, {{"eval_loss", 1.75}}).ok());
  writer->reset();
  // Reopening appends (a resumed run), unless told to truncate.
  auto again = JsonlWriter::Open(path);
  ASSERT_TRUE(again.ok());
  m.step = 3;
  ASSERT_TRUE((*again)->Write(m).ok());

  text = ReadFileToString(path);
  ASSERT_TRUE(text.ok());
  std::istringstream lines(*text);
  std::vector<nlohmann::json> parsed;
  for (std::string line; std::getline(lines, line);) parsed.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(parsed.size(), 3u);
  EXPECT_EQ(parsed[0]["step"], 1);
  EXPECT_DOUBLE_EQ(parsed[0]["loss"].get<double>(), 2.5);
  EXPECT_TRUE(parsed[0]["bad"].is_null());
  EXPECT_EQ(parsed[1]["step"], 2);
  EXPECT_DOUBLE_EQ(parsed[1]["eval_loss"].get<double>(), 1.75);
  EXPECT_EQ(parsed[2]["step"], 3);

  auto truncating = JsonlWriter::Open(path, /*append=*/false);
  ASSERT_TRUE(truncating.ok());
  text = ReadFileToString(path);
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(text->empty());
}

TEST(JsonlWriterTest, UnwritablePathIsNamed) {
  const std::string file = JoinPath(MakeTempDir(), "plain_file");
  ASSERT_TRUE(WriteFileAtomic(file, "x").ok());
  auto writer = JsonlWriter::Open(JoinPath(file, "m.jsonl"));  // parent is a file
  ASSERT_FALSE(writer.ok());
  EXPECT_NE(writer.status().message().find("plain_file"), std::string::npos) << writer.status().message();
}

// ---- Progress line ----

TEST(ProgressLineTest, Format) {
  StepMetrics m;
  m.step = 12;
  m.loss = 1.23449;
  m.lr = 3e-4;
  m.grad_norm = 0.8123;
  m.tokens_per_s = 12345;
  EXPECT_EQ(FormatProgressLine(m, 1000, 3720),
            "step 12/1000 | loss 1.2345 | lr 3.0e-04 | grad 0.812 | 12.3k tok/s | ETA 1h02m");
  m.loss = std::numeric_limits<double>::quiet_NaN();
  m.tokens_per_s = 950;
  EXPECT_EQ(FormatProgressLine(m, 1000, -1),
            "step 12/1000 | loss nan | lr 3.0e-04 | grad 0.812 | 950 tok/s | ETA --");
}

TEST(ProgressLineTest, RatesAndDurations) {
  EXPECT_EQ(FormatRate(0), "0");
  EXPECT_EQ(FormatRate(999.4), "999");
  EXPECT_EQ(FormatRate(999.6), "1.0k");
  EXPECT_EQ(FormatRate(12345), "12.3k");
  EXPECT_EQ(FormatRate(4.56e6), "4.6M");
  EXPECT_EQ(FormatRate(2e9), "2.0G");
  EXPECT_EQ(FormatRate(std::nan("")), "--");
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(42.4), "42s");
  EXPECT_EQ(FormatDuration(59.6), "1m00s");
  EXPECT_EQ(FormatDuration(725), "12m05s");
  EXPECT_EQ(FormatDuration(3720), "1h02m");
  EXPECT_EQ(FormatDuration(3 * 86400 + 4 * 3600 + 5), "3d04h");
  EXPECT_EQ(FormatDuration(std::numeric_limits<double>::infinity()), "--");
}

// Issue 12: metrics.jsonl repeated steps after a resume. The resumed run drops what the
// interrupted one logged after its checkpoint (and a line cut short by the kill).
TEST(JsonlTruncateTest, KeepsOnlyStepsUpToTheResumedOne) {
  char tmpl[] = "/tmp/indexcache_jsonl_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/m.jsonl";
  ASSERT_TRUE(WriteFileAtomic(path, "{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"eval_loss\": 1}\n"
                                    "{\"step\": 3, \"loss\": 1}\n{\"step\": 4, \"lo").ok());
  ASSERT_TRUE(TruncateJsonlAfterStep(path, 2).ok());
  auto text = ReadFileToString(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"eval_loss\": 1}\n");
  EXPECT_TRUE(TruncateJsonlAfterStep(std::string(tmpl) + "/absent.jsonl", 2).ok());
  EXPECT_EQ(std::system(("rm -rf " + std::string(tmpl)).c_str()), 0);
}

}  // namespace
}  // namespace indexcache
