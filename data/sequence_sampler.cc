#include "data/sequence_sampler.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <random>

namespace indexcache {

namespace {

// SplitMix64's finaliser: a bijection on 64-bit words that scatters nearby inputs.
uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The epoch's generator seed. Not simply seed + epoch: that would make seed s's epoch 1 replay
// seed s+1's epoch 0, so runs launched with neighbouring seeds would share most of their data order.
uint64_t EpochSeed(uint64_t seed, int64_t epoch) { return Mix64(Mix64(seed) ^ static_cast<uint64_t>(epoch)); }

// Uniform in [0, n) without bias (Lemire's multiply-and-reject), built only on mt19937_64's
// standardised output so the order is the same with every standard library.
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n) {
  unsigned __int128 m = static_cast<unsigned __int128>(rng()) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng()) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

}  // namespace

std::vector<int64_t> SequenceSampler::EpochOrder(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::mt19937_64 rng(EpochSeed(seed, epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(order[i], order[UniformBelow(rng, static_cast<uint64_t>(i) + 1)]);
  }
  return order;
}

StatusOr<std::unique_ptr<SequenceSampler>> SequenceSampler::Create(std::shared_ptr<TokenSource> source,
                                                                   SamplerOptions options) {
  if (source == nullptr) return InvalidArgument("sequence sampler: no token source");
  if (options.seq_len < 1) {
    return InvalidArgument(source->name() + ": seq_len must be at least 1, got " + std::to_string(options.seq_len));
  }
  if (options.global_batch < 1) {
    return InvalidArgument(source->name() + ": global_batch must be at least 1, got " +
                           std::to_string(options.global_batch));
  }
  std::unique_ptr<SequenceSampler> s(new SequenceSampler());
  s->options_ = options;
  const int64_t docs = source->documents();
  s->doc_start_.resize(static_cast<size_t>(docs) + 1);
  int64_t longest = 0;
  for (int64_t d = 0; d < docs; ++d) {
    const int64_t len = source->document_length(d);
    longest = std::max(longest, len);
    s->doc_start_[d + 1] = s->doc_start_[d] + (options.cross_documents ? len : len / options.seq_len);
  }
  s->windows_ = options.cross_documents ? s->doc_start_.back() / options.seq_len : s->doc_start_.back();
  if (s->windows_ == 0) {
    return InvalidArgument(source->name() + ": no sequence of " + std::to_string(options.seq_len) + " tokens: " +
                           (options.cross_documents
                                ? "the source holds only " + std::to_string(source->total_tokens()) + " tokens"
                                : "the longest of " + std::to_string(docs) + " documents has " +
                                      std::to_string(longest) + " tokens (cross_documents is off)"));
  }
  s->source_ = std::move(source);
  return s;
}

std::pair<int64_t, int64_t> SequenceSampler::WindowStart(int64_t w) const {
  IC_CHECK(w >= 0 && w < windows_);
  // The last document whose prefix sum is <= the key; documents contributing nothing share their
  // successor's prefix sum, and upper_bound steps past them.
  const int64_t key = options_.cross_documents ? w * options_.seq_len : w;
  const int64_t d = (std::upper_bound(doc_start_.begin(), doc_start_.end(), key) - doc_start_.begin()) - 1;
  const int64_t offset = options_.cross_documents ? key - doc_start_[d] : (key - doc_start_[d]) * options_.seq_len;
  return {d, offset};
}

StatusOr<std::vector<int32_t>> SequenceSampler::ReadWindow(int64_t w) const {
  if (w < 0 || w >= windows_) {
    return InvalidArgument(source_->name() + ": window " + std::to_string(w) + " out of range [0, " +
                           std::to_string(windows_) + ")");
  }
  std::vector<int32_t> out(static_cast<size_t>(options_.seq_len));
  auto [doc, offset] = WindowStart(w);
  if (!options_.cross_documents) {
    RETURN_IF_ERROR(source_->CopyTokens(doc, offset, offset + options_.seq_len, out.data()));
    return out;
  }
  // A packed window runs on through as many following documents as it needs.
  for (int64_t filled = 0; filled < options_.seq_len; ++doc, offset = 0) {
    const int64_t take = std::min(options_.seq_len - filled, source_->document_length(doc) - offset);
    if (take > 0) RETURN_IF_ERROR(source_->CopyTokens(doc, offset, offset + take, out.data() + filled));
    filled += take;
  }
  return out;
}

const std::vector<int64_t>& SequenceSampler::Order(int64_t epoch) {
  for (const auto& c : cache_) {
    if (c.epoch == epoch) return c.order;
  }
  CachedOrder& slot = cache_[next_slot_];
  next_slot_ ^= 1;
  slot.order = EpochOrder(windows_, options_.seed, epoch);
  slot.epoch = epoch;
  return slot.order;
}

int64_t SequenceSampler::WindowAt(int64_t epoch, int64_t position) {
  IC_CHECK(epoch >= 0 && position >= 0 && position < windows_);
  return Order(epoch)[position];
}

StatusOr<SequenceSampler::Batch> SequenceSampler::NextBatch(int rank, int world) {
  const int64_t g = options_.global_batch;
  if (world < 1 || rank < 0 || rank >= world) {
    return InvalidArgument(source_->name() + ": rank " + std::to_string(rank) + " is not in a world of " +
                           std::to_string(world));
  }
  if (g % world != 0) {
    return InvalidArgument(source_->name() + ": global_batch " + std::to_string(g) +
                           " does not divide evenly among " + std::to_string(world) + " ranks");
  }
  const int64_t per_rank = g / world;
  Batch batch;
  batch.reserve(static_cast<size_t>(per_rank));
  for (int64_t i = 0; i < per_rank; ++i) {
    // Stream position (epoch_, position_) + rank * per_rank + i, carried into later epochs.
    const int64_t ahead = position_ + rank * per_rank + i;
    const int64_t w = WindowAt(epoch_ + ahead / windows_, ahead % windows_);
    ASSIGN_OR_RETURN(auto seq, ReadWindow(w));
    if (options_.vocab_size > 0) {
      for (size_t j = 0; j < seq.size(); ++j) {
        if (seq[j] >= 0 && seq[j] < options_.vocab_size) continue;
        const auto [doc, offset] = WindowStart(w);
        return InvalidArgument(source_->name() + ": document " + std::to_string(doc) + ", token " +
                               std::to_string(offset + static_cast<int64_t>(j)) + ": id " + std::to_string(seq[j]) +
                               " is outside the model's vocabulary [0, " + std::to_string(options_.vocab_size) +
                               ")" + (options_.cross_documents ? " (offsets count from the window's first document)" : ""));
      }
    }
    batch.push_back(std::move(seq));
  }
  epoch_ += (position_ + g) / windows_;
  position_ = (position_ + g) % windows_;
  return batch;
}

SamplerCursor SequenceSampler::cursor() const {
  SamplerCursor c;
  c.epoch = epoch_;
  c.position = position_;
  c.seed = options_.seed;
  c.seq_len = options_.seq_len;
  c.cross_documents = options_.cross_documents;
  c.windows = windows_;
  return c;
}

Status SequenceSampler::Restore(const Cursor& c) {
  const std::string what = "sampler cursor: ";
  if (c.seed != options_.seed || c.seq_len != options_.seq_len || c.cross_documents != options_.cross_documents) {
    return InvalidArgument(what + "taken with seed " + std::to_string(c.seed) + ", seq_len " +
                           std::to_string(c.seq_len) + ", cross_documents " + (c.cross_documents ? "on" : "off") +
                           "; this sampler has seed " + std::to_string(options_.seed) + ", seq_len " +
                           std::to_string(options_.seq_len) + ", cross_documents " +
                           (options_.cross_documents ? "on" : "off"));
  }
  if (c.windows != windows_) {
    return InvalidArgument(what + "taken over " + std::to_string(c.windows) + " sequences per epoch, but " +
                           source_->name() + " yields " + std::to_string(windows_) + " (the data changed)");
  }
  if (c.epoch < 0 || c.position < 0 || c.position >= windows_) {
    return InvalidArgument(what + "epoch " + std::to_string(c.epoch) + ", position " + std::to_string(c.position) +
                           " out of range for " + std::to_string(windows_) + " sequences per epoch");
  }
  epoch_ = c.epoch;
  position_ = c.position;
  return Status::Ok();
}

// ---- JSON ----

nlohmann::json CursorToJson(const SamplerCursor& c) {
  return nlohmann::json{{"epoch", c.epoch},     {"position", c.position},
                        {"seed", c.seed},       {"seq_len", c.seq_len},
                        {"cross_documents", c.cross_documents}, {"windows", c.windows}};
}

namespace {

Status ReadInt(const nlohmann::json& j, const char* field, int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) ||
      (!it->is_number_unsigned() && it->get<int64_t>() < 0)) {
    return InvalidArgument(std::string("sampler cursor: field '") + field + "' must be a non-negative integer");
  }
  *out = it->is_number_unsigned() ? static_cast<int64_t>(it->get<uint64_t>()) : it->get<int64_t>();
  return Status::Ok();
}

}  // namespace

StatusOr<SamplerCursor> CursorFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return InvalidArgument("sampler cursor: expected a JSON object");
  SamplerCursor c;
  RETURN_IF_ERROR(ReadInt(j, "epoch", &c.epoch));
  RETURN_IF_ERROR(ReadInt(j, "position", &c.position));
  RETURN_IF_ERROR(ReadInt(j, "seq_len", &c.seq_len));
  RETURN_IF_ERROR(ReadInt(j, "windows", &c.windows));
  // The seed is a full 64-bit unsigned value.
  auto seed = j.find("seed");
  if (seed == j.end() || !seed->is_number_integer() || (!seed->is_number_unsigned() && seed->get<int64_t>() < 0)) {
    return InvalidArgument("sampler cursor: field 'seed' must be a non-negative integer");
  }
  c.seed = seed->get<uint64_t>();
  auto cross = j.find("cross_documents");
  if (cross == j.end() || !cross->is_boolean()) {
    return InvalidArgument("sampler cursor: field 'cross_documents' must be true or false");
  }
  c.cross_documents = cross->get<bool>();
  return c;
}

}  // namespace indexcache
