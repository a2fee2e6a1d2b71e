#include "trainer/train_config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>

#include <cmath>
#include <cstdio>
#include <map>

#include "core/file_util.h"
#include "core/limits.h"
#include "model/pattern.h"

namespace indexcache {

namespace {

namespace pb = google::protobuf;

// Keeps the first error only: the text parser stops there anyway, and one line is what the
// command-line front end prints.
class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (has_error_) return;
    has_error_ = true;
    line_ = line;
    column_ = column;
    message_ = message;
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}

  bool has_error() const { return has_error_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& message() const { return message_; }

 private:
  bool has_error_ = false;
  int line_ = 0;
  int column_ = 0;
  std::string message_;
};

class NullErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int, pb::io::ColumnNumber, const std::string&) override {}
};

// Where the text parser stopped, as a field. Protobuf's own messages name the token but not
// always the field ("Expected integer, got: \"long\""), and it reports the errors it finds after
// reading a token (an unknown field, enum value or duplicate) at the token after it, which is often
// on the next line. Re-tokenizing the text up to the error recovers both.
struct TextErrorContext {
  std::string last_field;  // dotted path of the last field name read ("optimizer.lr")
  int last_line = 0, last_column = 0;
  std::string open_field;  // the field being read at the error: a name awaiting its value, or
                           // else the enclosing message ("" at the top level)
};

std::string JoinFields(const std::vector<std::string>& names) {
  std::string path;
  for (const std::string& name : names) path += (path.empty() ? "" : ".") + name;
  return path;
}

TextErrorContext FindErrorContext(const std::string& text, int error_line, int error_column) {
  pb::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  NullErrorCollector ignore;
  pb::io::Tokenizer tokenizer(&input, &ignore);
  tokenizer.set_comment_style(pb::io::Tokenizer::SH_COMMENT_STYLE);
  std::vector<std::string> open;  // enclosing message fields
  std::string name;               // the last field name at the current depth
  TextErrorContext context;
  bool awaiting_value = false;
  while (tokenizer.Next()) {
    const pb::io::Tokenizer::Token& t = tokenizer.current();
    if (t.line > error_line || (t.line == error_line && t.column >= error_column)) break;
    if (t.type == pb::io::Tokenizer::TYPE_IDENTIFIER && !awaiting_value) {
      name = t.text;
      open.push_back(name);
      context.last_field = JoinFields(open);
      open.pop_back();
      context.last_line = t.line;
      context.last_column = t.column;
      awaiting_value = true;
    } else if (t.text == "{" || t.text == "<") {
      open.push_back(name);
      awaiting_value = false;
    } else if (t.text == "}" || t.text == ">") {
      if (!open.empty()) open.pop_back();
      awaiting_value = false;
    } else if (t.text != ":" && t.text != "-") {
      awaiting_value = false;  // a value (or a separator) completes the field
    }
  }
  if (awaiting_value) open.push_back(name);
  context.open_field = JoinFields(open);
  return context;
}

std::string FieldNames(const pb::Descriptor* desc) {
  std::string names;
  for (int i = 0; i < desc->field_count(); ++i) {
    if (i > 0) names += ", ";
    names += desc->field(i)->name();
  }
  return names;
}

std::string EnumNames(const pb::EnumDescriptor* desc) {
  std::string names;
  for (int i = 0; i < desc->value_count(); ++i) {
    if (i > 0) names += ", ";
    names += desc->value(i)->name();
  }
  return names;
}

// "field=value" -> ("field", "value"); false without '='.
bool SplitOverride(const std::string& text, std::string* path, std::string* value) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos) return false;
  *path = text.substr(0, eq);
  *value = text.substr(eq + 1);
  return true;
}

std::string Num(double v) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// Blames a bad value on where it came from: the `--set` that last wrote the field, or the file.
class Resolver {
 public:
  Resolver(std::string source, const std::vector<std::string>& overrides) : source_(std::move(source)) {
    for (const std::string& o : overrides) {
      std::string path, value;
      if (SplitOverride(o, &path, &value)) override_of_[path] = o;
    }
  }

  std::string Origin(const std::string& field) const {
    const auto it = override_of_.find(field);
    return it != override_of_.end() ? "--set " + it->second : source_;
  }
  Status Error(const std::string& field, const std::string& what) const {
    return InvalidArgument(Origin(field) + ": field '" + field + "' " + what);
  }

 private:
  std::string source_;
  std::map<std::string, std::string> override_of_;
};

void FillDefaults(TrainConfig* c) {
  DataConfig* data = c->mutable_data();
  if (!data->has_cross_documents()) data->set_cross_documents(false);
  if (!c->has_micro_batch()) c->set_micro_batch(1);
  if (!c->has_loss_mode()) c->set_loss_mode(TrainConfig::DENSE);
  if (!c->has_served_layers()) c->set_served_layers(TrainConfig::SERVED);

  OptimizerConfig* opt = c->mutable_optimizer();
  if (!opt->has_beta1()) opt->set_beta1(0.9);
  if (!opt->has_beta2()) opt->set_beta2(0.95);
  if (!opt->has_eps()) opt->set_eps(1e-8);
  if (!opt->has_weight_decay()) opt->set_weight_decay(0.0);
  if (!opt->has_on_host()) opt->set_on_host(false);

  ScheduleConfig* sched = c->mutable_schedule();
  if (!sched->has_kind()) sched->set_kind("constant");
  if (!sched->has_warmup_steps()) sched->set_warmup_steps(0);
  if (!sched->has_min_lr()) sched->set_min_lr(0.0);

  if (!c->has_clip_grad_norm()) c->set_clip_grad_norm(1.0);

  CheckpointConfig* ckpt = c->mutable_checkpoint();
  if (!ckpt->has_interval()) ckpt->set_interval(0);
  if (!ckpt->has_keep_last()) ckpt->set_keep_last(3);

  if (!c->has_eval_interval()) c->set_eval_interval(0);
  LogConfig* log = c->mutable_log();
  if (!log->has_interval()) log->set_interval(1);
  if (!c->has_seed()) c->set_seed(0);
  if (!c->has_max_nonfinite_steps()) c->set_max_nonfinite_steps(3);
  if (!c->has_device()) c->set_device("cpu");
  if (!c->parallel().has_pipeline_stages()) c->mutable_parallel()->set_pipeline_stages(1);
}

// Syntax only: the letter count is checked against the model's layers when it loads. Reuses
// IndexPattern::Parse so that the trainer accepts exactly what the other commands accept.
Status CheckPattern(const std::string& pattern, const Resolver& r) {
  if (pattern.empty()) return Status::Ok();
  const bool letters = pattern.find('/') == std::string::npos && pattern != "all" && pattern != "full";
  const int layers = letters ? static_cast<int>(pattern.size()) : 1;
  const auto parsed = IndexPattern::Parse(pattern, layers, r.Origin("pattern") + ": field 'pattern'");
  return parsed.ok() ? Status::Ok() : parsed.status();
}

// Proto3 enums are open: text format and --set accept any number ("loss_mode: 9"), which used to
// train as DENSE. Every enum field, in any sub-message, must hold one of its declared values.
Status CheckEnumsClosed(const pb::Message& msg, const std::string& prefix, const Resolver& r) {
  const pb::Reflection* refl = msg.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  refl->ListFields(msg, &fields);
  for (const pb::FieldDescriptor* field : fields) {
    const std::string name = prefix + field->name();
    if (field->is_repeated()) continue;  // the config has no repeated fields today
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      RETURN_IF_ERROR(CheckEnumsClosed(refl->GetMessage(msg, field), name + ".", r));
    } else if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
      const int value = refl->GetEnumValue(msg, field);
      if (field->enum_type()->FindValueByNumber(value) == nullptr) {
        return r.Error(name, "must be one of " + EnumNames(field->enum_type()) + " (got " + std::to_string(value) + ")");
      }
    }
  }
  return Status::Ok();
}

Status Validate(const TrainConfig& c, const Resolver& r) {
  if (c.model_dir().empty()) return r.Error("model_dir", "is required");
  RETURN_IF_ERROR(CheckPattern(c.pattern(), r));
  if (c.data().path().empty()) return r.Error("data.path", "is required");

  // Sizes are bounded (core/limits.h) so that a typo such as global_batch=1000000000 is one clear
  // line here, not an allocation failure deep in the sampler.
  const auto in_range = [&](const std::string& field, int64_t v, int64_t lo, int64_t hi) -> Status {
    if (v >= lo && v <= hi) return Status::Ok();
    return r.Error(field, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] (got " +
                              std::to_string(v) + ")");
  };
  if (!c.has_seq_len()) return r.Error("seq_len", "is required");
  RETURN_IF_ERROR(in_range("seq_len", c.seq_len(), 1, kMaxSeqLen));
  if (!c.has_global_batch()) return r.Error("global_batch", "is required");
  RETURN_IF_ERROR(in_range("global_batch", c.global_batch(), 1, kMaxBatch));
  RETURN_IF_ERROR(in_range("micro_batch", c.micro_batch(), 1, kMaxBatch));
  // Tokens per step: both factors are bounded, their product must be too (it sizes the batch).
  if (c.global_batch() * c.seq_len() > kMaxBatch * 4096) {
    return r.Error("global_batch", "x seq_len (" + std::to_string(c.global_batch() * c.seq_len()) +
                                       " tokens per step) is too large (max " + std::to_string(kMaxBatch * 4096) + ")");
  }
  if (c.global_batch() % c.micro_batch() != 0) {
    return r.Error("global_batch", "(" + std::to_string(c.global_batch()) +
                                       ") must be a multiple of micro_batch (" +
                                       std::to_string(c.micro_batch()) + ")");
  }
  if (!c.has_steps()) return r.Error("steps", "is required");
  RETURN_IF_ERROR(in_range("steps", c.steps(), 1, kMaxSteps));
  RETURN_IF_ERROR(CheckEnumsClosed(c, "", r));

  // `!(x >= 0)` is also true for NaN, which text format accepts as "nan".
  const OptimizerConfig& opt = c.optimizer();
  if (!opt.has_lr()) return r.Error("optimizer.lr", "is required");
  if (!(opt.lr() >= 0) || std::isinf(opt.lr())) {
    return r.Error("optimizer.lr", "must be a finite number >= 0 (got " + Num(opt.lr()) + ")");
  }
  if (!(opt.beta1() >= 0 && opt.beta1() < 1)) {
    return r.Error("optimizer.beta1", "must be in [0, 1) (got " + Num(opt.beta1()) + ")");
  }
  if (!(opt.beta2() >= 0 && opt.beta2() < 1)) {
    return r.Error("optimizer.beta2", "must be in [0, 1) (got " + Num(opt.beta2()) + ")");
  }
  if (!(opt.eps() > 0) || std::isinf(opt.eps())) {
    return r.Error("optimizer.eps", "must be a finite number > 0 (got " + Num(opt.eps()) + ")");
  }
  if (!(opt.weight_decay() >= 0) || std::isinf(opt.weight_decay())) {
    return r.Error("optimizer.weight_decay",
                   "must be a finite number >= 0 (got " + Num(opt.weight_decay()) + ")");
  }

  const ScheduleConfig& s = c.schedule();
  const std::string& kind = s.kind();
  if (kind != "constant" && kind != "warmup_constant" && kind != "warmup_cosine") {
    return r.Error("schedule.kind",
                   "must be \"constant\", \"warmup_constant\" or \"warmup_cosine\" (got \"" + kind + "\")");
  }
  if (s.warmup_steps() < 0 || s.warmup_steps() > c.steps()) {
    return r.Error("schedule.warmup_steps", "must be in [0, steps=" + std::to_string(c.steps()) + "] (got " +
                                                std::to_string(s.warmup_steps()) + ")");
  }
  // A warm-up given with "constant" would be silently ignored; say so instead.
  if (kind == "constant" && s.warmup_steps() != 0) {
    return r.Error("schedule.warmup_steps",
                   "must be 0 with schedule.kind \"constant\" (use \"warmup_constant\")");
  }
  if (!(s.min_lr() >= 0 && s.min_lr() <= opt.lr())) {
    return r.Error("schedule.min_lr",
                   "must be in [0, optimizer.lr=" + Num(opt.lr()) + "] (got " + Num(s.min_lr()) + ")");
  }

  if (!(c.clip_grad_norm() >= 0)) {
    return r.Error("clip_grad_norm", "must be >= 0, 0 for no clipping (got " + Num(c.clip_grad_norm()) + ")");
  }

  const CheckpointConfig& ck = c.checkpoint();
  if (ck.interval() < 0) {
    return r.Error("checkpoint.interval", "must be >= 0 (got " + std::to_string(ck.interval()) + ")");
  }
  if (ck.dir().empty() && ck.interval() > 0) {
    return r.Error("checkpoint.interval", "is set but checkpoint.dir is empty");
  }
  if (!ck.dir().empty() && ck.keep_last() < 1) {
    return r.Error("checkpoint.keep_last",
                   "must be >= 1 when checkpoint.dir is set (got " + std::to_string(ck.keep_last()) + ")");
  }

  if (c.eval_interval() < 0) {
    return r.Error("eval_interval", "must be >= 0 (got " + std::to_string(c.eval_interval()) + ")");
  }
  if (c.eval_interval() > 0 && c.data().eval_path().empty()) {
    return r.Error("data.eval_path", "is required when eval_interval > 0");
  }
  if (c.log().interval() < 1) {
    return r.Error("log.interval", "must be >= 1 (got " + std::to_string(c.log().interval()) + ")");
  }
  if (c.max_nonfinite_steps() < 1) {
    return r.Error("max_nonfinite_steps",
                   "must be >= 1 (got " + std::to_string(c.max_nonfinite_steps()) + ")");
  }
  if (c.device() != "cpu" && c.device() != "cuda") {
    return r.Error("device", "must be \"cpu\" or \"cuda\" (got \"" + c.device() + "\")");
  }
  if (c.parallel().pipeline_stages() < 1 || c.parallel().pipeline_stages() > 4096) {
    return r.Error("parallel.pipeline_stages",
                   "must be in [1, 4096] (got " + std::to_string(c.parallel().pipeline_stages()) + ")");
  }
  return Status::Ok();
}

}  // namespace

Status ApplyOverride(const std::string& override_text, TrainConfig* config) {
  const std::string where = "--set " + override_text;
  std::string path, value;
  if (!SplitOverride(override_text, &path, &value) || path.empty()) {
    return InvalidArgument(where + ": expected field=value (e.g. optimizer.lr=3e-4)");
  }

  // Walk the dotted path through singular sub-messages.
  pb::Message* msg = config;
  std::string walked;
  size_t begin = 0;
  while (true) {
    const size_t dot = path.find('.', begin);
    const std::string name = path.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin);
    const pb::Descriptor* desc = msg->GetDescriptor();
    const pb::FieldDescriptor* field = desc->FindFieldByName(name);
    const std::string in = walked.empty() ? std::string("the config") : "'" + walked + "'";
    if (field == nullptr) {
      return InvalidArgument(where + ": unknown field '" + name + "' in " + in +
                             " (fields: " + FieldNames(desc) + ")");
    }
    walked += (walked.empty() ? "" : ".") + name;
    if (field->is_repeated()) {
      return InvalidArgument(where + ": field '" + walked + "' is repeated; --set cannot change it");
    }
    const bool is_message = field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE;

    if (dot != std::string::npos) {
      if (!is_message) {
        return InvalidArgument(where + ": field '" + walked + "' is not a message, so it has no field '" +
                               path.substr(dot + 1) + "'");
      }
      msg = msg->GetReflection()->MutableMessage(msg, field);
      begin = dot + 1;
      continue;
    }
    if (is_message) {
      return InvalidArgument(where + ": field '" + walked + "' is a message; set one of its fields (" +
                             FieldNames(field->message_type()) + ")");
    }
    // Strings are taken verbatim so that paths need no quoting; a quoted value is unescaped.
    const bool quoted =
        value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front();
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING && !quoted) {
      msg->GetReflection()->SetString(msg, field, value);
      return Status::Ok();
    }
    pb::TextFormat::Parser parser;
    FirstErrorCollector errors;
    parser.RecordErrorsTo(&errors);
    if (!parser.ParseFieldValueFromString(value, field, msg)) {
      std::string expected = field->type_name();
      if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
        expected = "one of " + EnumNames(field->enum_type());
      }
      return InvalidArgument(where + ": bad value '" + value + "' for field '" + walked + "' (expected " +
                             expected + ")");
    }
    return Status::Ok();
  }
}

Status ResolveTrainConfig(TrainConfig* config, const std::string& source,
                          const std::vector<std::string>& overrides) {
  FillDefaults(config);
  return Validate(*config, Resolver(source, overrides));
}

StatusOr<TrainConfig> ParseTrainConfig(const std::string& text, const std::string& source,
                                       const std::vector<std::string>& overrides) {
  TrainConfig config;
  pb::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    if (errors.has_error()) {
      const TextErrorContext context = FindErrorContext(text, errors.line(), errors.column());
      // Syntax errors ("Expected ...") sit at the offending token, inside `open_field`; the
      // others concern the field just read and are shown at its name.
      const bool syntax = errors.message().rfind("Expected", 0) == 0 || context.last_field.empty();
      const int line = syntax ? errors.line() : context.last_line;
      const int column = syntax ? errors.column() : context.last_column;
      const std::string field = syntax ? context.open_field : context.last_field;
      // Protobuf counts lines and columns from 0; editors count from 1.
      std::string where = source + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1);
      if (!field.empty()) where += ": field '" + field + "'";
      std::string message = errors.message();
      if (message.size() >= 2 && message.compare(message.size() - 2, 2, ": ") == 0) message += "end of file";
      return InvalidArgument(where + ": " + message);
    }
    return InvalidArgument(source + ": not a valid TrainConfig text proto");
  }
  for (const std::string& o : overrides) RETURN_IF_ERROR(ApplyOverride(o, &config));
  RETURN_IF_ERROR(ResolveTrainConfig(&config, source, overrides));
  return config;
}

StatusOr<TrainConfig> LoadTrainConfig(const std::string& path, const std::vector<std::string>& overrides) {
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  return ParseTrainConfig(text, path, overrides);
}

std::string ResolvedConfigText(const TrainConfig& config) {
  std::string text;
  pb::TextFormat::Printer printer;
  printer.PrintToString(config, &text);
  return text;
}

Status CheckWorldSize(const TrainConfig& config, int world_size) {
  if (world_size < 1) {
    return InvalidArgument("world size must be >= 1 (got " + std::to_string(world_size) + ")");
  }
  const int stages = config.parallel().pipeline_stages();
  if (world_size % stages != 0) {
    return InvalidArgument("field 'parallel.pipeline_stages' (" + std::to_string(stages) +
                           ") must divide the number of ranks (" + std::to_string(world_size) + ")");
  }
  const int replicas = world_size / stages;
  const int64_t per_step = config.micro_batch() * replicas;
  if (config.global_batch() % per_step != 0) {
    return InvalidArgument("field 'global_batch' (" + std::to_string(config.global_batch()) +
                           ") must be a multiple of micro_batch (" + std::to_string(config.micro_batch()) +
                           ") x data-parallel replicas (" + std::to_string(replicas) + ")");
  }
  return Status::Ok();
}

int64_t GradAccumulationSteps(const TrainConfig& config, int world_size) {
  return config.global_batch() / (config.micro_batch() * (world_size / config.parallel().pipeline_stages()));
}

std::string LossModeName(TrainConfig::LossMode mode) { return TrainConfig::LossMode_Name(mode); }

}  // namespace indexcache
