import { cpuInfo } from '../../lib';

export type KernelPath = 'scalar' | 'avx2' | 'avx512';

/**
 * The kernel paths this CPU can run, narrowest first: scalar always, avx2 with AVX2/FMA/F16C, avx512
 * (AVX2 plus the AVX-512 VNNI integer GEMM and the AVX-512 fp32 GEMM tile) with AVX-512 F/BW/VL/VNNI.
 * Prints which wide paths go untested on this CPU.
 */
export function cpuPaths(what: string): KernelPath[] {
  const info = cpuInfo();
  const paths: KernelPath[] = ['scalar'];
  if (info.avx2) paths.push('avx2');
  if (info.avx2 && info.avx512vnni) paths.push('avx512');
  else console.log(`${what}: the avx512 path is not tested: this CPU lacks ${info.avx2 ? 'AVX-512 VNNI' : 'AVX2'}`);
  return paths;
}
