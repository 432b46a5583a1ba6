// Which call sites the stub may patch (docs/fast-path.md, "Patched call sites"). The stub proposes
// the syscall instruction of a trap; the engine approves it only when the bytes are the mapped
// file's own, a linear decode of the enclosing function (its ELF symbol) has an instruction ending
// exactly at the syscall instruction, no branch lands inside that instruction, and it can run
// elsewhere unchanged (stub/abi.h, "Call sites"). In a Go binary only Go's Syscall6 is approved,
// recognised by its bytes, for a trampoline that moves to the signal stack (RB_SITE_GO).
// Everything else is refused: a refused site keeps trapping, which is only slower.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace rbinder::fast {

struct SiteVerdict {
  bool approved = false;
  uint32_t prot = 0;  // the code page's protection (PROT_*), restored after the rewrite
  uint64_t zone = 0;  // a free, page-aligned address within rel32 reach for a trampoline zone
  uint64_t cave = 0;  // an instruction shorter than 5 bytes: dead padding within rel8 reach for its `jmp rel32`
  uint32_t len = 0;   // the length of the instruction before the syscall, which is rewritten
  uint32_t kind = 0;  // rb_site_kind (stub/abi.h): RB_SITE_C, or RB_SITE_GO (the stub runs on the signal stack)
  std::string reason; // why not, for the debug log and the tests
  bool retry = false; // not now, ask again: the process is gone (its maps are empty), or the page is
                      // writable for the moment (another site of it being patched)
};

// One line of /proc/PID/maps.
struct Mapping {
  uint64_t start = 0, end = 0, offset = 0;
  std::string perms, path;
  uint64_t inode = 0;
  unsigned dev_major = 0, dev_minor = 0;
};
std::vector<Mapping> parse_maps(const std::string& text);

// A free address for `size` bytes within `reach` of `near` (both ends), one page away from any
// mapping, closest to `near`; 0 when there is none.
uint64_t free_zone_near(const std::vector<Mapping>& maps, uint64_t near, uint64_t size, uint64_t reach);

class CallSites {
 public:
  // `sys` is a syscall instruction's address in process `pid`; `before` the `len` bytes before it
  // that the stub saw.
  SiteVerdict check(pid_t pid, uint64_t sys, const uint8_t* before, size_t len);
  // The same with the process's mappings already read; pid 0 is this process (the tests).
  SiteVerdict check_in(pid_t pid, const std::vector<Mapping>& maps, uint64_t sys, const uint8_t* before, size_t len);

 private:
  struct Function {
    uint64_t start, size;  // virtual addresses, as in the ELF symbol
  };
  struct Segment {
    uint64_t vaddr, offset, filesz;
    bool exec;
  };
  struct ElfFile {
    std::string error;  // not usable, and why
    std::vector<Function> functions;  // sorted by start
    std::vector<Segment> segments;
    std::map<uint64_t, uint64_t> caves;  // cave -> the site it serves (virtual addresses)
    bool go = false;  // built by Go (a .go.buildinfo or .gopclntab section)
    // Where a cancellable syscall's address range ends (musl's __cp_end, glibc 2.41's
    // __syscall_cancel_arch_end): their cancellation looks at whether a thread is stopped there.
    std::vector<uint64_t> cancel_ends;
    int fd = -1;
    ~ElfFile();
  };
  std::shared_ptr<ElfFile> load(pid_t pid, const Mapping& m, std::string& error);
  // Dead padding for a 2-byte site's jump: right after a function whose last instruction is an
  // unconditional transfer, nops or int3 only, within rel8 reach, not taken by another site.
  uint64_t find_cave(pid_t pid, ElfFile& f, const Segment& seg, uint64_t site_vaddr, uint64_t load_bias, std::string& why);
  // A site in a Go binary: only Go's Syscall6, recognised by its bytes (symbols are often stripped).
  SiteVerdict check_go(pid_t pid, const std::vector<Mapping>& maps, const Mapping& m, ElfFile& f, uint64_t sys,
                       const uint8_t* before, size_t len);
  std::map<std::pair<uint64_t, uint64_t>, std::shared_ptr<ElfFile>> files_;  // by (device, inode)
};

}  // namespace rbinder::fast
