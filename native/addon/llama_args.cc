#include "llama_args.h"

#include <cmath>
#include <string>

namespace zt {
namespace {

[[noreturn]] void bad(const char* op, Code c, const std::string& msg) { fail(c, std::string(op) + ": " + msg); }

size_t count_arg(const char* op, double v, const char* what, double max) {
  if (!(v >= 1 && v <= max && v == std::floor(v))) bad(op, Code::InvalidArgument, std::string(what) + " must be an integer in [1, " + std::to_string((uint64_t)max) + "]");
  return (size_t)v;
}

}  // namespace

uint64_t llama_size_mul(uint64_t a, uint64_t b, const char* op) {
  if (a != 0 && b > ((uint64_t)1 << 60) / a) bad(op, Code::OutOfRange, "tensor size overflows");
  return a * b;
}

LlamaConfig llama_config_arg(Args& a, const char* op) {
  const double* f = a.elems<double>(0, "cfg", 0, 15);
  LlamaConfig c{};
  const double big = (double)(1u << 30);
  c.hidden = count_arg(op, f[0], "hidden", big);
  c.layers = count_arg(op, f[1], "layers", 4096);
  c.heads = count_arg(op, f[2], "heads", 4096);
  c.kv_heads = count_arg(op, f[3], "kvHeads", 4096);
  c.head_dim = count_arg(op, f[4], "headDim", 512);
  c.inter = count_arg(op, f[5], "intermediate", big);
  c.vocab = count_arg(op, f[6], "vocab", 2147483647.0);
  c.max_pos = count_arg(op, f[7], "maxPositions", 2147483647.0);
  c.eps = f[8];
  if (c.heads % c.kv_heads) bad(op, Code::ShapeMismatch, "heads must be a multiple of kvHeads");
  if (c.head_dim % 2) bad(op, Code::ShapeMismatch, "headDim must be even");
  if (!(c.eps >= 0 && std::isfinite(c.eps))) bad(op, Code::InvalidArgument, "eps must be a finite number >= 0");
  c.rope.theta = f[9];
  c.rope.llama3 = f[10] != 0;
  c.rope.factor = f[11];
  c.rope.low_freq_factor = f[12];
  c.rope.high_freq_factor = f[13];
  c.rope.original_max_positions = f[14];
  if (!(c.rope.theta > 1 && std::isfinite(c.rope.theta))) bad(op, Code::InvalidArgument, "rope theta must be a finite number > 1");
  if (c.rope.llama3 && !(c.rope.factor >= 1 && c.rope.low_freq_factor > 0 && c.rope.high_freq_factor > c.rope.low_freq_factor &&
                         c.rope.original_max_positions > 0 && std::isfinite(c.rope.factor + c.rope.high_freq_factor + c.rope.original_max_positions)))
    bad(op, Code::InvalidArgument, "invalid llama3 rope scaling");
  return c;
}

LlamaBatch llama_batch_arg(Args& a, const char* op) {
  LlamaBatch b{};
  const uint64_t n_off = a.mem(3, "seqOffsets").bytes / 4;
  if (n_off < 2) bad(op, Code::InvalidArgument, "the batch is empty");
  b.B = n_off - 1;
  b.seq_off = a.elems<int32_t>(3, "seqOffsets", 0, n_off);
  if (b.seq_off[0] != 0 || b.seq_off[b.B] < 0) bad(op, Code::InvalidArgument, "sequence offsets must start at 0");
  const uint64_t N = (uint64_t)b.seq_off[b.B];
  b.tokens = a.elems<int32_t>(2, "tokens", 0, N);
  b.positions = a.elems<int32_t>(4, "positions", 0, N);
  b.key_mask = a.has(5) ? a.elems<uint8_t>(5, "keyMask", 0, N) : nullptr;
  return b;
}

}  // namespace zt
