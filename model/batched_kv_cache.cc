#include "model/batched_kv_cache.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "core/limits.h"

namespace indexcache {

namespace {

std::string Gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GB", bytes / 1e9);
  return buf;
}

}  // namespace

StatusOr<BatchedKvCache> BatchedKvCache::Create(const DsaModel& model, int64_t pool_rows, const IndexPattern* pattern,
                                                const BatchedKvCacheOptions& options) {
  if (pool_rows < 1 || pool_rows > kMaxPoolRows) {
    return InvalidArgument("batched cache: pool rows must be in [1, " + std::to_string(kMaxPoolRows) + "], got " +
                           std::to_string(pool_rows));
  }
  const ModelConfig& c = model.config();
  const LayerRange& held = model.layer_range();
  if (held.begin != 0 || held.end != c.num_layers) {
    return InvalidArgument("batched cache: the model holds layers [" + std::to_string(held.begin) + ", " +
                           std::to_string(held.end) + ") only; batched decode runs all layers");
  }
  BatchedKvCache cache;
  cache.pool_rows_ = pool_rows;
  cache.pattern_ = pattern ? *pattern : model.pattern();
  RETURN_IF_ERROR(model.CheckPattern(cache.pattern_));
  Backend& be = model.backend();
  const DType adt = be.activation_dtype();
  if (options.fp8_latents) {
    ASSIGN_OR_RETURN(cache.fp8_layout_, MakeLatentFp8Layout(c.kv_lora_rank, c.qk_rope_head_dim));
    cache.fp8_latents_ = true;
  }
  // Latent row: its FP8 format's bytes, or latent_dim values of the activation dtype.
  const DType latent_dtype = cache.fp8_latents_ ? DType::kU8 : adt;
  const int64_t latent_cols = cache.fp8_latents_ ? cache.fp8_layout_.row_bytes() : c.latent_dim();
  int64_t full = 0;
  for (int l = 0; l < c.num_layers; ++l) full += cache.pattern_.is_full(l);
  const double bytes = double(pool_rows) * (double(c.num_layers) * latent_cols * DTypeSize(latent_dtype) +
                                            double(full) * c.index_head_dim * DTypeSize(adt));
  // Allocated outright (the backend's pool hands cached blocks back to the driver when it must);
  // running out is one error line with the size, not an abort.
  try {
    for (int l = 0; l < c.num_layers; ++l) {
      cache.latent.push_back(be.Alloc(latent_dtype, {pool_rows, latent_cols}));
      cache.index_keys.push_back(cache.pattern_.is_full(l) ? be.Alloc(adt, {pool_rows, c.index_head_dim})
                                                           : Tensor());
    }
  } catch (const AllocationError& e) {
    return InvalidArgument("batched cache: " + std::to_string(pool_rows) + " rows x " + std::to_string(c.num_layers) +
                           " layers need " + Gb(bytes) + " of " + (be.FreeDeviceBytes() >= 0 ? "device" : "host") +
                           " memory: " + e.what());
  }
  cache.free_[0] = pool_rows;
  return cache;
}

StatusOr<int64_t> BatchedKvCache::Add(int64_t capacity) {
  if (capacity < 1 || capacity > kMaxSeqLen) {
    return InvalidArgument("batched cache: request capacity must be in [1, " + std::to_string(kMaxSeqLen) + "], got " +
                           std::to_string(capacity));
  }
  if (num_requests() >= kMaxRequests) {
    return InvalidArgument("batched cache: already holds the most requests (" + std::to_string(kMaxRequests) + ")");
  }
  for (auto it = free_.begin(); it != free_.end(); ++it) {  // first fit
    const int64_t begin = it->first, end = it->second;
    if (end - begin < capacity) continue;
    free_.erase(it);
    if (begin + capacity < end) free_[begin + capacity] = end;
    const int64_t id = next_id_++;
    slots_[id] = Slot{begin, capacity, 0};
    return id;
  }
  return InvalidArgument("batched cache: no free range of " + std::to_string(capacity) + " rows for a new request (" +
                         std::to_string(free_rows()) + " of " + std::to_string(pool_rows_) +
                         " rows free, the largest range " + std::to_string(largest_free_range()) + ")");
}

Status BatchedKvCache::Remove(int64_t id) {
  auto it = slots_.find(id);
  if (it == slots_.end()) return NotFound(id);
  int64_t begin = it->second.base, end = begin + it->second.capacity;
  slots_.erase(it);
  // Merge with the free ranges on either side.
  auto next = free_.lower_bound(begin);
  if (next != free_.end() && next->first == end) {
    end = next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->second == begin) {
      begin = prev->first;
      free_.erase(prev);
    }
  }
  free_[begin] = end;
  return Status::Ok();
}

const BatchedKvCache::Slot* BatchedKvCache::Find(int64_t id) const {
  auto it = slots_.find(id);
  return it == slots_.end() ? nullptr : &it->second;
}

std::vector<int64_t> BatchedKvCache::requests() const {
  std::vector<int64_t> ids;
  ids.reserve(slots_.size());
  for (const auto& [id, slot] : slots_) ids.push_back(id);
  return ids;
}

int64_t BatchedKvCache::free_rows() const {
  int64_t n = 0;
  for (const auto& [begin, end] : free_) n += end - begin;
  return n;
}

int64_t BatchedKvCache::largest_free_range() const {
  int64_t n = 0;
  for (const auto& [begin, end] : free_) n = std::max(n, end - begin);
  return n;
}

Status BatchedKvCache::SetLength(int64_t id, int64_t length) {
  auto it = slots_.find(id);
  if (it == slots_.end()) return NotFound(id);
  if (length < 0 || length > it->second.capacity) {
    return InvalidArgument("batched cache: request " + std::to_string(id) + " holds " +
                           std::to_string(it->second.capacity) + " tokens; length " + std::to_string(length) +
                           " is outside [0, " + std::to_string(it->second.capacity) + "]");
  }
  it->second.length = length;
  return Status::Ok();
}

StatusOr<std::vector<Tensor>> BatchedKvCache::IndexKeyViews(int64_t id) {
  const Slot* s = Find(id);
  if (!s) return NotFound(id);
  std::vector<Tensor> views;
  for (const Tensor& keys : index_keys) {
    views.push_back(keys.empty() ? Tensor() : keys.Slice0(s->base, s->base + s->capacity));
  }
  return views;
}

StatusOr<KvCache> BatchedKvCache::View(int64_t id) {
  const Slot* s = Find(id);
  if (!s) return NotFound(id);
  if (fp8_latents_) {
    return InvalidArgument("batched cache: the latents are stored as FP8 rows; there is no activation-dtype view of "
                           "them (DsaModel::Prefill handles FP8 caches)");
  }
  KvCache view;
  view.capacity = s->capacity;
  view.length = s->length;
  view.pattern = pattern_;
  for (const Tensor& l : latent) view.latent.push_back(l.Slice0(s->base, s->base + s->capacity));
  ASSIGN_OR_RETURN(view.index_keys, IndexKeyViews(id));
  return view;
}

Status BatchedKvCache::NotFound(int64_t id) const {
  return InvalidArgument("batched cache: no request " + std::to_string(id) + " (never added, or removed)");
}

}  // namespace indexcache
