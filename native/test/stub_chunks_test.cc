// The stub's reading of chunked bodies (native/src/stub/chunks.h) held against the engine's
// parser: every byte range the stub sends as a count must be chunk data to the engine (the
// engine skips it unread: skippable() covers it), and where the stub sees the body end, the
// engine must end the message at the same byte. Bodies are generated with odd sizes, extensions,
// bare LFs, upper-case digits, trailers and garbage, and fed in random pieces, as a program's
// reads and writes would cut them.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "http/parser.h"

extern "C" {
#include "stub/chunks.h"
}

namespace rbinder {
namespace {

class Completion final : public http::Observer {
 public:
  void on_message_begin(size_t) override {}
  void on_head_complete(const http::MessageHead&, size_t) override {}
  void on_message_complete(size_t offset) override {
    if (!done) at = base + offset;
    done = true;
  }
  uint64_t base = 0;
  bool done = false;
  uint64_t at = 0;
};

struct Outcome {
  uint64_t counted = 0;  // body bytes the stub sent as counts
  bool ended = false;    // the stub saw the body end
};

// Feeds `body` (after a chunked request head) to the stub in pieces and, along the stub's
// reading, to the engine's parser; checks that they agree.
Outcome check(const std::string& body, std::mt19937_64& rng) {
  const std::string head = "POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  http::Parser parser(http::Role::kRequests);
  Completion observer;
  parser.feed(reinterpret_cast<const uint8_t*>(head.data()), head.size(), observer);
  rb_chunk c{};
  c.state = RB_CH_SIZE;
  Outcome out;
  uint64_t pos = 0;  // bytes of body given to both
  auto feed_engine = [&](uint64_t from, uint64_t to) {
    observer.base = head.size() + from;
    parser.feed(reinterpret_cast<const uint8_t*>(body.data()) + from, to - from, observer);
  };
  while (pos < body.size() && chunk_following(&c)) {
    const uint64_t piece = std::min<uint64_t>(body.size() - pos, 1 + rng() % 300);
    std::vector<uint8_t> bytes(body.begin() + static_cast<long>(pos), body.begin() + static_cast<long>(pos + piece));
    rb_segs s{};
    const uint64_t walked = chunk_walk(&c, bytes.data(), bytes.size(), pos, &s);
    EXPECT_LE(walked, piece);
    uint64_t at = pos;
    for (uint32_t i = 0; i < s.n; i++) {
      EXPECT_GE(s.from[i], at);
      EXPECT_LE(s.to[i], pos + walked);
      feed_engine(at, s.from[i]);
      // What the stub counts, the engine skips as body it need not see.
      EXPECT_EQ(parser.status(), http::Status::kOk);
      EXPECT_GE(parser.skippable(), s.to[i] - s.from[i]) << "at " << s.from[i];
      if (parser.skippable() < s.to[i] - s.from[i]) return out;
      parser.skip(s.to[i] - s.from[i], observer);
      out.counted += s.to[i] - s.from[i];
      at = s.to[i];
    }
    feed_engine(at, pos + walked);
    pos += walked;
    if (c.state == RB_CH_DONE) {
      out.ended = true;
      EXPECT_TRUE(observer.done) << "the stub saw the end, the engine did not";
      EXPECT_EQ(observer.at, head.size() + pos) << "the body ends at another byte";
    } else if (chunk_following(&c)) {
      EXPECT_EQ(walked, piece);
      EXPECT_FALSE(observer.done) << "the engine ended the body, the stub did not";
    }
  }
  return out;
}

std::string chunked(const std::vector<size_t>& sizes, bool upper, const std::string& eol, const std::string& ext,
                    const std::string& trailer) {
  // (Two static arrays picked by a ternary gave wrong digits under g++ 12's -fsanitize=address.)
  const std::string digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  for (size_t n : sizes) {
    std::string hex;
    for (size_t v = n; v > 0; v /= 16) hex.insert(hex.begin(), digits[v % 16]);
    out += hex + ext + eol + std::string(n, 'd') + eol;
  }
  return out + "0" + ext + eol + trailer + eol;
}

TEST(StubChunks, CountsChunkDataAndEndsWhereTheEngineDoes) {
  std::mt19937_64 rng(20261208);
  for (const std::string eol : {"\r\n", "\n"}) {
    for (const std::string ext : {"", ";name=value", " ;x", "\t;q=\"a b\""}) {
      const Outcome o = check(chunked({5, 70000, 1, 4096}, true, eol, ext, ""), rng);
      EXPECT_TRUE(o.ended) << ext;
      EXPECT_GT(o.counted, 70000u) << ext;
    }
  }
  // A trailer field: the stub stops at it and leaves the rest to the engine.
  const Outcome trailer = check(chunked({3000}, false, "\r\n", "", "Expires: never\r\n"), rng);
  EXPECT_FALSE(trailer.ended);
  EXPECT_EQ(trailer.counted, 3000u);
}

TEST(StubChunks, StopsAtWhatItDoesNotFollow) {
  std::mt19937_64 rng(1);
  for (const std::string bad : {"x\r\n", "\r\n", "5\r\nabcdeX", "5\rXabcde\r\n", "5\x01\r\nabcde\r\n",
                                "fffffffffffffffffffff\r\n", "5;\x7f\r\nabcde\r\n"}) {
    const Outcome o = check(bad + "0\r\n\r\n", rng);
    EXPECT_FALSE(o.ended) << bad;
  }
}

TEST(StubChunks, GeneratedBodiesAgreeWithTheEngine) {
  std::mt19937_64 rng(42);
  const std::vector<std::string> exts = {"", ";a", ";a=b", " ; a = \"b\"", "\t", ";\x80"};
  const std::vector<std::string> eols = {"\r\n", "\n"};
  int ended = 0;
  for (int i = 0; i < 3000; i++) {
    std::vector<size_t> sizes(rng() % 5);
    for (size_t& n : sizes) n = rng() % 4 == 0 ? 1 + rng() % 100000 : 1 + rng() % 2000;
    std::string body = chunked(sizes, rng() % 2, eols[rng() % 2], exts[rng() % exts.size()], rng() % 10 ? "" : "T: v\r\n");
    if (rng() % 6 == 0) body[rng() % body.size()] = static_cast<char>(rng());  // garbage somewhere
    if (rng() % 6 == 0) body += "GET /next HTTP/1.1\r\n\r\n";                 // a request behind it
    if (check(body, rng).ended) ended++;
    if (HasFailure()) return;
  }
  EXPECT_GT(ended, 1500);
}

// Short ranges are copied with the bytes around them, except one at the call's start (its event
// may have been claimed for a count); a range is measured within the call's bytes.
TEST(StubChunks, KeepsTheLongRanges) {
  rb_segs s{};
  segs_add(&s, 0, 10);
  segs_add(&s, 20, 30);
  segs_add(&s, 30, 2000);  // merges with the one before
  segs_add(&s, 3000, 3100);
  segs_add(&s, 4000, ~0ull);
  ASSERT_EQ(s.n, 4u);
  EXPECT_EQ(s.to[1], 2000u);
  segs_keep_long(&s, 1024, 4500);  // the last one has 500 bytes in the call
  ASSERT_EQ(s.n, 2u);
  EXPECT_EQ(s.from[0], 0u);
  EXPECT_EQ(s.from[1], 20u);
  EXPECT_EQ(s.to[1], 2000u);
  rb_segs full{};
  for (uint64_t i = 0; i < RB_SEGS + 2; i++) segs_add(&full, i * 10, i * 10 + 5);
  EXPECT_EQ(full.n, static_cast<uint32_t>(RB_SEGS));  // the ranges past the last slot are copied
}

}  // namespace
}  // namespace rbinder
