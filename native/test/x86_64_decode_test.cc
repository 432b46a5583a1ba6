// The x86-64 length decoder decides whether an address is an instruction boundary; a wrong length that
// is accepted would let the engine patch the middle of an instruction. Hand-written cases pin the
// encoding rules; the real check compares it with objdump over real compiler output on this machine.
#include <elf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "arch/x86_64_decode.h"

namespace rbinder::arch {
namespace {

int len(const std::vector<uint8_t>& b, DecodedInstruction* d = nullptr) {
  DecodedInstruction tmp;
  return decode_x86_64(b.data(), b.size(), d ? d : &tmp);
}

TEST(X86Decode, SimpleLengths) {
  EXPECT_EQ(len({0xb8, 0x01, 0x00, 0x00, 0x00}), 5);        // mov $1,%eax
  EXPECT_EQ(len({0x0f, 0x05}), 2);                          // syscall
  EXPECT_EQ(len({0x31, 0xc0}), 2);                          // xor %eax,%eax
  EXPECT_EQ(len({0x48, 0x8b, 0x44, 0x24, 0x08}), 5);        // mov 8(%rsp),%rax
  EXPECT_EQ(len({0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8}), 10);  // movabs imm64
  EXPECT_EQ(len({0x66, 0xb8, 0x34, 0x12}), 4);              // mov $0x1234,%ax
  EXPECT_EQ(len({0x66, 0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8}), 11);  // REX.W wins over 66
  EXPECT_EQ(len({0x41, 0x89, 0xca}), 3);                    // mov %ecx,%r10d
  EXPECT_EQ(len({0xc3}), 1);
  EXPECT_EQ(len({0xf3, 0x0f, 0x1e, 0xfa}), 4);              // endbr64
  EXPECT_EQ(len({0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0}), 10);  // cs nopw 0(%rax,%rax,1)
  EXPECT_EQ(len({0xc2, 0x08, 0x00}), 3);                    // ret $8
  EXPECT_EQ(len({0xc8, 0x10, 0x00, 0x00}), 4);              // enter $0x10,$0
  EXPECT_EQ(len({0x66, 0x81, 0xc1, 0x34, 0x12}), 5);        // add $0x1234,%cx
  EXPECT_EQ(len({0x48, 0x81, 0xc1, 1, 2, 3, 4}), 7);        // add $imm32,%rcx
  EXPECT_EQ(len({0xa1, 1, 2, 3, 4, 5, 6, 7, 8}), 9);        // movabs moffs64,%eax
  EXPECT_EQ(len({0x67, 0xa1, 1, 2, 3, 4}), 6);              // addr32 moffs32
  EXPECT_EQ(len({0x0f, 0x20, 0x00}), 3);                    // mov %cr0,%rax: mod is ignored
  EXPECT_EQ(len({0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x08}), 6);  // palignr $8,%xmm1,%xmm0
  EXPECT_EQ(len({0x66, 0x0f, 0x38, 0x00, 0xc1}), 5);        // pshufb %xmm1,%xmm0
  EXPECT_EQ(len({0x66, 0x0f, 0x73, 0xd8, 0x04}), 5);        // psrldq $4,%xmm0
  EXPECT_EQ(len({0x0f, 0xba, 0xe0, 0x03}), 4);              // bt $3,%eax
  EXPECT_EQ(len({0xc6, 0xf8, 0x01}), 3);                    // xabort $1
}

TEST(X86Decode, ModrmSibDisplacement) {
  EXPECT_EQ(len({0x48, 0x8b, 0x05, 1, 2, 3, 4}), 7);        // mov disp32(%rip),%rax
  EXPECT_EQ(len({0x67, 0x48, 0x8b, 0x05, 1, 2, 3, 4}), 8);  // 67 keeps disp32 (eip-relative)
  EXPECT_EQ(len({0x8b, 0x04, 0x25, 1, 2, 3, 4}), 7);        // SIB base=101 mod=00: disp32, no base
  EXPECT_EQ(len({0x8b, 0x44, 0x25, 0x08}), 4);              // SIB base=rbp mod=01: disp8
  EXPECT_EQ(len({0x8b, 0x84, 0x25, 1, 2, 3, 4}), 7);        // SIB base=rbp mod=10: disp32
  EXPECT_EQ(len({0x8b, 0x45, 0x08}), 3);                    // 8(%rbp)
  EXPECT_EQ(len({0x8b, 0x04, 0x24}), 3);                    // (%rsp)
  EXPECT_EQ(len({0x8b, 0xc1}), 2);                          // register
}

TEST(X86Decode, GroupsWithImmediateDependingOnReg) {
  EXPECT_EQ(len({0xf7, 0xc1, 1, 2, 3, 4}), 6);        // test $imm32,%ecx (/0)
  EXPECT_EQ(len({0x66, 0xf7, 0xc1, 1, 2}), 5);        // test $imm16,%cx
  EXPECT_EQ(len({0xf7, 0xd1}), 2);                    // not %ecx (/2)
  EXPECT_EQ(len({0xf6, 0xc1, 0x01}), 3);              // test $1,%cl
  EXPECT_EQ(len({0xf6, 0xd9}), 2);                    // neg %cl
  EXPECT_EQ(len({0x8f, 0xc0}), 2);                    // pop %rax (8F /0)
  EXPECT_EQ(len({0x8f, 0xe8, 0x78, 0xc2, 0xc0, 0x01}), 0);  // XOP: refused
  EXPECT_EQ(len({0xc7, 0xc8, 1, 2, 3, 4}), 0);        // C7 /1: invalid
  EXPECT_EQ(len({0xff, 0xf8}), 0);                    // FF /7: invalid
}

TEST(X86Decode, RelativeBranches) {
  DecodedInstruction d;
  EXPECT_EQ(len({0xe9, 0x10, 0x00, 0x00, 0x00}, &d), 5);
  EXPECT_TRUE(d.relative_branch);
  EXPECT_EQ(d.branch_offset, 5 + 0x10);
  EXPECT_EQ(len({0xe8, 0xfb, 0xff, 0xff, 0xff}, &d), 5);  // call to itself
  EXPECT_EQ(d.branch_offset, 0);
  EXPECT_EQ(len({0x74, 0x17}, &d), 2);
  EXPECT_TRUE(d.relative_branch);
  EXPECT_EQ(d.branch_offset, 2 + 0x17);
  EXPECT_EQ(len({0xeb, 0xfe}, &d), 2);
  EXPECT_EQ(d.branch_offset, 0);
  EXPECT_EQ(len({0x0f, 0x84, 0x00, 0x01, 0x00, 0x00}, &d), 6);
  EXPECT_TRUE(d.relative_branch);
  EXPECT_EQ(d.branch_offset, 6 + 0x100);
  EXPECT_EQ(len({0xf2, 0xe9, 0x00, 0x00, 0x00, 0x80}, &d), 6);  // bnd jmp, negative rel32
  EXPECT_EQ(d.branch_offset, 6 - 0x80000000LL);
  EXPECT_EQ(len({0xe3, 0x02}, &d), 2);  // jrcxz
  EXPECT_TRUE(d.relative_branch);
  EXPECT_EQ(len({0xc7, 0xf8, 0x10, 0, 0, 0}, &d), 6);  // xbegin
  EXPECT_TRUE(d.relative_branch);
  EXPECT_EQ(d.branch_offset, 6 + 0x10);
  EXPECT_EQ(len({0xff, 0xe0}, &d), 2);  // jmp *%rax: not relative
  EXPECT_FALSE(d.relative_branch);
  EXPECT_EQ(len({0x31, 0xc0}, &d), 2);
  EXPECT_FALSE(d.relative_branch);
  EXPECT_EQ(len({0x66, 0xe9, 0x10, 0x00}), 0);  // operand size differs Intel/AMD: refused
}

TEST(X86Decode, VexAndEvex) {
  EXPECT_EQ(len({0xc5, 0xf8, 0x77}), 3);                          // vzeroupper
  EXPECT_EQ(len({0xc5, 0xfd, 0x6f, 0x06}), 4);                    // vmovdqa (%rsi),%ymm0
  EXPECT_EQ(len({0xc4, 0xe2, 0x7d, 0x78, 0xc0}), 5);              // vpbroadcastb %xmm0,%ymm0
  EXPECT_EQ(len({0xc4, 0xe3, 0x7d, 0x39, 0xc1, 0x01}), 6);        // vextracti128 $1,%ymm0,%xmm1
  EXPECT_EQ(len({0xc5, 0xf9, 0x70, 0xc0, 0x1b}), 5);              // vpshufd $0x1b,%xmm0,%xmm0
  EXPECT_EQ(len({0x62, 0xf1, 0x7c, 0x48, 0x10, 0x04, 0x24}), 7);  // vmovups (%rsp),%zmm0
  EXPECT_EQ(len({0x62, 0xf1, 0x7c, 0x48, 0x10, 0x44, 0x24, 0x01}), 8);  // disp8*N is one byte
  EXPECT_EQ(len({0x62, 0xf3, 0x7d, 0x48, 0x3b, 0xc1, 0x01}), 7);  // vextracti64x4-like map 3 + imm8
  EXPECT_EQ(len({0x66, 0xc5, 0xf8, 0x77}), 0);                    // 66 before VEX #UDs
  EXPECT_EQ(len({0xc4, 0xe0, 0x7d, 0x78, 0xc0}), 0);              // VEX map 0: invalid
}

TEST(X86Decode, Refusals) {
  EXPECT_EQ(len({}), 0);
  EXPECT_EQ(len({0xb8, 0x01, 0x00, 0x00}), 0);  // truncated imm32
  EXPECT_EQ(len({0x48, 0x8b, 0x05, 1, 2, 3}), 0);  // truncated disp32
  EXPECT_EQ(len({0x0f}), 0);
  EXPECT_EQ(len({0x48}), 0);
  EXPECT_EQ(len({0xe9, 0, 0}), 0);
  EXPECT_EQ(len({0x06}), 0);
  EXPECT_EQ(len({0x0f, 0x0f, 0xc1, 0xb4}), 0);  // 3DNow!
  EXPECT_EQ(len({0xd6}), 0);
  EXPECT_EQ(len({0x9a, 1, 2, 3, 4, 5, 6}), 0);
  EXPECT_EQ(len({0x48, 0x66, 0x90}), 0);  // REX not directly before the opcode
  std::vector<uint8_t> run(16, 0x66);
  run.back() = 0x90;
  EXPECT_EQ(len(run), 0);  // 16 bytes long
  std::vector<uint8_t> ok(15, 0x66);
  ok.back() = 0x90;
  EXPECT_EQ(len(ok), 15);  // exactly 15 is fine
  // Never reads past `available`: a valid instruction cut short is refused.
  const std::vector<uint8_t> movabs{0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8};
  for (size_t n = 0; n < movabs.size(); n++) {
    DecodedInstruction d;
    EXPECT_EQ(decode_x86_64(movabs.data(), n, &d), 0) << n;
  }
}

// Random bytes: a length never depends on bytes past it, and never on more bytes than `available`
// (each input sits in an exactly sized heap buffer, so ASan catches an over-read).
TEST(X86Decode, LengthDependsOnlyOnItsOwnBytes) {
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  // Bias towards interesting leading bytes so prefixes, 0F, VEX and EVEX are exercised.
  static const uint8_t kLead[] = {0x66, 0x67, 0xF2, 0xF3, 0x48, 0x41, 0x0F, 0xC4, 0xC5, 0x62, 0xF0, 0x2E};
  int decoded = 0;
  for (int iter = 0; iter < 200000; iter++) {
    uint8_t bytes[15];
    for (auto& b : bytes) b = static_cast<uint8_t>(next());
    const int leads = static_cast<int>(next() % 4);
    for (int i = 0; i < leads; i++) bytes[i] = kLead[next() % sizeof(kLead)];
    std::vector<uint8_t> full(bytes, bytes + 15);
    DecodedInstruction d;
    const int n = decode_x86_64(full.data(), full.size(), &d);
    ASSERT_GE(n, 0);
    ASSERT_LE(n, 15);
    if (n == 0) continue;
    decoded++;
    ASSERT_EQ(d.length, n);
    std::vector<uint8_t> exact(bytes, bytes + n);
    DecodedInstruction e;
    ASSERT_EQ(decode_x86_64(exact.data(), exact.size(), &e), n);
    ASSERT_EQ(e.relative_branch, d.relative_branch);
    ASSERT_EQ(e.branch_offset, d.branch_offset);
    std::vector<uint8_t> shorter(bytes, bytes + n - 1);
    ASSERT_EQ(decode_x86_64(shorter.data(), shorter.size(), &e), 0);
  }
  EXPECT_GT(decoded, 100000);
}

// ---- The real check against objdump ----

struct MappedFile {
  const uint8_t* data = nullptr;
  size_t size = 0;
  struct Segment {
    uint64_t vaddr, filesz, offset;
  };
  std::vector<Segment> loads;
  uint64_t exec_lo = UINT64_MAX, exec_hi = 0;
  std::set<uint64_t> objects;  // addresses of STT_OBJECT symbols

  bool open_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st{};
    if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
      close(fd);
      return false;
    }
    void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return false;
    data = static_cast<const uint8_t*>(p);
    size = static_cast<size_t>(st.st_size);
    Elf64_Ehdr eh;
    memcpy(&eh, data, sizeof(eh));
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_machine != EM_X86_64)
      return false;
    for (size_t i = 0; i < eh.e_phnum; i++) {
      const size_t off = eh.e_phoff + i * eh.e_phentsize;
      if (off + sizeof(Elf64_Phdr) > size) return false;
      Elf64_Phdr ph;
      memcpy(&ph, data + off, sizeof(ph));
      if (ph.p_type != PT_LOAD || ph.p_offset + ph.p_filesz > size) continue;
      loads.push_back({ph.p_vaddr, ph.p_filesz, ph.p_offset});
      if (ph.p_flags & PF_X) {
        exec_lo = std::min(exec_lo, ph.p_vaddr);
        exec_hi = std::max(exec_hi, ph.p_vaddr + ph.p_filesz);
      }
    }
    read_object_symbols(eh);
    return true;
  }
  void read_object_symbols(const Elf64_Ehdr& eh) {
    if (eh.e_shentsize != sizeof(Elf64_Shdr)) return;
    for (size_t i = 0; i < eh.e_shnum; i++) {
      const size_t off = eh.e_shoff + i * sizeof(Elf64_Shdr);
      if (off + sizeof(Elf64_Shdr) > size) return;
      Elf64_Shdr sh;
      memcpy(&sh, data + off, sizeof(sh));
      if ((sh.sh_type != SHT_SYMTAB && sh.sh_type != SHT_DYNSYM) || sh.sh_offset + sh.sh_size > size) continue;
      for (uint64_t s = 0; s + sizeof(Elf64_Sym) <= sh.sh_size; s += sizeof(Elf64_Sym)) {
        Elf64_Sym sym;
        memcpy(&sym, data + sh.sh_offset + s, sizeof(sym));
        if (ELF64_ST_TYPE(sym.st_info) == STT_OBJECT) objects.insert(sym.st_value);
      }
    }
  }
  ~MappedFile() {
    if (data) munmap(const_cast<uint8_t*>(data), size);
  }
  // Bytes at a virtual address, up to the end of its segment's file data.
  const uint8_t* at(uint64_t vaddr, size_t* available) const {
    for (const auto& s : loads) {
      if (vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz) {
        *available = static_cast<size_t>(s.vaddr + s.filesz - vaddr);
        return data + s.offset + (vaddr - s.vaddr);
      }
    }
    return nullptr;
  }
};

struct Insn {
  uint64_t addr;
  bool gap_after;    // objdump skipped bytes ("...") after it: its end is unknown
  bool has_target;   // objdump printed a direct branch target
  uint64_t target;
  std::string mnemonic;
};

struct Func {
  std::string name;
  std::vector<Insn> insns;
  bool bad = false;   // contains (bad) / .byte: objdump itself is unsure
  bool skip = false;  // starts mid-symbol (window edge)
};

struct Stats {
  uint64_t functions = 0, skipped_bad = 0, refused = 0, instructions = 0;
  uint64_t length_mismatches = 0, branch_mismatches = 0;
  std::map<std::string, uint64_t> refused_by_mnemonic;
  std::vector<std::string> refusal_examples, mismatch_examples;
};

bool is_hex(const std::string& s) {
  if (s.empty()) return false;
  for (char ch : s)
    if (!isxdigit(static_cast<unsigned char>(ch))) return false;
  return true;
}

// Splits objdump's instruction text into mnemonic (prefix words dropped) and a direct branch target.
void parse_text(const char* text, Insn* insn) {
  static const std::set<std::string> kPrefixes = {"bnd", "notrack", "cs", "ds", "ss", "es", "fs", "gs",
                                                  "data16", "addr32", "lock", "rep", "repz", "repnz",
                                                  "repe", "repne", "xacquire", "xrelease", "{disp32}",
                                                  "{disp8}", "{vex}", "{vex3}", "{evex}"};
  std::vector<std::string> tokens;
  const char* p = text;
  while (*p && tokens.size() < 8) {
    while (*p == ' ' || *p == '\t') p++;
    if (!*p || *p == '#' || *p == '<') break;
    const char* start = p;
    while (*p && *p != ' ' && *p != '\t' && *p != '\n') p++;
    tokens.emplace_back(start, p);
    if (*p == '\n') break;
  }
  size_t i = 0;
  while (i < tokens.size() && (kPrefixes.count(tokens[i]) || tokens[i].rfind("rex", 0) == 0)) i++;
  insn->mnemonic = i < tokens.size() ? tokens[i] : std::string("?");
  insn->has_target = false;
  const std::string& m = insn->mnemonic;
  const bool branchy = m[0] == 'j' || m.rfind("call", 0) == 0 || m.rfind("loop", 0) == 0 || m == "xbegin";
  if (branchy && i + 1 < tokens.size() && is_hex(tokens[i + 1])) {
    insn->has_target = true;
    insn->target = strtoull(tokens[i + 1].c_str(), nullptr, 16);
  }
}

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < n; i++) {
    snprintf(buf, sizeof(buf), "%02x ", p[i]);
    s += buf;
  }
  return s;
}

// Sweeps one function from its start; `end` (when known) is where objdump's next instruction starts.
void check_function(const MappedFile& file, const Func& f, bool end_known, uint64_t end, Stats* st) {
  if (f.skip || f.insns.empty()) return;
  if (f.bad) {
    st->skipped_bad++;
    return;
  }
  st->functions++;
  uint64_t pos = f.insns[0].addr;
  for (size_t i = 0; i < f.insns.size(); i++) {
    const Insn& in = f.insns[i];
    pos = in.addr;  // equal to the sweep position except after a "..." gap
    size_t avail = 0;
    const uint8_t* bytes = file.at(pos, &avail);
    if (bytes == nullptr) return;
    DecodedInstruction d;
    const int n = decode_x86_64(bytes, avail, &d);
    if (n == 0) {
      st->refused++;
      st->refused_by_mnemonic[in.mnemonic]++;
      if (st->refusal_examples.size() < 12) {
        char head[64];
        snprintf(head, sizeof(head), "%#llx ", static_cast<unsigned long long>(pos));
        st->refusal_examples.push_back(head + f.name.substr(0, 60) + ": " + in.mnemonic + " [" +
                                       hex_bytes(bytes, std::min<size_t>(avail, 15)) + "]");
      }
      return;
    }
    bool next_known = !in.gap_after && (i + 1 < f.insns.size() || end_known);
    const uint64_t next = i + 1 < f.insns.size() ? f.insns[i + 1].addr : end;
    if (next_known) {
      st->instructions++;
      if (pos + static_cast<uint64_t>(n) != next) {
        st->length_mismatches++;
        if (st->mismatch_examples.size() < 20) {
          char head[96];
          snprintf(head, sizeof(head), "LENGTH %#llx decoded %d objdump %lld ",
                   static_cast<unsigned long long>(pos), n, static_cast<long long>(next - pos));
          st->mismatch_examples.push_back(head + f.name.substr(0, 60) + ": " + in.mnemonic + " [" +
                                          hex_bytes(bytes, std::min<size_t>(avail, 15)) + "]");
        }
        return;
      }
    }
    const bool both = d.relative_branch && in.has_target;
    if (d.relative_branch != in.has_target ||
        (both && pos + static_cast<uint64_t>(d.branch_offset) != in.target)) {
      st->branch_mismatches++;
      if (st->mismatch_examples.size() < 20) {
        char head[96];
        snprintf(head, sizeof(head), "BRANCH %#llx decoded rel=%d off=%lld ",
                 static_cast<unsigned long long>(pos), d.relative_branch ? 1 : 0,
                 static_cast<long long>(d.branch_offset));
        st->mismatch_examples.push_back(head + f.name.substr(0, 60) + ": " + in.mnemonic + " [" +
                                        hex_bytes(bytes, static_cast<size_t>(n)) + "]");
      }
    }
  }
}

// Runs objdump over [start, stop) (whole file when stop == 0), at most `cap` instruction lines.
bool run_objdump(const std::string& path, const MappedFile& file, uint64_t start, uint64_t stop, uint64_t cap,
                 Stats* st) {
  std::string cmd = "objdump -d --no-show-raw-insn -w";
  if (stop != 0) {
    char range[96];
    snprintf(range, sizeof(range), " --start-address=%#llx --stop-address=%#llx",
             static_cast<unsigned long long>(start), static_cast<unsigned long long>(stop));
    cmd += range;
  }
  cmd += " '" + path + "' 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return false;
  char* line = nullptr;
  size_t line_cap = 0;
  uint64_t lines = 0;
  Func cur, pending;
  bool cur_open = false, have_pending = false;
  auto flush_pending_unknown = [&] {
    if (have_pending) check_function(file, pending, false, 0, st);
    have_pending = false;
  };
  bool first_block = true;
  while (getline(&line, &line_cap, pipe) > 0) {
    const char* p = line;
    if (strncmp(p, "Disassembly of section", 22) == 0) {
      flush_pending_unknown();
      if (cur_open) check_function(file, cur, false, 0, st);
      cur_open = false;
      continue;
    }
    if (isxdigit(static_cast<unsigned char>(p[0]))) {  // "<addr> <name>:" starts a block
      const char* lt = strchr(p, '<');
      const char* gt = strrchr(p, '>');
      if (!lt || !gt || gt < lt || gt[1] != ':') continue;
      flush_pending_unknown();
      if (cur_open) {
        pending = std::move(cur);
        have_pending = true;
      }
      cur = Func{};
      cur.name.assign(lt + 1, gt);
      // A window can start inside a symbol; its first block is not a function start.
      cur.skip = stop != 0 && first_block;
      // objdump dumps data objects in code sections as text, not as instructions.
      const unsigned long long block_addr = strtoull(p, nullptr, 16);
      if (file.objects.count(block_addr)) cur.bad = true;
      first_block = false;
      cur_open = true;
      continue;
    }
    while (*p == ' ') p++;
    if (strncmp(line, "\t...", 4) == 0) {
      if (cur_open && !cur.insns.empty()) cur.insns.back().gap_after = true;
      flush_pending_unknown();
      continue;
    }
    char* colon = nullptr;
    const unsigned long long addr = strtoull(p, &colon, 16);
    if (colon == p || colon[0] != ':' || colon[1] != '\t' || !cur_open) continue;
    if (have_pending) {
      check_function(file, pending, true, addr, st);
      have_pending = false;
    }
    const char* text = colon + 2;
    if (strstr(text, "(bad)") || strstr(text, ".byte")) cur.bad = true;
    Insn in{addr, false, false, 0, {}};
    parse_text(text, &in);
    // Not an instruction line (data dump), or a lone prefix objdump printed because the instruction
    // ran into the next symbol: objdump's own boundaries are unreliable there.
    const char m0 = in.mnemonic[0];
    if (!((m0 >= 'a' && m0 <= 'z') || m0 == '{')) cur.bad = true;
    if (!cur.insns.empty() && !cur.insns.back().gap_after && addr - cur.insns.back().addr > 15) cur.bad = true;
    cur.insns.push_back(std::move(in));
    if (++lines >= cap) break;
  }
  free(line);
  flush_pending_unknown();
  // The last block's end is unknown (cap or window edge); its last instruction goes unchecked.
  if (cur_open) check_function(file, cur, false, 0, st);
  pclose(pipe);
  return true;
}

bool have_objdump() { return system("objdump --version >/dev/null 2>&1") == 0; }

std::string realpath_of(const std::string& p) {
  char buf[PATH_MAX];
  return realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

std::vector<std::string> candidate_binaries() {
  std::vector<std::string> out;
  auto add = [&](const std::string& p) {
    const std::string r = realpath_of(p);
    if (!r.empty() && access(r.c_str(), R_OK) == 0 && std::find(out.begin(), out.end(), r) == out.end())
      out.push_back(r);
  };
  add("/lib/x86_64-linux-gnu/libc.so.6");
  add("/lib/x86_64-linux-gnu/libstdc++.so.6");
  if (FILE* f = popen("command -v node 2>/dev/null", "r")) {
    char buf[PATH_MAX] = {0};
    if (fgets(buf, sizeof(buf), f)) {
      std::string s(buf);
      while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
      if (!s.empty()) add(s);
    }
    pclose(f);
  }
  glob_t g{};
  if (glob("/usr/lib/jvm/*/lib/server/libjvm.so", 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++) add(g.gl_pathv[i]);
  }
  globfree(&g);
  return out;
}

TEST(X86DecodeAgainstObjdump, RealBinariesDecodeExactly) {
  if (!have_objdump()) GTEST_SKIP() << "objdump not installed";
  const std::vector<std::string> bins = candidate_binaries();
  if (bins.empty()) GTEST_SKIP() << "no binaries found";
  // Bounded by default to keep the runtime short; X86_DECODE_FULL=1 checks every binary whole.
  const bool full = getenv("X86_DECODE_FULL") != nullptr;
  const uint64_t kSmallText = full ? UINT64_MAX : (4u << 20);  // smaller executable ranges are checked whole
  constexpr uint64_t kWindows = 8, kWindowBytes = 768u << 10;
  const uint64_t kCapPerBinary = full ? UINT64_MAX : 1600000;  // instruction lines
  bool saw_libc = false;
  for (const std::string& path : bins) {
    MappedFile file;
    if (!file.open_file(path) || file.exec_hi <= file.exec_lo) {
      std::cout << "[ skipped ] " << path << ": not a readable x86-64 ELF\n";
      continue;
    }
    Stats st;
    const uint64_t text = file.exec_hi - file.exec_lo;
    if (text <= kSmallText) {
      ASSERT_TRUE(run_objdump(path, file, 0, 0, kCapPerBinary, &st));
    } else {
      // Big binaries: a few windows spread over the code, not just its beginning.
      for (uint64_t w = 0; w < kWindows; w++) {
        const uint64_t start = file.exec_lo + (text - kWindowBytes) / (kWindows - 1) * w;
        ASSERT_TRUE(run_objdump(path, file, start, start + kWindowBytes, kCapPerBinary / kWindows, &st));
      }
    }
    std::cout << "[ decoder ] " << path << ": functions=" << st.functions << " instructions=" << st.instructions
              << " refused_functions=" << st.refused << " skipped_bad=" << st.skipped_bad
              << " length_mismatches=" << st.length_mismatches << " branch_mismatches=" << st.branch_mismatches
              << "\n";
    std::vector<std::pair<uint64_t, std::string>> top;
    for (const auto& [m, c] : st.refused_by_mnemonic) top.emplace_back(c, m);
    std::sort(top.rbegin(), top.rend());
    if (!top.empty()) {
      std::cout << "            refused by mnemonic:";
      for (size_t i = 0; i < top.size() && i < 12; i++) std::cout << " " << top[i].second << "=" << top[i].first;
      std::cout << "\n";
    }
    for (const auto& e : st.refusal_examples) std::cout << "            refused " << e << "\n";
    for (const auto& e : st.mismatch_examples) std::cout << "            MISMATCH " << e << "\n";
    EXPECT_EQ(st.length_mismatches, 0u) << path;
    EXPECT_EQ(st.branch_mismatches, 0u) << path;
    EXPECT_GT(st.functions, 0u) << path;
    if (path.find("/libc.so") != std::string::npos) {
      saw_libc = true;
      EXPECT_GE(static_cast<double>(st.functions - st.refused), 0.99 * static_cast<double>(st.functions))
          << "libc functions refused: " << st.refused << " of " << st.functions;
    }
  }
  if (!saw_libc) std::cout << "[ decoder ] libc.so.6 not found; coverage threshold not checked\n";
}

}  // namespace
}  // namespace rbinder::arch
