'use strict';
// onnxruntime-node peers of the GEMM benchmarks. The ONNX models are built in memory as raw
// protobuf bytes (no onnx package):
//   matmul:   Y = X · B, B [K, N] a constant initializer (as for an nn.Linear weight, so ORT may
//             prepack it), the fp32 peer
//   dynamic:  y = DynamicQuantizeLinear(x) -> MatMulInteger(., W int8 [K, N]) -> Cast -> Mul(x_scale) -> Mul(w_scale[N])
//             (the same work as zotune's matmulInt8: per-call activation quantization, int GEMM,
//             f32 rescale; onnxruntime fuses it into its dynamic-quantization kernel)
//   integer:  c = MatMulInteger(a uint8 [M, K], W int8 [K, N], a_zero_point) -> int32 (no quantization)
//   nbits:    y = MatMulNBits(x, W 4-bit) (com.microsoft; int8 compute), the W4A8 peer

// --- protobuf wire format and the ONNX messages used ---------------------------------------------
const FLOAT = 1, UINT8 = 2, INT8 = 3, INT32 = 6;

function varint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}
const key = (field, wire) => varint((field << 3) | wire);
const int = (field, v) => Buffer.concat([key(field, 0), varint(v)]);
const bytes = (field, b) => Buffer.concat([key(field, 2), varint(b.length), b]);
const str = (field, s) => bytes(field, Buffer.from(s, 'utf8'));
const msg = (field, parts) => bytes(field, Buffer.concat(parts));

const node = (op, inputs, outputs, attrs = [], domain = '') =>
  msg(1, [...inputs.map((i) => str(1, i)), ...outputs.map((o) => str(2, o)), str(4, op), ...attrs, ...(domain ? [str(7, domain)] : [])]);
const attrInt = (name, v) => msg(5, [str(1, name), int(3, v), int(20, 2)]); // AttributeProto INT
const dim = (d) => msg(1, [typeof d === 'number' ? int(1, d) : str(2, d)]);
const valueInfo = (field, name, elem, dims) => msg(field, [str(1, name), msg(2, [msg(1, [int(1, elem), msg(2, dims.map(dim))])])]);
const initializer = (name, elem, dims, raw) => msg(5, [...dims.map((d) => int(1, d)), int(2, elem), str(8, name), bytes(9, raw)]);

function model(graphParts) {
  const opsets = [msg(8, [str(1, ''), int(2, 13)]), msg(8, [str(1, 'com.microsoft'), int(2, 1)])];
  return Buffer.concat([int(1, 8), ...opsets, msg(7, [...graphParts, str(2, 'g')])]);
}

/** ONNX model bytes of Y = X · B, B [K, N] float32 (row-major Float32Array). */
function matmulModel(K, N, b) {
  return model([
    node('MatMul', ['X', 'B'], ['Y']),
    initializer('B', FLOAT, [K, N], Buffer.from(b.buffer, b.byteOffset, b.byteLength)),
    valueInfo(11, 'X', FLOAT, ['M', K]),
    valueInfo(12, 'Y', FLOAT, ['M', N]),
  ]);
}

/** W given as int8 codes [N, K] (zotune layout) and per-row scales [N]; ONNX wants B [K, N]. */
function transposeCodes(codes, N, K) {
  const t = Buffer.alloc(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) t[k * N + n] = codes[n * K + k] & 0xff;
  return t;
}

function dynamicModel(codes, scales, N, K) {
  return model([
    node('DynamicQuantizeLinear', ['x'], ['xq', 'xs', 'xz']),
    node('MatMulInteger', ['xq', 'w', 'xz'], ['acc']),
    node('Cast', ['acc'], ['accf'], [attrInt('to', FLOAT)]),
    node('Mul', ['accf', 'xs'], ['ys']),
    node('Mul', ['ys', 'wscale'], ['y']),
    initializer('w', INT8, [K, N], transposeCodes(codes, N, K)),
    initializer('wscale', FLOAT, [N], Buffer.from(Float32Array.from(scales).buffer)),
    valueInfo(11, 'x', FLOAT, ['M', K]),
    valueInfo(12, 'y', FLOAT, ['M', N]),
  ]);
}

function integerModel(codes, N, K) {
  return model([
    node('MatMulInteger', ['a', 'w', 'az'], ['c']),
    initializer('w', INT8, [K, N], transposeCodes(codes, N, K)),
    initializer('az', UINT8, [], Buffer.from([128])),
    valueInfo(11, 'a', UINT8, ['M', K]),
    valueInfo(12, 'c', INT32, ['M', N]),
  ]);
}

/**
 * W4A8 peer: com.microsoft MatMulNBits, 4-bit weights with symmetric zero-point 8 and block scales,
 * accuracy_level 4 (activations quantized to int8 per block, int8 compute). Its packed B
 * [N][K / block][block / 2] is zotune's int4 layout byte for byte (element 2j in the low nibble).
 */
function nbitsModel(packed, scales, N, K, block) {
  return model([
    node('MatMulNBits', ['x', 'w', 'wscale'], ['y'], [attrInt('K', K), attrInt('N', N), attrInt('bits', 4), attrInt('block_size', block), attrInt('accuracy_level', 4)], 'com.microsoft'),
    initializer('w', UINT8, [N, Math.ceil(K / block), block / 2], Buffer.from(packed.buffer, packed.byteOffset, packed.byteLength)),
    initializer('wscale', FLOAT, [N * Math.ceil(K / block)], Buffer.from(Float32Array.from(scales).buffer)),
    valueInfo(11, 'x', FLOAT, ['M', K]),
    valueInfo(12, 'y', FLOAT, ['M', N]),
  ]);
}

async function session(bytesOfModel, threads) {
  const ort = require('onnxruntime-node');
  return ort.InferenceSession.create(bytesOfModel, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
}

/**
 * A ready-to-run ORT MatMul for weights w [N, K] (nn.Linear layout; transposed into B here).
 * run(x) computes x [M, K] · wᵀ and returns the output Float32Array.
 */
async function ortMatmul(w, N, K, threads) {
  const ort = require('onnxruntime-node');
  const b = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) b[k * N + n] = w[n * K + k];
  const s = await session(matmulModel(K, N, b), threads);
  return {
    async run(x, M) {
      const out = await s.run({ X: new ort.Tensor('float32', x, [M, K]) });
      return out.Y.data;
    },
    /** Runs x for at least ms: a new session's first ~150 ms of calls run at a third of its speed here. */
    async warm(x, M, ms = 500) {
      const t0 = Date.now();
      do await this.run(x, M);
      while (Date.now() - t0 < ms);
    },
    release: () => s.release(),
  };
}

module.exports = { matmulModel, ortMatmul, dynamicModel, integerModel, nbitsModel, session };
