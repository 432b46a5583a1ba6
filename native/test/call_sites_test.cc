// The engine's call-site checks (engine/call_sites.h) on this process's own libc: the wrappers'
// syscall instructions are approved with the instruction before them and, where it is short, a
// cave; anything it cannot vouch for is refused.
#include "engine/call_sites.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "arch/x86_64_decode.h"
#include "stub/abi.h"

namespace rbinder::fast {
namespace {

std::vector<Mapping> own_maps() {
  std::ifstream in("/proc/self/maps");
  std::stringstream text;
  text << in.rdbuf();
  return parse_maps(text.str());
}

// The syscall instructions of libc's function `name`, found by decoding its first bytes.
std::vector<uint64_t> syscalls_in(const char* name) {
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  EXPECT_NE(libc, nullptr);
  const auto* fn = static_cast<const uint8_t*>(libc ? dlsym(libc, name) : nullptr);
  EXPECT_NE(fn, nullptr) << name;
  std::vector<uint64_t> out;
  for (size_t pos = 0; fn && pos < 160;) {
    arch::DecodedInstruction d;
    const int n = arch::decode_x86_64(fn + pos, 16, &d);
    if (n == 0) break;
    if (n == 2 && fn[pos] == 0x0f && fn[pos + 1] == 0x05) out.push_back(reinterpret_cast<uint64_t>(fn + pos));
    pos += static_cast<size_t>(n);
  }
  return out;
}

SiteVerdict check(CallSites& sites, const std::vector<Mapping>& maps, uint64_t sys) {
  return sites.check_in(0, maps, sys, reinterpret_cast<const uint8_t*>(sys - 16), 16);
}

void expect_usable(const SiteVerdict& v, const std::vector<Mapping>& maps, uint64_t sys) {
  ASSERT_TRUE(v.approved) << v.reason;
  EXPECT_EQ(v.prot, static_cast<uint32_t>(PROT_READ | PROT_EXEC));
  // A trampoline zone within a rel32 jump, on free addresses.
  ASSERT_NE(v.zone, 0u);
  EXPECT_EQ(v.zone % 4096, 0u);
  const auto dist = [](uint64_t a, uint64_t b) { return a > b ? a - b : b - a; };
  EXPECT_LT(dist(v.zone, sys), 0x7ff00000u);
  EXPECT_LT(dist(v.zone + RB_ZONE_SIZE, sys), 0x7ff00000u);
  for (const Mapping& m : maps) EXPECT_TRUE(v.zone + RB_ZONE_SIZE <= m.start || v.zone >= m.end) << std::hex << m.start;
  if (v.len < 5) {
    // A cave: within a short jump of the instruction's end, dead padding bytes.
    const uint64_t site = sys - v.len;
    ASSERT_NE(v.cave, 0u);
    const int64_t rel = static_cast<int64_t>(v.cave) - static_cast<int64_t>(site + 2);
    EXPECT_GE(rel, -128);
    EXPECT_LE(rel, 127);
    const auto* cave = reinterpret_cast<const uint8_t*>(v.cave);
    EXPECT_TRUE(cave[0] == 0x90 || cave[0] == 0xcc || cave[0] == 0x66 || cave[0] == 0x0f || cave[0] == 0x2e) << std::hex << +cave[0];
  }
}

TEST(CallSites, ParsesMaps) {
  const auto maps = parse_maps(
      "7f0000001000-7f0000002000 r-xp 00003000 fe:01 42     /usr/lib/libx.so\n"
      "7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n"
      "7f0000002000-7f0000003000 r--p 00000000 fe:01 43     /tmp/a b (deleted)\n");
  ASSERT_EQ(maps.size(), 3u);
  EXPECT_EQ(maps[0].start, 0x7f0000000000u);  // sorted
  EXPECT_EQ(maps[0].path, "");
  EXPECT_EQ(maps[1].perms, "r-xp");
  EXPECT_EQ(maps[1].offset, 0x3000u);
  EXPECT_EQ(maps[1].inode, 42u);
  EXPECT_EQ(maps[1].dev_major, 0xfeu);
  EXPECT_EQ(maps[1].path, "/usr/lib/libx.so");
  EXPECT_EQ(maps[2].path, "/tmp/a b (deleted)");
}

TEST(CallSites, FindsFreeZonesWithinReach) {
  const auto maps = parse_maps(
      "100000000-100010000 r-xp 00000000 fe:01 1 /a\n"
      "100011000-200000000 rw-p 00000000 00:00 0 \n");
  // Not in the 4 KB gap between the two (a page of room each side); the closest is below.
  const uint64_t z = free_zone_near(maps, 0x100008000, 0x10000, 0x7ff00000);
  EXPECT_EQ(z, 0x100000000u - 0x1000 - 0x10000);
  // Nothing within a tiny reach.
  EXPECT_EQ(free_zone_near(maps, 0x100008000, 0x10000, 0x1000), 0u);
}

TEST(CallSites, ApprovesTheLibcWrappersShapes) {
  const auto maps = own_maps();
  CallSites sites;
  // write and send: `mov $nr, %eax; syscall` on both paths (5 bytes, a jmp rel32).
  for (const char* name : {"write", "send", "writev", "accept4", "connect"}) {
    const auto found = syscalls_in(name);
    ASSERT_FALSE(found.empty()) << name;
    for (uint64_t sys : found) {
      const SiteVerdict v = check(sites, maps, sys);
      expect_usable(v, maps, sys);
      EXPECT_EQ(v.len, 5u) << name;
      EXPECT_EQ(*reinterpret_cast<const uint8_t*>(sys - 5), 0xb8) << name;
    }
  }
  // syscall(): `mov 0x8(%rsp), %r9` before it: a generic site, the number in a register.
  const auto generic = syscalls_in("syscall");
  ASSERT_EQ(generic.size(), 1u);
  const SiteVerdict g = check(sites, maps, generic[0]);
  expect_usable(g, maps, generic[0]);
  EXPECT_EQ(g.len, 5u);
  // read: `xor %eax, %eax; syscall` (2 bytes): at least one of its two sites has a cave.
  bool cave = false;
  for (uint64_t sys : syscalls_in("read")) {
    const SiteVerdict v = check(sites, maps, sys);
    if (!v.approved) continue;
    expect_usable(v, maps, sys);
    EXPECT_EQ(v.len, 2u);
    cave = cave || v.cave != 0;
  }
  EXPECT_TRUE(cave);
  // The same site asked twice gets the same cave (it is its own), and no two sites share one.
  const auto reads = syscalls_in("read");
  std::vector<uint64_t> caves;
  for (uint64_t sys : reads) {
    const SiteVerdict a = check(sites, maps, sys), b = check(sites, maps, sys);
    EXPECT_EQ(a.cave, b.cave);
    if (a.cave) caves.push_back(a.cave);
  }
  std::sort(caves.begin(), caves.end());
  EXPECT_EQ(std::adjacent_find(caves.begin(), caves.end()), caves.end());
}

TEST(CallSites, RefusesWhatItCannotVouchFor) {
  const auto maps = own_maps();
  CallSites sites;
  const uint64_t sys = syscalls_in("write").at(0);
  // Not a syscall instruction: one byte into it.
  EXPECT_FALSE(check(sites, maps, sys + 1).approved);
  // Bytes the stub saw that are not the file's.
  uint8_t seen[16];
  std::memcpy(seen, reinterpret_cast<const void*>(sys - 16), 16);
  seen[15] ^= 0xff;
  const SiteVerdict changed = sites.check_in(0, maps, sys, seen, 16);
  EXPECT_FALSE(changed.approved);
  EXPECT_NE(changed.reason.find("differ"), std::string::npos) << changed.reason;
  // Code that is no file's: an anonymous executable page with the same shape.
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  static const uint8_t shape[] = {0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xc3};
  std::memcpy(static_cast<uint8_t*>(page) + 64, shape, sizeof(shape));
  const auto with_page = own_maps();
  const SiteVerdict anon = check(sites, with_page, reinterpret_cast<uint64_t>(page) + 69);
  EXPECT_FALSE(anon.approved);
  EXPECT_NE(anon.reason.find("rwxp"), std::string::npos) << anon.reason;
  munmap(page, 4096);
  // Not in any mapping.
  EXPECT_FALSE(sites.check_in(0, maps, 0x10, seen, 16).approved);
  // A process that is gone (its maps cannot be read): not refused for good, asked again.
  const SiteVerdict gone = sites.check(0x7ffffff0, sys, reinterpret_cast<const uint8_t*>(sys - 16), 16);
  EXPECT_FALSE(gone.approved);
  EXPECT_TRUE(gone.retry);
  EXPECT_FALSE(changed.retry);
}

}  // namespace
}  // namespace rbinder::fast
