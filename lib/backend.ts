/**
 * Backend selection: 'cpu' always works; 'cuda' needs the CUDA addon and a GPU it can run on.
 * 'auto' (the default, or ZOTUNE_BACKEND) takes CUDA when usable and otherwise falls back to the
 * CPU quietly; an explicit 'cuda' throws ZOTUNE_CUDA_UNAVAILABLE with the reason and the remedy.
 */
import { ZotuneError, fail } from './errors';
import { loadCuda } from './native/load';
import type { CudaAddon, CudaProbe } from './native/binding';

export type BackendPreference = 'auto' | 'cpu' | 'cuda';
export type Backend = 'cpu' | 'cuda';

export interface CudaStatus {
  /** The CUDA addon loaded and a device runs its kernels. */
  available: boolean;
  /** Why not (with the remedy), or which device will be used. */
  reason: string;
  /** The CUDA binary that loaded, and from where. */
  binary?: { path: string; origin: string };
  /** What the addon found (absent when the addon did not load). */
  probe?: CudaProbe;
}

let status: CudaStatus | undefined;

/** Loads the CUDA addon and probes the GPU, once per process. Never throws. */
export function cudaStatus(): CudaStatus {
  if (status) return status;
  const load = loadCuda();
  if (!load.addon) return (status = { available: false, reason: load.error ?? 'the CUDA addon did not load' });
  const binary = { path: load.binary!.path, origin: load.binary!.origin };
  let probe: CudaProbe;
  try {
    probe = load.addon.probe();
  } catch (err) {
    return (status = { available: false, reason: `probe() failed: ${err instanceof Error ? err.message : String(err)}`, binary });
  }
  if (!probe.usable) {
    const e = probe.error;
    const reason = e ? `${e.name} (${e.code}): ${e.reason}` : 'no usable CUDA device';
    return (status = { available: false, reason, binary, probe });
  }
  const d = probe.devices.find((x) => x.usable)!;
  return (status = { available: true, reason: `device ${d.index}: ${d.name} (compute capability ${d.computeCapability})`, binary, probe });
}

/** What cudaStatus() found, if it ran; never loads the addon or probes. */
export function knownCudaStatus(): CudaStatus | undefined {
  return status;
}

export interface BackendChoice {
  backend: Backend;
  /** Why this backend was chosen. */
  reason: string;
}

function preference(pref: string | undefined): BackendPreference {
  const p = pref ?? process.env.ZOTUNE_BACKEND ?? 'auto';
  if (p !== 'auto' && p !== 'cpu' && p !== 'cuda') fail('ZOTUNE_INVALID_ARGUMENT', `backend must be 'auto', 'cpu' or 'cuda', got '${p}'`);
  return p;
}

/** Picks the backend for `pref` (default: ZOTUNE_BACKEND or 'auto'). */
export function selectBackend(pref?: BackendPreference): BackendChoice {
  const p = preference(pref);
  if (p === 'cpu') return { backend: 'cpu', reason: 'requested' };
  const s = cudaStatus();
  if (s.available) return { backend: 'cuda', reason: `${p === 'cuda' ? 'requested' : 'auto'}: ${s.reason}` };
  if (p === 'auto') return { backend: 'cpu', reason: `auto: CUDA unavailable: ${s.reason}` };
  throw new ZotuneError('ZOTUNE_CUDA_UNAVAILABLE', `backend 'cuda' was requested but CUDA is unavailable: ${s.reason}. Use backend 'auto' or 'cpu' to run on the CPU.`);
}

/** The CUDA addon, only when a GPU can run it (else ZOTUNE_CUDA_UNAVAILABLE with the reason). */
export function cudaAddon(): CudaAddon {
  selectBackend('cuda');
  return loadCuda().addon!;
}
