/**
 * ISA audit of a disassembly (objdump -d --demangle --no-show-raw-insn): which functions use VEX (AVX/AVX2) or EVEX
 * (AVX-512) instructions. AVX2 code must stay in the zt::avx2 namespace and AVX-512 code in zt::avx512,
 * reached only through the runtime dispatch, or a CPU without them dies with SIGILL on a narrower path.
 */
export interface FunctionIsa {
  name: string;
  ymm: number; // instructions on 256-bit registers
  vex: number; // VEX-encoded instructions (v-prefixed on xmm/ymm registers)
  zmm: number; // AVX-512 registers or mask registers (zt::avx512 only)
}

export function functionsUsingVex(disassembly: string): FunctionIsa[] {
  const out: FunctionIsa[] = [];
  let cur: FunctionIsa | undefined;
  for (const line of disassembly.split('\n')) {
    const head = /^[0-9a-f]+ <(.+)>:$/.exec(line);
    if (head) {
      cur = { name: head[1], ymm: 0, vex: 0, zmm: 0 };
      out.push(cur);
      continue;
    }
    const insn = /^\s+[0-9a-f]+:\t(\S+)\s*(.*)$/.exec(line);
    if (!insn || !cur) continue;
    const [, op, args] = insn;
    if (/%ymm/.test(args)) cur.ymm++;
    if (/%zmm|%k[0-7]\b|\{%k/.test(args)) cur.zmm++;
    if (/^v/.test(op) && /%[xyz]mm/.test(args)) cur.vex++;
  }
  return out.filter((f) => f.vex || f.ymm || f.zmm);
}

export const inAvx2Namespace = (name: string) => /(^|[\s(*&<,])zt::avx2::/.test(name);
export const inAvx512Namespace = (name: string) => /(^|[\s(*&<,])zt::avx512::/.test(name);
