#include "data/token_source.h"

#include <algorithm>
#include <cstring>

namespace indexcache {

Status TokenSource::CheckRange(int64_t doc, int64_t begin, int64_t end) const {
  if (doc < 0 || doc >= documents()) {
    return InvalidArgument(name() + ": document " + std::to_string(doc) + " out of range [0, " +
                           std::to_string(documents()) + ")");
  }
  const int64_t len = document_length(doc);
  if (begin < 0 || end < begin || end > len) {
    return InvalidArgument(name() + ": token range [" + std::to_string(begin) + ", " + std::to_string(end) +
                           ") out of range for document " + std::to_string(doc) + " of length " +
                           std::to_string(len));
  }
  return Status::Ok();
}

StatusOr<std::vector<int32_t>> TokenSource::ReadTokens(int64_t doc, int64_t begin, int64_t end) const {
  RETURN_IF_ERROR(CheckRange(doc, begin, end));
  std::vector<int32_t> out(static_cast<size_t>(end - begin));
  RETURN_IF_ERROR(CopyTokens(doc, begin, end, out.data()));
  return out;
}

StatusOr<std::vector<int32_t>> TokenSource::ReadDocument(int64_t doc) const {
  if (doc < 0 || doc >= documents()) return CheckRange(doc, 0, 0);
  return ReadTokens(doc, 0, document_length(doc));
}

StatusOr<int32_t> TokenSource::Token(int64_t doc, int64_t i) const {
  int32_t t = 0;
  RETURN_IF_ERROR(CopyTokens(doc, i, i + 1, &t));
  return t;
}

// ---- InMemoryTokenSource ----

StatusOr<std::shared_ptr<InMemoryTokenSource>> InMemoryTokenSource::Create(std::vector<std::vector<int32_t>> docs,
                                                                           std::string name) {
  std::shared_ptr<InMemoryTokenSource> s(new InMemoryTokenSource());
  s->name_ = std::move(name);
  for (size_t d = 0; d < docs.size(); ++d) {
    for (size_t i = 0; i < docs[d].size(); ++i) {
      if (docs[d][i] < 0) {
        return InvalidArgument(s->name_ + ": negative token id " + std::to_string(docs[d][i]) + " in document " +
                               std::to_string(d) + " at position " + std::to_string(i));
      }
    }
    s->total_ += static_cast<int64_t>(docs[d].size());
  }
  s->docs_ = std::move(docs);
  return s;
}

int64_t InMemoryTokenSource::document_length(int64_t doc) const {
  IC_CHECK(doc >= 0 && doc < documents());
  return static_cast<int64_t>(docs_[doc].size());
}

Status InMemoryTokenSource::CopyTokens(int64_t doc, int64_t begin, int64_t end, int32_t* out) const {
  RETURN_IF_ERROR(CheckRange(doc, begin, end));
  if (end > begin) std::memcpy(out, docs_[doc].data() + begin, static_cast<size_t>(end - begin) * sizeof(int32_t));
  return Status::Ok();
}

// ---- ConcatTokenSource ----

StatusOr<std::shared_ptr<ConcatTokenSource>> ConcatTokenSource::Create(
    std::vector<std::shared_ptr<TokenSource>> parts) {
  if (parts.empty()) return InvalidArgument("token source list is empty");
  std::shared_ptr<ConcatTokenSource> s(new ConcatTokenSource());
  s->first_doc_.push_back(0);
  for (size_t k = 0; k < parts.size(); ++k) {
    if (parts[k] == nullptr) return InvalidArgument("token source list: part " + std::to_string(k) + " is null");
    s->name_ += (k ? "," : "") + parts[k]->name();
    s->first_doc_.push_back(s->first_doc_.back() + parts[k]->documents());
    s->total_ += parts[k]->total_tokens();
  }
  s->parts_ = std::move(parts);
  return s;
}

std::pair<size_t, int64_t> ConcatTokenSource::Locate(int64_t doc) const {
  // The last part whose first document is <= doc; empty parts are skipped by upper_bound.
  const size_t k = static_cast<size_t>(std::upper_bound(first_doc_.begin(), first_doc_.end(), doc) -
                                       first_doc_.begin()) - 1;
  return {k, doc - first_doc_[k]};
}

int64_t ConcatTokenSource::document_length(int64_t doc) const {
  IC_CHECK(doc >= 0 && doc < documents());
  const auto [k, local] = Locate(doc);
  return parts_[k]->document_length(local);
}

Status ConcatTokenSource::CopyTokens(int64_t doc, int64_t begin, int64_t end, int32_t* out) const {
  RETURN_IF_ERROR(CheckRange(doc, begin, end));
  const auto [k, local] = Locate(doc);
  return parts_[k]->CopyTokens(local, begin, end, out);
}

}  // namespace indexcache
