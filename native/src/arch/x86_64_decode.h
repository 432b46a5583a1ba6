// Exact-length x86-64 instruction decoder, used to tell whether an address is an instruction boundary.
// It refuses (returns 0) anything it does not know exactly: a refusal is always safe, a wrong length is not.
#pragma once
#include <cstddef>
#include <cstdint>
namespace rbinder::arch {
struct DecodedInstruction {
  uint8_t length = 0;            // bytes, 1..15
  bool relative_branch = false;  // jmp/jcc/call/loop*/jrcxz/xbegin with a rel8/rel16/rel32 operand
  int64_t branch_offset = 0;     // target minus the address of this instruction's first byte (valid when relative_branch)
};
// Decodes the instruction at code[0 .. available). Returns its length (1..15), filling *out, or 0 when
// the bytes are not an instruction this decoder knows exactly, or are incomplete. Never reads past available.
int decode_x86_64(const uint8_t* code, size_t available, DecodedInstruction* out);
}  // namespace rbinder::arch
