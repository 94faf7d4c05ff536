// Prints Philox4x32-10 outputs of csrc/loss/pair_math.h for the Random123
// known-answer inputs; tests/ext/test_pair_math_header.py compares them.
#include <cstdio>

#include "loss/pair_math.h"

int main() {
  using spinerank::philox4x32_10;
  const spinerank::Philox4x32 outs[3] = {
      philox4x32_10({0u, 0u, 0u, 0u}, 0u, 0u),
      philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu, 0xffffffffu),
      philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u, 0x299f31d0u),
  };
  for (const auto& o : outs) std::printf("%08x %08x %08x %08x\n", o.x, o.y, o.z, o.w);
  return 0;
}
