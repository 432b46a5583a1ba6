// Exact-length x86-64 decoder. Every opcode it accepts has a length it knows for certain in 64-bit mode;
// anything else (3DNow!, XOP, APX, SSE4a, opcodes invalid in 64-bit mode, 66-prefixed branches whose
// operand size differs between Intel and AMD) is refused, because a refusal is always safe.
#include "arch/x86_64_decode.h"

namespace rbinder::arch {
namespace {

constexpr size_t kMaxLength = 15;

struct Cursor {
  const uint8_t* code;
  size_t limit;  // min(available, 15): reading past it means truncated or over-long
  size_t pos;
  bool has(size_t n) const { return pos + n <= limit; }
};

bool is_legacy_prefix(uint8_t b) {
  switch (b) {
    case 0x66: case 0x67: case 0xF0: case 0xF2: case 0xF3:
    case 0x2E: case 0x36: case 0x3E: case 0x26: case 0x64: case 0x65:
      return true;
    default:
      return false;
  }
}

// Consumes ModRM, SIB and displacement using 64-bit-mode rules (a 67 prefix selects 32-bit addressing,
// which has the same layout; there is no 16-bit addressing in 64-bit mode).
bool skip_modrm(Cursor& c, uint8_t* modrm_out) {
  if (!c.has(1)) return false;
  const uint8_t modrm = c.code[c.pos++];
  *modrm_out = modrm;
  const uint8_t mod = modrm >> 6;
  const uint8_t rm = modrm & 7;
  if (mod == 3) return true;
  size_t disp = mod == 1 ? 1 : mod == 2 ? 4 : 0;
  if (rm == 4) {
    if (!c.has(1)) return false;
    const uint8_t sib = c.code[c.pos++];
    if (mod == 0 && (sib & 7) == 5) disp = 4;  // no base: disp32
  } else if (mod == 0 && rm == 5) {
    disp = 4;  // RIP-relative
  }
  if (!c.has(disp)) return false;
  c.pos += disp;
  return true;
}

// What follows the opcode byte(s).
struct Shape {
  bool ok = false;      // opcode known
  bool modrm = false;   // ModRM (+SIB/disp) present
  bool modrm_reg_only = false;  // ModRM byte alone: mod is ignored (mov to/from CR/DR)
  size_t imm = 0;       // immediate bytes after ModRM
  size_t rel = 0;       // relative branch displacement bytes (1 or 4)
};

Shape known(bool modrm, size_t imm = 0) {
  Shape s;
  s.ok = true;
  s.modrm = modrm;
  s.imm = imm;
  return s;
}

Shape branch(size_t rel) {
  Shape s;
  s.ok = true;
  s.rel = rel;
  return s;
}

// VEX/EVEX map 1 (the 0F map): which opcodes exist there and which carry an imm8.
Shape vex_map1(uint8_t op, bool evex) {
  if (op == 0x77) return evex ? Shape{} : known(false);  // vzeroupper / vzeroall
  if ((op >= 0x70 && op <= 0x73) || op == 0xC2 || (op >= 0xC4 && op <= 0xC6)) return known(true, 1);
  if ((op >= 0x10 && op <= 0x17) || (op >= 0x28 && op <= 0x2F) || (op >= 0x50 && op <= 0x7F) ||
      (op >= 0xD0) || op == 0xAE)
    return known(true);
  // Opmask instructions exist only as VEX.
  if (!evex && ((op >= 0x41 && op <= 0x4B) || (op >= 0x90 && op <= 0x93) || op == 0x98 || op == 0x99))
    return known(true);
  return Shape{};
}

// Legacy 0F map. `pfx66`/`pfxF2`/`pfxF3` matter only where they select a different instruction form.
Shape two_byte(uint8_t op, bool pfx66, bool pfxF2, bool pfxF3) {
  switch (op) {
    case 0x00: case 0x01: case 0x02: case 0x03: case 0x0D:
      return known(true);
    case 0x05: case 0x06: case 0x07: case 0x08: case 0x09: case 0x0B:
      return known(false);
    case 0x20: case 0x21: case 0x22: case 0x23: {
      Shape s = known(true);
      s.modrm_reg_only = true;
      return s;
    }
    case 0x30: case 0x31: case 0x32: case 0x33: case 0x34: case 0x35: case 0x37:
      return known(false);
    case 0x77:  // emms
      return known(false);
    case 0x78: case 0x79:  // vmread/vmwrite; with 66/F2 it is SSE4a extrq/insertq (refused)
      if (pfx66 || pfxF2) return Shape{};
      return known(true);
    case 0xA0: case 0xA1: case 0xA2: case 0xA8: case 0xA9: case 0xAA:
      return known(false);
    case 0xA4: case 0xAC: case 0xBA: case 0xC2: case 0xC4: case 0xC5: case 0xC6:
      return known(true, 1);
    case 0xB8:  // popcnt only with F3; bare 0F B8 is IA-64 jmpe
      return pfxF3 ? known(true) : Shape{};
    default:
      break;
  }
  if (op >= 0x10 && op <= 0x1F) return known(true);
  if (op >= 0x28 && op <= 0x2F) return known(true);
  if (op >= 0x40 && op <= 0x7F) {
    if (op == 0x7A || op == 0x7B) return Shape{};
    return known(true, (op >= 0x70 && op <= 0x73) ? 1 : 0);
  }
  if (op >= 0x80 && op <= 0x8F) return branch(4);
  if (op >= 0x90 && op <= 0x9F) return known(true);
  if (op == 0xA3 || op == 0xA5 || op == 0xAB || op == 0xAD || op == 0xAE || op == 0xAF) return known(true);
  if (op >= 0xB0 && op <= 0xBF) return known(true);
  if (op >= 0xC0 && op <= 0xC7) return known(true);
  if (op >= 0xC8 && op <= 0xCF) return known(false);  // bswap
  if (op >= 0xD0) return known(true);
  // 04 0A 0C 0E(femms) 0F(3DNow!) 24-27 36 38/3A (handled by caller) 39 3B-3F A6 A7
  return Shape{};
}

// One-byte map in 64-bit mode. `immz` is the size of an Iz immediate under the current operand size.
Shape one_byte(uint8_t op, size_t immz, bool rex_w, bool adsize) {
  if (op < 0x40) {
    switch (op & 7) {
      case 0: case 1: case 2: case 3: return known(true);
      case 4: return known(false, 1);
      case 5: return known(false, immz);
      default: return Shape{};  // 06 07 0E 16 17 1E 1F 27 2F 37 3F; prefixes and 0F never reach here
    }
  }
  if (op >= 0x50 && op <= 0x5F) return known(false);
  if (op >= 0x70 && op <= 0x7F) return branch(1);
  if (op >= 0x84 && op <= 0x8E) return known(true);
  if (op >= 0x90 && op <= 0x99) return known(false);
  if (op >= 0x9B && op <= 0x9F) return known(false);
  if (op >= 0xA4 && op <= 0xA7) return known(false);
  if (op >= 0xAA && op <= 0xAF) return known(false);
  if (op >= 0xB0 && op <= 0xB7) return known(false, 1);
  if (op >= 0xB8 && op <= 0xBF) return known(false, rex_w ? 8 : immz);
  if (op >= 0xD8 && op <= 0xDF) return known(true);  // x87
  if (op >= 0xEC && op <= 0xEF) return known(false);
  if (op >= 0xF8 && op <= 0xFD) return known(false);
  switch (op) {
    case 0x63: return known(true);
    case 0x68: return known(false, immz);
    case 0x69: return known(true, immz);
    case 0x6A: return known(false, 1);
    case 0x6B: return known(true, 1);
    case 0x6C: case 0x6D: case 0x6E: case 0x6F: return known(false);
    case 0x80: case 0x83: return known(true, 1);
    case 0x81: return known(true, immz);
    case 0x8F: return known(true);  // reg checked by caller
    case 0xA0: case 0xA1: case 0xA2: case 0xA3: return known(false, adsize ? 4 : 8);  // moffs
    case 0xA8: return known(false, 1);
    case 0xA9: return known(false, immz);
    case 0xC0: case 0xC1: return known(true, 1);
    case 0xC2: case 0xCA: return known(false, 2);
    case 0xC3: case 0xC9: case 0xCB: case 0xCC: case 0xCF: return known(false);
    case 0xC6: return known(true, 1);     // reg checked by caller
    case 0xC7: return known(true, immz);  // reg checked by caller
    case 0xC8: return known(false, 3);    // enter imm16, imm8
    case 0xCD: return known(false, 1);
    case 0xD0: case 0xD1: case 0xD2: case 0xD3: return known(true);
    case 0xD7: return known(false);
    case 0xE0: case 0xE1: case 0xE2: case 0xE3: case 0xEB: return branch(1);
    case 0xE4: case 0xE5: case 0xE6: case 0xE7: return known(false, 1);
    case 0xE8: case 0xE9: return branch(4);
    case 0xF1: case 0xF4: case 0xF5: return known(false);
    case 0xF6: case 0xF7: case 0xFE: case 0xFF: return known(true);  // imm / reg decided by caller
    default: return Shape{};  // 60 61 82 9A CE D4 D5 D6 EA, and anything unexpected
  }
}

}  // namespace

int decode_x86_64(const uint8_t* code, size_t available, DecodedInstruction* out) {
  if (code == nullptr || out == nullptr) return 0;
  Cursor c{code, available < kMaxLength ? available : kMaxLength, 0};

  bool opsize = false, adsize = false, lock = false, repne = false, rep = false;
  while (c.has(1) && is_legacy_prefix(code[c.pos])) {
    switch (code[c.pos]) {
      case 0x66: opsize = true; break;
      case 0x67: adsize = true; break;
      case 0xF0: lock = true; break;
      case 0xF2: repne = true; break;
      case 0xF3: rep = true; break;
      default: break;  // segment overrides / branch hints do not change length
    }
    c.pos++;
  }
  if (!c.has(1)) return 0;

  uint8_t rex = 0;
  if ((code[c.pos] & 0xF0) == 0x40) {
    rex = code[c.pos++];
    // A REX not directly before the opcode is ignored by the CPU; disassemblers split it off. Refuse.
    if (!c.has(1)) return 0;
    if ((code[c.pos] & 0xF0) == 0x40 || is_legacy_prefix(code[c.pos])) return 0;
  }
  const bool rex_w = (rex & 0x08) != 0;
  const uint8_t op = code[c.pos++];

  Shape shape;
  uint8_t opcode = op;  // the opcode byte inside its map, for reg-field checks
  int map = 0;          // 0: one-byte, 1: 0F, 2: 0F38, 3: 0F3A
  bool vex = false;

  if (op == 0xC4 || op == 0xC5 || op == 0x62) {
    // In 64-bit mode these are always VEX/EVEX (LES/LDS/BOUND do not exist). Legacy SIMD prefixes,
    // LOCK and REX before them #UD.
    if (opsize || rep || repne || lock || rex != 0) return 0;
    vex = true;
    bool evex = false;
    if (op == 0xC5) {
      if (!c.has(2)) return 0;
      c.pos += 1;
      map = 1;
    } else if (op == 0xC4) {
      if (!c.has(3)) return 0;
      map = code[c.pos] & 0x1F;
      c.pos += 2;
      if (map < 1 || map > 3) return 0;
    } else {
      if (!c.has(4)) return 0;
      const uint8_t p0 = code[c.pos], p1 = code[c.pos + 1];
      if ((p0 & 0x08) != 0 || (p1 & 0x04) == 0) return 0;  // reserved bits (APX would set these)
      map = p0 & 0x07;
      c.pos += 3;
      evex = true;
      if (map != 1 && map != 2 && map != 3 && map != 5 && map != 6) return 0;  // 4 and 7: APX/unknown
    }
    opcode = code[c.pos++];
    if (map == 1) shape = vex_map1(opcode, evex);
    else if (map == 3) shape = known(true, 1);
    else shape = known(true);  // maps 2, 5, 6: ModRM, no immediate
  } else if (op == 0x0F) {
    if (!c.has(1)) return 0;
    opcode = code[c.pos++];
    if (opcode == 0x38 || opcode == 0x3A) {
      if (!c.has(1)) return 0;
      map = opcode == 0x38 ? 2 : 3;
      opcode = code[c.pos++];
      shape = known(true, map == 3 ? 1 : 0);
    } else {
      map = 1;
      shape = two_byte(opcode, opsize, repne, rep);
    }
  } else {
    // Iz is 16 bits under 66 unless REX.W forces 64-bit operand size (then imm32 sign-extended).
    const size_t immz = (opsize && !rex_w) ? 2 : 4;
    shape = one_byte(op, immz, rex_w, adsize);
  }
  if (!shape.ok) return 0;

  // Near branches with 66: Intel ignores the prefix, AMD uses rel16. Refuse rather than guess, unless
  // REX.W overrides it on both (the `data16 data16 rex.W call __tls_get_addr` TLS sequence).
  if (shape.rel != 0 && opsize && !rex_w) return 0;

  uint8_t modrm = 0;
  if (shape.modrm) {
    if (shape.modrm_reg_only) {
      if (!c.has(1)) return 0;
      modrm = code[c.pos++];
    } else if (!skip_modrm(c, &modrm)) {
      return 0;
    }
    const uint8_t reg = (modrm >> 3) & 7;
    if (!vex && map == 0) {
      switch (op) {
        case 0x8F:
          if (reg != 0) return 0;  // XOP or invalid
          break;
        case 0xC6:
        case 0xC7:
          if (reg == 7 && modrm == 0xF8) {
            if (op == 0xC7) {  // xbegin rel32 replaces the immediate
              if (opsize && !rex_w) return 0;
              shape.imm = 0;
              shape.rel = 4;
            }
          } else if (reg != 0) {
            return 0;
          }
          break;
        case 0xF6:
          shape.imm = reg <= 1 ? 1 : 0;  // test r/m8, imm8
          break;
        case 0xF7:
          shape.imm = reg <= 1 ? ((opsize && !rex_w) ? 2 : 4) : 0;
          break;
        case 0xFE:
          if (reg > 1) return 0;
          break;
        case 0xFF:
          if (reg == 7) return 0;
          break;
        default:
          break;
      }
    } else if (!vex && map == 1) {
      if (opcode == 0x00 && reg >= 6) return 0;
      if (opcode == 0xBA && reg < 4) return 0;
    }
  }

  if (!c.has(shape.imm)) return 0;
  c.pos += shape.imm;

  int64_t rel = 0;
  if (shape.rel == 1) {
    if (!c.has(1)) return 0;
    rel = static_cast<int8_t>(code[c.pos]);
    c.pos += 1;
  } else if (shape.rel == 4) {
    if (!c.has(4)) return 0;
    const uint32_t u = static_cast<uint32_t>(code[c.pos]) | (static_cast<uint32_t>(code[c.pos + 1]) << 8) |
                       (static_cast<uint32_t>(code[c.pos + 2]) << 16) |
                       (static_cast<uint32_t>(code[c.pos + 3]) << 24);
    rel = static_cast<int32_t>(u);
    c.pos += 4;
  }

  out->length = static_cast<uint8_t>(c.pos);
  out->relative_branch = shape.rel != 0;
  out->branch_offset = shape.rel != 0 ? static_cast<int64_t>(c.pos) + rel : 0;
  return static_cast<int>(c.pos);
}

}  // namespace rbinder::arch
