#include "tracee/vdso.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/auxv.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "tracee/memory.h"

namespace rbinder {
namespace {

// Every 64-bit process of one kernel gets the same vDSO image, mapped at its own address: the
// symbol's offset is looked up once, in this process's copy.
struct OwnVdso {
  const uint8_t* base = nullptr;
  size_t size = 0;          // bytes of the image (its PT_LOAD segment)
  uint64_t clock_offset = 0;  // of __vdso_clock_gettime from base, 0 if not found
};

OwnVdso find_own() {
  OwnVdso v;
  const auto* ehdr = reinterpret_cast<const Elf64_Ehdr*>(getauxval(AT_SYSINFO_EHDR));
  if (ehdr == nullptr || std::memcmp(ehdr->e_ident, ELFMAG, SELFMAG) != 0 || ehdr->e_ident[EI_CLASS] != ELFCLASS64) return v;
  const auto* base = reinterpret_cast<const uint8_t*>(ehdr);
  const auto* phdr = reinterpret_cast<const Elf64_Phdr*>(base + ehdr->e_phoff);
  int64_t load_bias = 0;
  const Elf64_Dyn* dynamic = nullptr;
  bool have_load = false;
  for (int i = 0; i < ehdr->e_phnum; i++) {
    if (phdr[i].p_type == PT_LOAD && !have_load) {
      have_load = true;
      load_bias = static_cast<int64_t>(phdr[i].p_offset) - static_cast<int64_t>(phdr[i].p_vaddr);
      v.size = phdr[i].p_filesz;
    } else if (phdr[i].p_type == PT_DYNAMIC) {
      dynamic = reinterpret_cast<const Elf64_Dyn*>(base + phdr[i].p_offset);
    }
  }
  if (!have_load || dynamic == nullptr) return v;
  const Elf64_Sym* symtab = nullptr;
  const char* strtab = nullptr;
  const uint32_t* hash = nullptr;
  for (const Elf64_Dyn* d = dynamic; d->d_tag != DT_NULL; d++) {
    const uint8_t* at = base + load_bias + d->d_un.d_ptr;
    if (d->d_tag == DT_SYMTAB) symtab = reinterpret_cast<const Elf64_Sym*>(at);
    if (d->d_tag == DT_STRTAB) strtab = reinterpret_cast<const char*>(at);
    if (d->d_tag == DT_HASH) hash = reinterpret_cast<const uint32_t*>(at);
  }
  if (symtab == nullptr || strtab == nullptr || hash == nullptr) return v;
  const uint32_t count = hash[1];  // nchain: the number of symbols
  for (uint32_t i = 0; i < count; i++) {
    const Elf64_Sym& s = symtab[i];
    if (ELF64_ST_TYPE(s.st_info) == STT_FUNC && s.st_shndx != SHN_UNDEF &&
        std::strcmp(strtab + s.st_name, "__vdso_clock_gettime") == 0) {
      v.clock_offset = static_cast<uint64_t>(static_cast<int64_t>(s.st_value) + load_bias);
      break;
    }
  }
  v.base = base;
  return v;
}

uint64_t auxv_value(pid_t pid, uint64_t type) {
  const std::string path = "/proc/" + std::to_string(pid) + "/auxv";
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint64_t pair[2];
  uint64_t found = 0;
  while (read(fd, pair, sizeof(pair)) == static_cast<ssize_t>(sizeof(pair)) && pair[0] != AT_NULL) {
    if (pair[0] == type) {
      found = pair[1];
      break;
    }
  }
  close(fd);
  return found;
}

}  // namespace

uint64_t tracee_vdso_clock_gettime(pid_t pid) {
  static const OwnVdso own = find_own();
  if (own.clock_offset == 0 || own.size == 0) return 0;
  const uint64_t base = auxv_value(pid, AT_SYSINFO_EHDR);
  if (base == 0) return 0;
  // The same image, byte for byte (a process of another ABI, or another kernel's vDSO image
  // restored by a checkpoint tool, would differ).
  std::string theirs(own.size, '\0');
  if (read_tracee(pid, TraceeAddr{base}, theirs.data(), own.size) != static_cast<long>(own.size) ||
      std::memcmp(theirs.data(), own.base, own.size) != 0)
    return 0;
  return base + own.clock_offset;
}

}  // namespace rbinder
