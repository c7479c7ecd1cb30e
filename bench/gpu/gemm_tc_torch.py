#!/usr/bin/env python3
"""PyTorch side of bench/gpu/gemm_tc.js: the same GEMMs through torch, timed with CUDA events.

  python3 gemm_tc_torch.py --shapes '[["w8a8", M, N, K], ...]' [--iters 50]

Prints one JSON object on stdout: {"torch", "device", "results": [{kind, M, N, K, best_ms,
median_ms, note}]} or {"error": "..."} when torch / CUDA is missing. Operands are random, made on
the GPU; weights are [N, K] like nn.Linear and enter as their transpose (column-major [K, N], the
layout cuBLASLt wants):
  w8a8  torch._int_mm(x int8 [M, K], w.t()) -> int32. _int_mm needs M > 16: smaller M run padded
        to 32 rows (noted).
  e4m3  torch._scaled_mm(x e4m3, w.t() e4m3, scale_a [M, 1], scale_b [1, N], out_dtype=bf16):
        per-row activation and per-channel weight scales (per-tensor if this torch lacks row-wise
        scaling; noted). M is padded to a multiple of 16 if torch refuses it (noted).
  bf16  torch.matmul(x bf16, w.t()) -> bf16.
"""
import argparse
import json
import sys

from torch_peer import cuda_torch


def bench(fn, iters, torch):
    fn()  # warm-up (and cuBLASLt heuristics)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[0], times[len(times) // 2]


def case(torch, kind, M, N, K, iters):
    dev = "cuda"
    note = ""
    if kind == "w8a8":
        Mp = M if M > 16 else 32
        if Mp != M:
            note = f"M padded {M}->{Mp} (_int_mm needs M > 16)"
        x = torch.randint(-127, 128, (Mp, K), dtype=torch.int8, device=dev)
        w = torch.randint(-127, 128, (N, K), dtype=torch.int8, device=dev)
        fn = lambda: torch._int_mm(x, w.t())
    elif kind == "e4m3":
        f8 = torch.float8_e4m3fn
        w = torch.randn(N, K, device=dev).to(f8)
        sb = torch.rand(1, N, device=dev, dtype=torch.float32)
        last = None
        for Mp in (M, (M + 15) // 16 * 16):
            x = torch.randn(Mp, K, device=dev).to(f8)
            for rowwise in (True, False):
                sa = torch.rand(Mp, 1, device=dev) if rowwise else torch.tensor(0.5, device=dev)
                sbb = sb if rowwise else torch.tensor(0.5, device=dev)
                fn = lambda x=x, sa=sa, sbb=sbb: torch._scaled_mm(x, w.t(), scale_a=sa, scale_b=sbb, out_dtype=torch.bfloat16)
                try:
                    fn()
                except Exception as e:  # older torch: no row-wise scales, or M alignment
                    last = e
                    continue
                notes = []
                if Mp != M:
                    notes.append(f"M padded {M}->{Mp}")
                if not rowwise:
                    notes.append("per-tensor scales (row-wise refused)")
                note = ", ".join(notes)
                best, median = bench(fn, iters, torch)
                return {"kind": kind, "M": M, "N": N, "K": K, "best_ms": best, "median_ms": median, "note": note}
        raise RuntimeError(f"torch._scaled_mm refused every variant: {last}")
    elif kind == "bf16":
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
        fn = lambda: torch.matmul(x, w.t())
    else:
        raise ValueError(f"unknown kind {kind}")
    best, median = bench(fn, iters, torch)
    return {"kind": kind, "M": M, "N": N, "K": K, "best_ms": best, "median_ms": median, "note": note}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    torch = cuda_torch()
    if torch is None:
        return 0
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "results": []}
    for kind, M, N, K in json.loads(args.shapes):
        try:
            out["results"].append(case(torch, kind, M, N, K, args.iters))
        except Exception as e:
            out["results"].append({"kind": kind, "M": M, "N": N, "K": K, "error": str(e).splitlines()[0][:200]})
        torch.cuda.empty_cache()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
