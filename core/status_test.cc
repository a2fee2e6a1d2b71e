// Printable(): values echoed in error messages stay on one line (found by the .npy fuzzer: a
// dtype string holding a newline split the error line).
#include "core/status.h"

#include "gtest/gtest.h"

namespace indexcache {
namespace {

TEST(StatusTest, PrintableEscapesControlCharactersAndCuts) {
  EXPECT_EQ(Printable("<f4"), "<f4");
  EXPECT_EQ(Printable("a\nb\r\tc\x01"), "a\\nb\\r\\tc\\x01");
  EXPECT_EQ(Printable(std::string(100, 'x'), 10), "xxxxxxxxxx...");
  EXPECT_EQ(Printable("h\xc3\xa9"), "h\xc3\xa9");  // UTF-8 passes unchanged
}

}  // namespace
}  // namespace indexcache
