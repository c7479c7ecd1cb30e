'use strict';
// The benchmark peer: onnxruntime-node's CPU MatMul. The one-node ONNX model is written here as raw
// protobuf bytes (no onnx package): Y[M, N] = X[M, K] · B[K, N] with B a constant initializer (as
// for an nn.Linear weight, so ORT may prepack it), opset 13, intra-op threads as asked.

// --- protobuf wire format -------------------------------------------------------------------------
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
const fInt = (field, n) => Buffer.concat([key(field, 0), varint(n)]);
const fBytes = (field, bytes) => Buffer.concat([key(field, 2), varint(bytes.length), bytes]);
const fStr = (field, s) => fBytes(field, Buffer.from(s, 'utf8'));
const fMsg = (field, parts) => fBytes(field, Buffer.concat(parts));

const FLOAT = 1;

// ValueInfoProto{name, type: TypeProto{tensor_type{elem_type, shape{dim{dim_value | dim_param}}}}}
function valueInfo(name, dims) {
  const dimMsgs = dims.map((d) => fMsg(1, [typeof d === 'number' ? fInt(1, d) : fStr(2, d)]));
  return [fStr(1, name), fMsg(2, [fMsg(1, [fInt(1, FLOAT), fMsg(2, dimMsgs)])])];
}

/** ONNX model bytes of Y = X · B, B [K, N] float32 (row-major Float32Array). */
function matmulModel(K, N, b) {
  const tensor = [fInt(1, K), fInt(1, N), fInt(2, FLOAT), fStr(8, 'B'), fBytes(9, Buffer.from(b.buffer, b.byteOffset, b.byteLength))];
  const node = [fStr(1, 'X'), fStr(1, 'B'), fStr(2, 'Y'), fStr(3, 'matmul'), fStr(4, 'MatMul')];
  const graph = [fMsg(1, node), fStr(2, 'g'), fMsg(5, tensor), fMsg(11, valueInfo('X', ['M', K])), fMsg(12, valueInfo('Y', ['M', N]))];
  return Buffer.concat([fInt(1, 8), fMsg(8, [fStr(1, ''), fInt(2, 13)]), fMsg(7, graph)]);
}

/**
 * A ready-to-run ORT MatMul for weights w [N, K] (nn.Linear layout; transposed into B here).
 * run(x) computes x [M, K] · wᵀ and returns the output Float32Array.
 */
async function ortMatmul(w, N, K, threads) {
  const ort = require('onnxruntime-node');
  const b = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) b[k * N + n] = w[n * K + k];
  const session = await ort.InferenceSession.create(matmulModel(K, N, b), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  return {
    async run(x, M) {
      const out = await session.run({ X: new ort.Tensor('float32', x, [M, K]) });
      return out.Y.data;
    },
    release: () => session.release(),
  };
}

module.exports = { matmulModel, ortMatmul };
