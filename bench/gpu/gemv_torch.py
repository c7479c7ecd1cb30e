#!/usr/bin/env python3
"""PyTorch peer for bench/gpu/gemv.js: torch.matmul in bf16 at the same (M, N, K) shapes.

    python3 bench/gpu/gemv_torch.py [--iters 50] [--shapes M,N,K M,N,K ...]

Prints one JSON object: {"torch", "device", "cases": [{"m", "n", "k", "bestMs", "medianMs"}]}, or
{"error": "..."} (exit status 0) when torch or a GPU is missing, so the caller can report that.
Timing as in gemv.js: enough weight copies to exceed L2, one CUDA graph of launches rotating over
them, CUDA events around each graph replay; the time per launch is the replay time / launches.
"""
import argparse
import json
import statistics

from torch_peer import cuda_torch

DEFAULT_SHAPES = [(m, n, k) for (n, k) in [(4096, 4096), (11008, 4096), (4096, 11008)] for m in (1, 16)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--shapes", nargs="*", default=None, help="M,N,K triples")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else DEFAULT_SHAPES
    torch = cuda_torch()
    if torch is None:
        return
    dev = torch.device("cuda")
    cases = []
    for m, n, k in shapes:
        copies = min(64, (256 << 20) // (n * k * 2) + 1)
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        out = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
        launches = max(copies, 20)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (cuBLAS handles, heuristics) before capture
            for w in ws:
                torch.matmul(x, w.t(), out=out)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(launches):
                torch.matmul(x, ws[i % copies].t(), out=out)
        times = []
        for _ in range(args.iters):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / launches)
        cases.append({"m": m, "n": n, "k": k, "bestMs": min(times), "medianMs": statistics.median(times)})
        del graph, ws
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "cases": cases}))


if __name__ == "__main__":
    main()
