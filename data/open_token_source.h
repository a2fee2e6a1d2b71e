// OpenTokenSource: opens training data by path, whatever its format.
//
//   data.ictok                 a token shard (data/token_shard.h)
//   corpus_text_document       a Megatron dataset prefix: corpus_text_document.idx exists
//   corpus_text_document.idx   the same prefix, named by either of its files (.idx or .bin)
//   tokens.npy                 an int32/int64 .npy of shape [T] or [B, T]; each row is a document
//                              (loaded into memory: for small data and tests)
//   a.ictok,b.ictok,prefix     several of the above, one after another (ConcatTokenSource)
//
// A file of another name whose first bytes are the shard magic is opened as a shard too. Paths may
// not contain commas. Every error is one line naming the path at fault.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "data/token_source.h"

namespace indexcache {

StatusOr<std::shared_ptr<TokenSource>> OpenTokenSource(const std::string& spec);

}  // namespace indexcache
