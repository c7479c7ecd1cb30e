/**
 * A LlamaModel resident on the GPU (cuda/kernels/llama.h): weights uploaded once, a forward, a ZO
 * probe (+eps and -eps, perturb-on-load) or a ZO update is one native call whose ops all run on
 * one stream, only the scalars and the requested logits coming back. 'emulated' runs the same
 * orchestration and the kernels' per-thread code on the host (no GPU): tests and gpu-check.
 *
 * Same calls as LlamaModel for ZoOptimizer (zoProbe / zoUpdate / trainable) and for generation
 * (createCache, forward with a cache, generate / generateBatch: the cache in device memory, the
 * decode loop native (each step's next tokens sampled on the host from the copied-back logits with
 * the CPU's rule), with
 * zo-sgd-momentum / zo-adam (zoOptimStep: their state in device memory beside the weights).
 * Every weight scheme runs, w8a8 / w4a8 included.
 *
 * Kernels: 'exact' (default) keeps the CPU's order in every linear, so logits equal the CPU model's
 * bit for bit (when every GEMM has more than 4 rows); 'fast' runs linears of <= 16 rows on the fast
 * gemv kernel and larger ones on bf16 tensor cores (weights decoded and perturbed into bf16 once per
 * call, activations rounded to bf16, fp32 accumulation), like a bf16 PyTorch model: close to the
 * CPU's logits (bf16 rounding), not equal to them. w8a8 / w4a8 forwards equal the CPU's with both
 * sets (the integer GEMM is exact); their fast probes round W' to bf16.
 */
import { ZotuneError, fail } from '../errors';
import { cudaAddon, selectBackend } from '../backend';
import { loadCuda } from '../native/load';
import type { CudaAddon, LlamaDeviceCacheHandle, LlamaDeviceHandle, LlamaDeviceKernels } from '../native/binding';
import { WeightLock, advanceCache, checkFinite, checkSeed, directionArgs, probeSeeds, streamGeneration, withCache } from './llama';
import type { ZoStateStep } from '../zo/optimizer';
import type { CacheSlots, ForwardOptions, ForwardResult, GenerateOptions, LlamaModel, Packed, Sequence, TrainableInfo, ZoProbeManyOptions, ZoProbeOptions, ZoProbeResult, ZoUpdateOptions } from './llama';

export type DeviceKind = 'cuda' | 'emulated';
/** Where work runs: the host model, the GPU copy ('auto': the GPU when one works, else the CPU), or the emulated copy. */
export type DeviceChoice = 'cpu' | 'auto' | 'cuda' | 'emulated';
export const DEVICE_CHOICES: readonly DeviceChoice[] = ['cpu', 'auto', 'cuda', 'emulated'];

/** Where placeModel put the work and why. */
export interface Placement {
  /** The device copy (undefined: the work runs on the host model). */
  device?: DeviceLlamaModel;
  info: { ran: 'cpu' | 'cuda' | 'emulated'; kernels?: LlamaDeviceKernels; reason: string };
}

/**
 * The device copy of `model` for `want`. 'auto' takes the GPU when one works and falls back to the
 * CPU with its reason (also when `limit` says why the work cannot use the device, or the device model
 * refuses the weights with ZOTUNE_UNSUPPORTED); 'cuda' / 'emulated' with a limit are
 * ZOTUNE_UNSUPPORTED, 'cuda' without a usable GPU ZOTUNE_CUDA_UNAVAILABLE with the reason.
 */
export async function placeModel(model: LlamaModel, want: DeviceChoice, kernels?: LlamaDeviceKernels, limit?: string): Promise<Placement> {
  if (!DEVICE_CHOICES.includes(want)) fail('ZOTUNE_INVALID_ARGUMENT', `device must be one of ${DEVICE_CHOICES.join(', ')}, got ${String(want)}`);
  if (want === 'cpu') return { info: { ran: 'cpu', reason: 'device cpu (the default)' } };
  if (want === 'auto') {
    if (limit) return { info: { ran: 'cpu', reason: `auto: ${limit}` } };
    const b = selectBackend('auto');
    if (b.backend === 'cpu') return { info: { ran: 'cpu', reason: b.reason } };
    try {
      const device = await model.toDevice('cuda', { kernels });
      return { device, info: { ran: 'cuda', kernels: device.kernels, reason: b.reason } };
    } catch (err) {
      if (err instanceof ZotuneError && err.code === 'ZOTUNE_UNSUPPORTED') return { info: { ran: 'cpu', reason: `auto: ${err.message}` } };
      throw err;
    }
  }
  if (limit) fail('ZOTUNE_UNSUPPORTED', `device '${want}': ${limit}; use device 'cpu' (or 'auto', which falls back to it)`);
  const device = await model.toDevice(want, { kernels });
  return { device, info: { ran: want, kernels: device.kernels, reason: `device ${want} requested` } };
}

/**
 * A KV cache of a DeviceLlamaModel: keys and values of every layer in the device model's memory
 * (the GPU's pool, category activations), the fill levels here. One call at a time may use it.
 */
export class DeviceKVCache implements CacheSlots {
  readonly batch: number;
  readonly capacity: number;
  readonly layout: string;
  /** Slots filled per sequence. */
  readonly length: Int32Array;
  /** Next rotary position per sequence (real tokens seen). */
  readonly nextPosition: Int32Array;
  /** @internal */ busy = false;
  private handle: LlamaDeviceCacheHandle | null;
  private readonly addon: CudaAddon;

  /** Use DeviceLlamaModel.createCache(). */
  constructor(addon: CudaAddon, handle: LlamaDeviceCacheHandle, layout: string, batch: number, capacity: number) {
    this.addon = addon;
    this.handle = handle;
    this.layout = layout;
    this.batch = batch;
    this.capacity = capacity;
    this.length = new Int32Array(batch);
    this.nextPosition = new Int32Array(batch);
  }

  /** @internal */
  live(): LlamaDeviceCacheHandle {
    if (!this.handle) fail('ZOTUNE_DISPOSED', 'the KV cache was disposed');
    return this.handle;
  }

  /** Forgets every cached token (the memory is kept). */
  reset(): void {
    if (this.busy) fail('ZOTUNE_INVALID_ARGUMENT', 'the KV cache is in use by another call');
    this.addon.llamaDeviceCacheReset(this.live());
    this.length.fill(0);
    this.nextPosition.fill(0);
  }

  dispose(): void {
    if (!this.handle) return;
    this.addon.llamaDeviceCacheFree(this.handle);
    this.handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** LlamaModel's ForwardOptions with a device cache. */
export type DeviceForwardOptions = Omit<ForwardOptions, 'cache'> & { cache?: DeviceKVCache };
export interface ToDeviceOptions {
  /** 'exact' (default): the CPU's GEMM order; 'fast': fast gemv + bf16 tensor cores. */
  kernels?: LlamaDeviceKernels;
}

export class DeviceLlamaModel {
  readonly kind: DeviceKind;
  readonly kernels: LlamaDeviceKernels;
  /** The host model this copy was made from (config, tokenizer-independent metadata, trainable set). */
  readonly host: LlamaModel;
  /** Kernel milliseconds of the last call (CUDA events; 0 when emulated). */
  lastKernelMs = 0;
  private readonly addon: CudaAddon;
  private handle: LlamaDeviceHandle | null;
  private readonly lock = new WeightLock();

  private constructor(host: LlamaModel, kind: DeviceKind, kernels: LlamaDeviceKernels, addon: CudaAddon, handle: LlamaDeviceHandle) {
    this.host = host;
    this.kind = kind;
    this.kernels = kernels;
    this.addon = addon;
    this.handle = handle;
  }

  /** Use LlamaModel.toDevice(). */
  static async create(host: LlamaModel, kind: DeviceKind, opts: ToDeviceOptions = {}): Promise<DeviceLlamaModel> {
    if (kind !== 'cuda' && kind !== 'emulated') fail('ZOTUNE_INVALID_ARGUMENT', `device must be 'cuda' or 'emulated', got ${String(kind)}`);
    const kernels = opts.kernels ?? 'exact';
    if (kernels !== 'exact' && kernels !== 'fast') fail('ZOTUNE_INVALID_ARGUMENT', `kernels must be 'exact' or 'fast', got ${String(kernels)}`);
    let addon: CudaAddon;
    if (kind === 'cuda') addon = cudaAddon();
    else {
      const load = loadCuda();
      if (!load.addon) fail('ZOTUNE_CUDA_UNAVAILABLE', `the emulated device model needs the CUDA addon: ${load.error ?? 'not built'} (npm run build:cuda)`);
      addon = load.addon;
    }
    const a = host.nativeArgs(true);
    const handle = await addon.llamaDeviceCreateAsync(a.cfg, a.ids, kind === 'emulated', kernels, ...a.weights);
    return new DeviceLlamaModel(host, kind, kernels, addon, handle);
  }

  private live(): LlamaDeviceHandle {
    if (!this.handle) fail('ZOTUNE_DISPOSED', 'the device model was disposed');
    return this.handle;
  }

  /** A KV cache on the device for `batch` sequences of up to `capacity` tokens (default: max_position_embeddings). */
  createCache(batch = 1, capacity = this.host.config.maxPositionEmbeddings): DeviceKVCache {
    const h = this.live(), c = this.host.config;
    if (!Number.isSafeInteger(batch) || batch < 1) fail('ZOTUNE_INVALID_ARGUMENT', `cache batch must be a positive integer, got ${batch}`);
    if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > c.maxPositionEmbeddings)
      fail('ZOTUNE_OUT_OF_RANGE', `cache capacity must be in [1, max_position_embeddings ${c.maxPositionEmbeddings}], got ${capacity}`);
    const handle = this.addon.llamaDeviceCacheCreate(h, batch, capacity);
    return new DeviceKVCache(this.addon, handle, [c.numLayers, c.numKvHeads, c.headDim].join(), batch, capacity);
  }

  /** One forward pass (LlamaModel.forward), continuing a device cache when given. */
  async forward(batch: readonly Sequence[], opts: DeviceForwardOptions = {}): Promise<ForwardResult> {
    const cache = this.deviceCache(opts.cache);
    const m = this.host, p = m.pack(batch, opts, false);
    const rows = m.logitRows(p, opts.logits);
    const subset = m.vocabSubset(p, opts);
    const V = subset ? subset.length : m.config.vocabSize;
    const logprobs = p.targets ? new Float64Array(p.tokens.length) : null;
    const logits = rows ? new Float32Array(rows.length * V) : null;
    const r = await this.call(p, cache, logprobs, rows, logits, subset, null, null, 0);
    return m.result(p, batch.length, opts.logits ?? 'last', r, logprobs, logits, V);
  }

  /**
   * Generates continuations of several prompts at once with one device KV cache (LlamaModel.generateBatch:
   * the same options, stops and sampling streams).
   */
  async *generateBatch(prompts: readonly Sequence[], opts: GenerateOptions = {}): AsyncGenerator<(number | undefined)[]> {
    const h = this.live();
    // The decode loop runs natively (llamaDeviceGenerate: the CPU's loop over the device forward),
    // its steps streamed back while later ones run; the cache's fill levels advance in place.
    yield* streamGeneration(this.host, prompts, opts, (B, cap) => this.createCache(B, cap), (p, cache, plan, onStep) =>
      withCache(cache, () =>
        this.lock.read(() =>
          this.addon.llamaDeviceGenerateAsync(h, p.tokens, p.offsets, p.positions, p.keyMask, cache.live(), cache.length, cache.nextPosition,
            plan.sample, plan.seed, plan.maxNew, Int32Array.from(plan.stop), onStep),
        ),
      ), () => void this.live());
  }

  /** Streams the continuation of one prompt, token by token (the stop token included). */
  async *generate(prompt: Sequence, opts: GenerateOptions = {}): AsyncGenerator<number> {
    for await (const step of this.generateBatch([prompt], opts)) {
      if (step[0] === undefined) return;
      yield step[0];
    }
  }

  private deviceCache(cache: unknown): DeviceKVCache | undefined {
    if (cache === undefined) return undefined;
    if (!(cache instanceof DeviceKVCache)) fail('ZOTUNE_INVALID_ARGUMENT', "the device model continues a cache from its own createCache() (a host model's KVCache lives in host memory)");
    return cache;
  }

  // One llamaDeviceForward: the cache marked busy for the call and advanced after it.
  private async call(p: Packed, cache: DeviceKVCache | undefined, logprobs: Float64Array | null, rows: Int32Array | null, logits: Float32Array | null,
    subset: Int32Array | null, next: Int32Array | null, sample: Float64Array | null, seed: number | bigint) {
    const h = this.live();
    const r = await withCache(cache, () =>
      this.lock.read(() =>
        this.addon.llamaDeviceForwardAsync(h, p.tokens, p.offsets, p.positions, p.keyMask, p.targets, logprobs, rows, logits, subset,
          cache ? cache.live() : null, cache ? cache.length : null, next, sample, seed),
      ),
    );
    if (cache) advanceCache(cache, p);
    this.lastKernelMs = r.kernelMs;
    return r;
  }

  /** LlamaModel.zoProbe: both forwards in one call, perturbed on load (no weight written) or in place (fp32 trainable tensors). */
  async zoProbe(batch: readonly Sequence[], opts: ZoProbeOptions): Promise<ZoProbeResult> {
    return (await this.probe(batch, opts, probeSeeds(opts, false)[0]))[0];
  }

  /**
   * LlamaModel.zoProbeMany on the device copy, the same results in one call: on load, the layers
   * below the first trainable tensor run once for every query and sign; in place, each query's
   * two forwards run whole.
   */
  async zoProbeMany(batch: readonly Sequence[], opts: ZoProbeManyOptions): Promise<ZoProbeResult[]> {
    return this.probe(batch, opts, BigUint64Array.from(probeSeeds(opts, true), (s) => BigInt(s)));
  }

  private async probe(batch: readonly Sequence[], opts: Omit<ZoProbeOptions, 'seed'>, seeds: number | bigint | BigUint64Array): Promise<ZoProbeResult[]> {
    const h = this.live();
    const m = this.host;
    const bufs = m.probeBuffers(batch, opts, typeof seeds === 'object' ? seeds.length : 1);
    const { p, rows, subset, lpPlus, lpMinus, lgPlus, lgMinus, dist, bits, eps, mode } = bufs;
    const flags = m.nativeArgs().flags.slice();
    const call = () =>
      this.addon.llamaDeviceZoProbeAsync(h, p.tokens, p.offsets, p.positions, p.keyMask, p.targets, lpPlus, lpMinus, rows, lgPlus, lgMinus, subset,
        seeds, dist, bits, eps, flags, mode === 'in-place' ? 1 : 0);
    const r = await (mode === 'in-place' ? this.lock.write(call) : this.lock.read(call));  // in place writes the weights
    this.lastKernelMs = r.kernelMs;
    return m.probeResults(batch.length, opts, 'queries' in r ? r.queries : [r], bufs);
  }

  /** LlamaModel.zoUpdate on the device copy (weight decay on the tensors the host model decays). */
  async zoUpdate(opts: ZoUpdateOptions): Promise<void> {
    const h = this.live();
    if (!opts || typeof opts !== 'object') fail('ZOTUNE_INVALID_ARGUMENT', 'zoUpdate needs options {seed, scale}');
    checkSeed(opts.seed);
    const scale = checkFinite(opts.scale, 'scale');
    const decay = checkFinite(opts.decay ?? 0, 'decay');
    if (decay < 0 || decay > 1) fail('ZOTUNE_INVALID_ARGUMENT', `decay must be in [0, 1], got ${decay}`);
    const [dist, bits] = directionArgs(opts.direction);
    const list = this.host.trainable();
    const ids = Uint32Array.from(list, (t) => t.id), decays = Uint8Array.from(list, (t) => (t.decay ? 1 : 0));
    const r = await this.lock.write(() => this.addon.llamaDeviceZoUpdateAsync(h, opts.seed, dist, bits, scale, decay, ids, decays));
    this.lastKernelMs = r.kernelMs;
  }

  /**
   * One zo-sgd-momentum / zo-adam step (ZoOptimizer.apply) on the device copy: the CPU zoOptimStep's
   * bits on every trainable tensor (fp32 only), the state kept in device memory under `slot`.
   */
  async zoOptimStep(slot: number, step: ZoStateStep): Promise<void> {
    const h = this.live();
    const list = this.host.trainable();
    for (const t of list)
      if (t.scheme !== 'fp32') fail('ZOTUNE_UNSUPPORTED', `zo-sgd-momentum / zo-adam keep fp32 state and update fp32 weights; '${t.name}' is ${t.scheme} (use mezo or quzo for quantized weights)`);
    const ids = Uint32Array.from(list, (t) => t.id), decays = Float32Array.from(list, (t) => (t.decay ? step.decay : 0));
    const r = await this.lock.write(() =>
      this.addon.llamaDeviceZoOptimStepAsync(h, slot, step.kind, step.seeds, step.dist, step.bits, step.coefs, step.lr, step.beta1, step.beta2,
        step.adamEps, step.bias1, step.bias2, ids, decays),
    );
    this.lastKernelMs = r.kernelMs;
  }

  /** Frees the optimiser state kept under `slot` (ZoOptimizer.dispose), after the calls in flight. */
  zoOptimFree(slot: number): void {
    const h = this.handle;
    if (!h) return; // the model's memory went with it
    void this.lock.write(() => this.addon.llamaDeviceZoOptimFreeAsync(h, slot)).catch(() => undefined); // a freed model holds nothing
  }

  /** The host model's trainable tensors (setTrainable on the host model chooses them). */
  trainable(): TrainableInfo[] {
    return this.host.trainable();
  }

  trainableTensors(): never {
    fail('ZOTUNE_UNSUPPORTED', 'the device model keeps its weights in device memory (zo-sgd-momentum / zo-adam run through zoOptimStep)');
  }

  /** Copies the device weights back into the host model's tensors (no host call may run meanwhile). */
  async toHost(): Promise<void> {
    const h = this.live();
    const a = this.host.nativeArgs(true), seen = new Set<number>();
    await this.lock.read(async () => {
      for (let i = 0; i < a.weights.length; i++) {
        if (seen.has(a.ids[i])) continue; // a tied LM head is the embedding
        seen.add(a.ids[i]);
        await this.addon.llamaDeviceReadAsync(h, i, a.weights[i]);
      }
    });
  }

  /** Frees the device copy (after calls in flight). */
  dispose(): void {
    if (!this.handle) return;
    this.addon.llamaDeviceFree(this.handle);
    this.handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
