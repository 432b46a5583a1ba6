#include "engine/call_sites.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "arch/x86_64_decode.h"
#include "stub/abi.h"
#include "tracee/memory.h"

namespace rbinder::fast {
namespace {

constexpr uint64_t kMaxFunction = 1 << 20;     // bytes decoded at most
constexpr uint64_t kReach = 0x7ff00000 - 0x10000;  // within the stub's reachable(), with room

bool read_all(int fd, uint64_t offset, void* out, size_t len) {
  auto* p = static_cast<uint8_t*>(out);
  while (len > 0) {
    const ssize_t n = pread(fd, p, len, static_cast<off_t>(offset));
    if (n <= 0) return false;
    p += n;
    offset += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
  return true;
}

// The process's bytes at addr (read_tracee: process_vm_readv, or /proc/PID/mem where that is
// refused). For pid 0, this process's own memory (the tests).
bool read_process(pid_t pid, uint64_t addr, void* out, size_t len) {
  if (pid == 0) {
    std::memcpy(out, reinterpret_cast<const void*>(addr), len);
    return true;
  }
  return read_tracee(pid, TraceeAddr{addr}, out, len) == static_cast<long>(len);
}

// Prefixes that do not change what an instruction transfers control to, or a nop is.
size_t skip_prefixes(const uint8_t* p, size_t n) {
  size_t i = 0;
  while (i < n && (p[i] == 0x66 || p[i] == 0x2e || p[i] == 0x3e || p[i] == 0xf2 || p[i] == 0xf3)) i++;
  return i;
}

// Control never falls through it: ret, jmp, ud2, hlt, int3.
bool unconditional_end(const uint8_t* p, size_t n) {
  const size_t i = skip_prefixes(p, n);
  if (i >= n) return false;
  switch (p[i]) {
    case 0xc3: case 0xc2: case 0xe9: case 0xeb: case 0xf4: case 0xcc: return true;
    case 0xff: return i + 1 < n && ((p[i + 1] >> 3) & 7) == 4;  // jmp r/m
    case 0x0f: return i + 1 < n && p[i + 1] == 0x0b;             // ud2
    default: return false;
  }
}

// Alignment padding: nop (90, 66 90), nopw/nopl r/m (0f 1f), int3.
bool padding(const uint8_t* p, size_t n) {
  const size_t i = skip_prefixes(p, n);
  return i < n && (p[i] == 0x90 || p[i] == 0xcc || (p[i] == 0x0f && i + 1 < n && p[i + 1] == 0x1f));
}

// An instruction that does the same wherever it runs: moves and lea between registers and
// memory not addressed relative to RIP, mov of an immediate, xor of registers (the shapes libc
// puts before its syscall instructions). Not branches, calls, returns, pushes or anything else.
bool relocatable(const uint8_t* p, size_t n) {
  size_t i = 0;
  if (i < n && p[i] == 0x66) i++;
  if (i < n && (p[i] & 0xf0) == 0x40) i++;
  if (i >= n) return false;
  const uint8_t op = p[i];
  if (op >= 0xb8 && op <= 0xbf) return true;  // mov $imm, %reg
  const bool modrm_op = op == 0x88 || op == 0x89 || op == 0x8a || op == 0x8b || op == 0x8d || op == 0x31 || op == 0x33 ||
                        op == 0xc7;
  if (!modrm_op || i + 1 >= n) return false;
  const uint8_t modrm = p[i + 1], mod = modrm >> 6, reg = (modrm >> 3) & 7, rm = modrm & 7;
  if (op == 0xc7 && reg != 0) return false;
  if ((op == 0x31 || op == 0x33) && mod != 3) return false;
  return !(mod == 0 && rm == 5);  // RIP-relative
}

// Go's internal/runtime/syscall Syscall6 (runtime/internal/syscall before Go 1.24; its linux
// subpackage since 1.26), the one syscall instruction behind the syscall package's Syscall,
// RawSyscall and their 6-argument forms on linux/amd64 since Go 1.19: the four argument moves of
// ABIInternal, the syscall, and the (r1, r2, errno) results. It keeps nothing below its stack
// pointer, reads only AX and DX after the syscall, and is entered at its start only; Go's linker
// pads functions with int3 (0xcc), which gives the cave for the 3-byte `mov %rbx,%rdi`.
constexpr uint8_t kGoSyscall6[] = {
    0x49, 0x89, 0xf2,                          // mov %rsi,%r10
    0x48, 0x89, 0xfa,                          // mov %rdi,%rdx
    0x48, 0x89, 0xce,                          // mov %rcx,%rsi
    0x48, 0x89, 0xdf,                          // mov %rbx,%rdi   (rewritten)
    0x0f, 0x05,                                // syscall
    0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff,        // cmp $-4095,%rax
    0x76, 0x15,                                // jbe ok
    0x48, 0xf7, 0xd8,                          // neg %rax
    0x48, 0x89, 0xc1,                          // mov %rax,%rcx
    0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff,  // mov $-1,%rax
    0x48, 0xc7, 0xc3, 0x00, 0x00, 0x00, 0x00,  // mov $0,%rbx
    0xc3,                                      // ret
    0x48, 0x89, 0xd3,                          // ok: mov %rdx,%rbx
    0x48, 0xc7, 0xc1, 0x00, 0x00, 0x00, 0x00,  // mov $0,%rcx
    0xc3,                                      // ret
};
constexpr size_t kGoSyscallAt = 12;  // the syscall instruction's offset in kGoSyscall6
constexpr size_t kGoSiteLen = 3;     // the instruction before it
constexpr size_t kJmpRel32 = 5;

}  // namespace

std::vector<Mapping> parse_maps(const std::string& text) {
  std::vector<Mapping> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    Mapping m;
    char perms[8] = {};
    unsigned long long start = 0, end = 0, offset = 0, inode = 0;
    unsigned major = 0, minor = 0;
    int consumed = 0;
    if (sscanf(line.c_str(), "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &offset, &major, &minor, &inode,
               &consumed) < 7)
      continue;
    m.start = start, m.end = end, m.offset = offset, m.inode = inode;
    m.dev_major = major, m.dev_minor = minor;
    m.perms = perms;
    if (consumed > 0 && static_cast<size_t>(consumed) < line.size()) m.path = line.substr(static_cast<size_t>(consumed));
    out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(), [](const Mapping& a, const Mapping& b) { return a.start < b.start; });
  return out;
}

uint64_t free_zone_near(const std::vector<Mapping>& maps, uint64_t near, uint64_t size, uint64_t reach) {
  constexpr uint64_t kPage = 4096, kLowest = 0x10000, kHighest = 0x7ffffffff000ull;
  auto dist = [](uint64_t a, uint64_t b) { return a > b ? a - b : b - a; };
  uint64_t best = 0, best_dist = UINT64_MAX;
  uint64_t gap_start = kLowest;
  for (size_t i = 0; i <= maps.size(); i++) {
    const uint64_t gap_end = i < maps.size() ? maps[i].start : kHighest;
    if (gap_end > gap_start && gap_end - gap_start >= size + 2 * kPage) {
      const uint64_t lo = (gap_start + kPage + kPage - 1) & ~(kPage - 1);
      const uint64_t hi = (gap_end - kPage - size) & ~(kPage - 1);
      if (lo <= hi) {
        const uint64_t c = std::clamp(near & ~(kPage - 1), lo, hi);
        if (dist(c, near) < reach && dist(c + size, near) < reach && dist(c, near) < best_dist) {
          best = c;
          best_dist = dist(c, near);
        }
      }
    }
    if (i < maps.size()) gap_start = std::max(gap_start, maps[i].end);
  }
  return best;
}

CallSites::ElfFile::~ElfFile() {
  if (fd >= 0) close(fd);
}

std::shared_ptr<CallSites::ElfFile> CallSites::load(pid_t pid, const Mapping& m, std::string& error) {
  const auto key = std::make_pair((static_cast<uint64_t>(m.dev_major) << 32) | m.dev_minor, m.inode);
  auto it = files_.find(key);
  if (it == files_.end()) {
    auto f = std::make_shared<ElfFile>();
    // The mapped file itself where /proc lets us (CAP_SYS_ADMIN), else the file at its path if
    // that is still the same inode (maps shows the underlying file's, as stat does on overlayfs).
    char mapped[96];
    snprintf(mapped, sizeof mapped, "/proc/%d/map_files/%llx-%llx", static_cast<int>(pid), static_cast<unsigned long long>(m.start),
             static_cast<unsigned long long>(m.end));
    f->fd = pid > 0 ? open(mapped, O_RDONLY | O_CLOEXEC) : -1;
    struct stat st {};
    if (f->fd < 0) {
      f->fd = open(m.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (f->fd >= 0 && (fstat(f->fd, &st) != 0 || st.st_ino != m.inode)) {
        close(f->fd);
        f->fd = -2;
      }
    }
    Elf64_Ehdr eh;
    if (f->fd == -2) {
      f->error = "the file at " + m.path + " is not the one mapped";
    } else if (f->fd < 0) {
      f->error = "cannot open " + m.path;
    } else if (!read_all(f->fd, 0, &eh, sizeof(eh)) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
               eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64 || eh.e_phentsize != sizeof(Elf64_Phdr) ||
               (eh.e_shnum && eh.e_shentsize != sizeof(Elf64_Shdr))) {
      f->error = "not an x86-64 ELF file";
    } else {
      std::vector<Elf64_Phdr> ph(eh.e_phnum);
      if (!ph.empty() && !read_all(f->fd, eh.e_phoff, ph.data(), ph.size() * sizeof(Elf64_Phdr))) ph.clear();
      for (const Elf64_Phdr& p : ph)
        if (p.p_type == PT_LOAD) f->segments.push_back({p.p_vaddr, p.p_offset, p.p_filesz, (p.p_flags & PF_X) != 0});
      std::vector<Elf64_Shdr> sh(eh.e_shnum);
      if (!sh.empty() && !read_all(f->fd, eh.e_shoff, sh.data(), sh.size() * sizeof(Elf64_Shdr))) sh.clear();
      if (eh.e_shstrndx < sh.size() && sh[eh.e_shstrndx].sh_size < (1u << 20)) {
        std::string names(sh[eh.e_shstrndx].sh_size, '\0');
        if (read_all(f->fd, sh[eh.e_shstrndx].sh_offset, names.data(), names.size()))
          for (const Elf64_Shdr& s : sh)
            if (s.sh_name < names.size() &&
                (std::strcmp(names.c_str() + s.sh_name, ".go.buildinfo") == 0 || std::strcmp(names.c_str() + s.sh_name, ".gopclntab") == 0))
              f->go = true;
      }
      for (const Elf64_Shdr& s : sh) {
        if ((s.sh_type != SHT_SYMTAB && s.sh_type != SHT_DYNSYM) || s.sh_entsize != sizeof(Elf64_Sym)) continue;
        std::vector<Elf64_Sym> syms(s.sh_size / sizeof(Elf64_Sym));
        if (syms.size() > (1u << 22) || !read_all(f->fd, s.sh_offset, syms.data(), syms.size() * sizeof(Elf64_Sym))) continue;
        std::string names;
        if (s.sh_link < sh.size() && sh[s.sh_link].sh_size < (64u << 20)) {
          names.resize(sh[s.sh_link].sh_size);
          if (!read_all(f->fd, sh[s.sh_link].sh_offset, names.data(), names.size())) names.clear();
        }
        for (const Elf64_Sym& sym : syms) {
          if (ELF64_ST_TYPE(sym.st_info) == STT_FUNC && sym.st_size > 0 && sym.st_shndx != SHN_UNDEF)
            f->functions.push_back({sym.st_value, sym.st_size});
          if (sym.st_name < names.size() && sym.st_shndx != SHN_UNDEF &&
              (std::strcmp(names.c_str() + sym.st_name, "__cp_end") == 0 ||
               std::strcmp(names.c_str() + sym.st_name, "__syscall_cancel_arch_end") == 0))
            f->cancel_ends.push_back(sym.st_value);
        }
      }
      std::sort(f->functions.begin(), f->functions.end(),
                [](const Function& a, const Function& b) { return a.start < b.start || (a.start == b.start && a.size < b.size); });
      f->functions.erase(std::unique(f->functions.begin(), f->functions.end(),
                                     [](const Function& a, const Function& b) { return a.start == b.start && a.size == b.size; }),
                         f->functions.end());
      if (f->functions.empty() && !f->go) f->error = "no function symbols in " + m.path;  // Go: check_go needs none
    }
    it = files_.emplace(key, std::move(f)).first;
  }
  if (!it->second->error.empty()) {
    error = it->second->error;
    return nullptr;
  }
  return it->second;
}

uint64_t CallSites::find_cave(pid_t pid, ElfFile& f, const Segment& seg, uint64_t site_vaddr, uint64_t bias, std::string& why) {
  constexpr int64_t kRel8 = 120;  // of a jmp rel8's -128..127, with room for the 5-byte jump
  const uint64_t from = site_vaddr + 2;  // a jmp rel8's target is relative to its end
  auto in_reach = [&](uint64_t cave) {
    const int64_t d = static_cast<int64_t>(cave - from);
    return d >= -kRel8 && d + 5 <= kRel8;
  };
  why = "no dead padding within a short jump";
  for (size_t i = 0; i < f.functions.size(); i++) {
    const Function& g = f.functions[i];
    const uint64_t next = i + 1 < f.functions.size() ? f.functions[i + 1].start : seg.vaddr + seg.filesz;
    const uint64_t limit = std::max(g.start + g.size, std::min(next, g.start + g.size + 64));  // its trailing padding
    if (limit + kRel8 < from || g.start > from + kRel8 || g.start < seg.vaddr || limit > seg.vaddr + seg.filesz ||
        g.size > kMaxFunction)
      continue;
    // The file's bytes (other sites of the function may be patched in memory already); the cave's
    // own bytes in the process are checked against them below.
    std::vector<uint8_t> code(limit - g.start);
    if (!read_all(f.fd, seg.offset + (g.start - seg.vaddr), code.data(), code.size())) continue;
    // Its instructions, relative branch targets and whether it jumps indirectly (a jump table's
    // targets are not known here).
    std::vector<std::pair<size_t, size_t>> insns;
    std::vector<int64_t> targets;
    bool indirect = false, decoded = true;
    for (size_t pos = 0; pos < g.size;) {
      arch::DecodedInstruction d;
      const int n = arch::decode_x86_64(code.data() + pos, g.size - pos, &d);
      if (n == 0) {
        decoded = false;
        break;
      }
      if (d.relative_branch) targets.push_back(static_cast<int64_t>(pos) + d.branch_offset);
      const size_t k = skip_prefixes(code.data() + pos, static_cast<size_t>(n));
      if (k + 1 < static_cast<size_t>(n) && code[pos + k] == 0xff && ((code[pos + k + 1] >> 3) & 7) == 4) indirect = true;
      insns.push_back({pos, static_cast<size_t>(n)});
      pos += static_cast<size_t>(n);
    }
    if (!decoded || insns.empty() || insns.back().first + insns.back().second != g.size) continue;
    // A run of padding right after an unconditional transfer is dead when nothing branches into
    // it: inside the function only if the function has no indirect jump; after its end, up to the
    // next symbol (the padding that aligns the next function).
    for (size_t k = 0; k < insns.size(); k++) {
      if (!unconditional_end(code.data() + insns[k].first, insns[k].second)) continue;
      const size_t cave = insns[k].first + insns[k].second;
      const bool inside = cave < g.size;
      if ((inside && indirect) || !in_reach(g.start + cave)) continue;
      size_t pad = cave;
      while (pad < cave + 5 && pad < code.size()) {
        arch::DecodedInstruction d;
        const int n = arch::decode_x86_64(code.data() + pad, code.size() - pad, &d);
        if (n == 0 || !padding(code.data() + pad, static_cast<size_t>(n)) || (inside && pad + static_cast<size_t>(n) > g.size)) break;
        pad += static_cast<size_t>(n);
      }
      if (pad < cave + 5) continue;
      if (std::any_of(targets.begin(), targets.end(), [&](int64_t t) {
            return t >= static_cast<int64_t>(cave) && t < static_cast<int64_t>(cave + 5);
          }))
        continue;
      const uint64_t at = g.start + cave;
      auto taken = f.caves.find(at);
      if (taken != f.caves.end() && taken->second != site_vaddr) continue;
      uint8_t running[5];
      if (!read_process(pid, at + bias, running, 5) || std::memcmp(running, code.data() + cave, 5) != 0) continue;
      f.caves[at] = site_vaddr;
      return at + bias;
    }
  }
  return 0;
}

SiteVerdict CallSites::check_go(pid_t pid, const std::vector<Mapping>& maps, const Mapping& m, ElfFile& f, uint64_t sys,
                                const uint8_t* before, size_t len) {
  SiteVerdict v;
  auto refuse = [&](std::string why) {
    v.reason = std::move(why);
    return v;
  };
  const uint64_t file_off = sys - m.start + m.offset;
  auto seg = std::find_if(f.segments.begin(), f.segments.end(), [&](const Segment& s) {
    return s.exec && s.offset + kGoSyscallAt <= file_off && file_off - kGoSyscallAt + sizeof(kGoSyscall6) + kJmpRel32 <= s.offset + s.filesz;
  });
  if (seg == f.segments.end()) return refuse("Go code, not in an executable segment of " + m.path);
  const uint64_t fn_off = file_off - kGoSyscallAt, fn_addr = sys - kGoSyscallAt;
  if (fn_addr < m.start || fn_addr + sizeof(kGoSyscall6) + kJmpRel32 > m.end) return refuse("Go code, its function spans several mappings");
  uint8_t code[sizeof(kGoSyscall6) + kJmpRel32];
  if (!read_all(f.fd, fn_off, code, sizeof(code))) return refuse("cannot read its function from " + m.path);
  if (std::memcmp(code, kGoSyscall6, sizeof(kGoSyscall6)) != 0)
    return refuse("Go code other than Syscall6 (the runtime's own syscalls keep trapping)");
  const uint8_t* cave_bytes = code + sizeof(kGoSyscall6);
  if (!std::all_of(cave_bytes, cave_bytes + kJmpRel32, [](uint8_t b) { return b == 0xcc; }))
    return refuse("Go's Syscall6 without int3 padding after it");
  // Where symbols are left, one must start there (the bytes alone could be a copy inside another function).
  const uint64_t fn_vaddr = fn_off - seg->offset + seg->vaddr;
  for (const Function& g : f.functions)
    if (g.start <= fn_vaddr + kGoSyscallAt && fn_vaddr + kGoSyscallAt < g.start + g.size && g.start != fn_vaddr)
      return refuse("Go's Syscall6 bytes inside another function symbol");
  const size_t seen = std::min(len, kGoSyscallAt);
  if (std::memcmp(code + kGoSyscallAt - seen, before + (len - seen), seen) != 0) return refuse("the bytes seen differ from the file's");
  const uint64_t site_addr = sys - kGoSiteLen, cave = fn_addr + sizeof(kGoSyscall6);
  if ((site_addr >> 12) != (sys >> 12) || (site_addr & 63) == 63) return refuse("the instruction before it straddles a page or cache line");
  uint8_t running[kGoSiteLen + 2], cave_running[kJmpRel32];
  if (!read_process(pid, site_addr, running, sizeof(running)) || !read_process(pid, cave, cave_running, sizeof(cave_running)))
    return refuse("cannot read the process's memory");
  if (std::memcmp(running, code + kGoSyscallAt - kGoSiteLen, sizeof(running)) != 0 || std::memcmp(cave_running, cave_bytes, kJmpRel32) != 0)
    return refuse("the process's code there differs from " + m.path);
  const uint64_t cave_vaddr = fn_vaddr + sizeof(kGoSyscall6);
  auto taken = f.caves.find(cave_vaddr);
  if (taken != f.caves.end() && taken->second != fn_vaddr + kGoSyscallAt - kGoSiteLen) return refuse("its cave serves another site");
  f.caves[cave_vaddr] = fn_vaddr + kGoSyscallAt - kGoSiteLen;
  v.approved = true;
  v.kind = RB_SITE_GO;
  v.len = kGoSiteLen;
  v.cave = cave;
  v.prot = PROT_READ | PROT_EXEC;
  v.zone = free_zone_near(maps, sys, RB_ZONE_SIZE, kReach);
  if (v.zone == 0) return refuse("no free address within reach for trampolines");
  return v;
}

SiteVerdict CallSites::check(pid_t pid, uint64_t site, const uint8_t* bytes, size_t len) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  std::stringstream text;
  text << in.rdbuf();
  SiteVerdict v;
  const std::vector<Mapping> maps = parse_maps(text.str());
  if (!in || maps.empty()) {
    v.reason = "cannot read /proc/" + std::to_string(pid) + "/maps (the process is gone?)";
    v.retry = true;  // its parent or siblings may ask again
    return v;
  }
  return check_in(pid, maps, site, bytes, len);
}

SiteVerdict CallSites::check_in(pid_t pid, const std::vector<Mapping>& maps, uint64_t sys, const uint8_t* before, size_t len) {
  SiteVerdict v;
  auto refuse = [&](std::string why) {
    v.approved = false;
    v.reason = std::move(why);
    return v;
  };
  constexpr uint64_t kSyscallLen = 2;
  auto m = std::find_if(maps.begin(), maps.end(), [&](const Mapping& x) { return x.start <= sys && sys + kSyscallLen <= x.end; });
  if (m == maps.end()) return refuse("not in a mapping");
  if (m->perms == "rwxp" && m->inode != 0) {
    v.retry = true;  // a file's code made writable: the stub is patching another site of that page
    return refuse("mapping is rwxp for the moment");
  }
  if (m->perms != "r-xp") return refuse("mapping is " + m->perms + ", not a private read+execute file mapping");
  if (m->path.empty() || m->path[0] != '/' || m->inode == 0) return refuse("not a file mapping");
  std::string error;
  std::shared_ptr<ElfFile> f = load(pid, *m, error);
  if (!f) return refuse(error);
  if (f->go) return check_go(pid, maps, *m, *f, sys, before, len);
  const uint64_t file_off = sys - m->start + m->offset;
  auto seg = std::find_if(f->segments.begin(), f->segments.end(), [&](const Segment& s) {
    return s.exec && s.offset <= file_off && file_off + kSyscallLen <= s.offset + s.filesz;
  });
  if (seg == f->segments.end()) return refuse("not in an executable segment of " + m->path);
  const uint64_t vaddr = file_off - seg->offset + seg->vaddr;
  // The innermost function symbol holding the syscall instruction.
  const Function* fn = nullptr;
  auto after = std::upper_bound(f->functions.begin(), f->functions.end(), vaddr,
                                [](uint64_t a, const Function& b) { return a < b.start; });
  for (auto i = after; i != f->functions.begin() && std::distance(i, after) < 256;) {
    --i;
    if (i->start <= vaddr && vaddr + kSyscallLen <= i->start + i->size && (!fn || i->start > fn->start)) fn = &*i;
  }
  if (!fn) return refuse("no function symbol holds it in " + m->path);
  if (fn->size > kMaxFunction) return refuse("its function is too large to decode");
  // A cancellable syscall whose cancellation checks the interrupted address: in the stub, a
  // thread blocked there would not be cancelled until the syscall returned.
  if (std::find(f->cancel_ends.begin(), f->cancel_ends.end(), vaddr + kSyscallLen) != f->cancel_ends.end())
    return refuse("a cancellation point found by its address (__cp_end, __syscall_cancel_arch_end)");
  if (fn->start < seg->vaddr || fn->start + fn->size > seg->vaddr + seg->filesz) return refuse("its function leaves its segment");
  const uint64_t at = vaddr - fn->start;
  // The file's bytes of the function are decoded (other sites of it may be patched in memory
  // already); the process's bytes must be the file's where the rewrite goes (checked below).
  std::vector<uint8_t> code(fn->size);
  if (!read_all(f->fd, seg->offset + (fn->start - seg->vaddr), code.data(), code.size()))
    return refuse("cannot read its function from " + m->path);
  const uint64_t fn_addr = sys - at;
  if (fn_addr < m->start || fn_addr + fn->size > m->end) return refuse("its function spans several mappings");
  const size_t seen = std::min<size_t>(len, at);  // the stub sends up to 16 bytes; the function may start closer
  if (std::memcmp(code.data() + at - seen, before + (len - seen), seen) != 0) return refuse("the bytes seen differ from the file's");
  // A linear decode from the function's start: an instruction must end exactly at the syscall
  // (the one to rewrite), the syscall must decode as such, and no relative branch may land
  // inside the instruction before it.
  uint64_t pos = 0, site = UINT64_MAX;
  std::vector<int64_t> targets;
  while (pos < code.size()) {
    arch::DecodedInstruction d;
    const int n = arch::decode_x86_64(code.data() + pos, code.size() - pos, &d);
    if (n == 0) return refuse("undecodable instruction in its function at +" + std::to_string(pos));
    if (pos + static_cast<uint64_t>(n) == at) site = pos;
    if (pos < at && pos + static_cast<uint64_t>(n) > at) return refuse("the syscall instruction is inside another instruction");
    if (pos == at && (n != 2 || code[pos] != 0x0f || code[pos + 1] != 0x05)) return refuse("not a syscall instruction");
    if (d.relative_branch) targets.push_back(static_cast<int64_t>(pos) + d.branch_offset);
    pos += static_cast<uint64_t>(n);
  }
  if (site == UINT64_MAX) return refuse("no instruction before the syscall in its function");
  const size_t ilen = at - site;
  for (int64_t t : targets)
    if (t > static_cast<int64_t>(site) && t < static_cast<int64_t>(at)) return refuse("a branch lands inside the instruction before it");
  if (!relocatable(code.data() + site, ilen)) return refuse("the instruction before it cannot run elsewhere unchanged");
  if (ilen < 2) return refuse("the instruction before it is shorter than a jump");
  std::vector<uint8_t> running(ilen + kSyscallLen);
  if (!read_process(pid, sys - ilen, running.data(), running.size())) return refuse("cannot read the process's memory");
  if (std::memcmp(running.data(), code.data() + site, running.size()) != 0) return refuse("the process's code there differs from " + m->path);
  const uint64_t site_addr = sys - ilen;
  if ((site_addr >> 12) != (sys >> 12) || (site_addr & 63) == 63) return refuse("the instruction before it straddles a page or cache line");
  if (ilen < 5) {
    std::string why;
    const uint64_t bias = sys - vaddr;  // process address minus virtual address, in this mapping
    const uint64_t cave = find_cave(pid, *f, *seg, vaddr - ilen, bias, why);
    if (cave == 0) return refuse(why);
    if (cave < m->start || cave + 5 > m->end) return refuse("its cave is in another mapping");
    v.cave = cave;
  }
  v.approved = true;
  v.len = static_cast<uint32_t>(ilen);
  v.prot = PROT_READ | PROT_EXEC;
  v.zone = free_zone_near(maps, sys, RB_ZONE_SIZE, kReach);
  if (v.zone == 0) return refuse("no free address within reach for trampolines");
  return v;
}

}  // namespace rbinder::fast
