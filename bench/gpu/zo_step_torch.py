#!/usr/bin/env python3
"""PyTorch peer for bench/gpu/zo-step.js: a MeZO step in bf16 on a LLaMA-7B-shaped model.

    python3 bench/gpu/zo_step_torch.py [--layers 32] [--batch 1] [--seq 256] [--iters 3]

Model: hidden 4096, intermediate 11008, 32 heads, vocab 32000, random bf16 weights, plain PyTorch
(RMSNorm, rotary embeddings, scaled_dot_product_attention causal, SwiGLU), no extra libraries.
MeZO step (Malladi et al., Algorithm 1): for every parameter, z from torch.normal with a generator
seeded per step, theta += eps z; forward; theta -= 2 eps z; forward; theta += eps z; then z
regenerated from the same seed and theta -= lr g z. Times by CUDA events, best of --iters; peak by
torch.cuda.max_memory_allocated. Then one first-order AdamW step (bf16 parameters and states,
forward + backward + step) for its peak memory (OOM is reported, not fatal).

Prints one JSON object: {"torch", "device", "params", "mezo": {...}, "adamw": {...}}, or
{"error": "..."} (exit status 0) when torch or a GPU is missing, so the caller can report that.
"""
import argparse
import json

from torch_peer import cuda_torch


def build(torch, layers, hidden=4096, inter=11008, heads=32, vocab=32000):
    nn, F = torch.nn, torch.nn.functional
    hd = hidden // heads

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(hidden))

        def forward(self, x):
            v = x.float().pow(2).mean(-1, keepdim=True)
            return (x.float() * torch.rsqrt(v + 1e-5)).to(x.dtype) * self.weight

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = RMSNorm(), RMSNorm()
            self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden, bias=False) for _ in range(4))
            self.gate, self.up = nn.Linear(hidden, inter, bias=False), nn.Linear(hidden, inter, bias=False)
            self.down = nn.Linear(inter, hidden, bias=False)

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            h = self.n1(x)
            q, k, v = (p(h).view(B, T, heads, hd).transpose(1, 2) for p in (self.q, self.k, self.v))

            def rot(t):
                a, b = t[..., : hd // 2], t[..., hd // 2:]
                return t * cos + torch.cat((-b, a), -1) * sin

            a = F.scaled_dot_product_attention(rot(q), rot(k), v, is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(B, T, hidden))
            h = self.n2(x)
            return x + self.down(F.silu(self.gate(h)) * self.up(h))

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, hidden)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.norm = RMSNorm()
            self.head = nn.Linear(hidden, vocab, bias=False)

        def forward(self, ids, targets):
            T = ids.shape[1]
            inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, device=ids.device).float() / hd))
            ang = torch.outer(torch.arange(T, device=ids.device).float(), inv)
            cos = torch.cat((ang.cos(), ang.cos()), -1).to(torch.bfloat16)
            sin = torch.cat((ang.sin(), ang.sin()), -1).to(torch.bfloat16)
            x = self.embed(ids)
            for b in self.blocks:
                x = b(x, cos, sin)
            logits = self.head(self.norm(x)).float()
            return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), targets[:, 1:].reshape(-1))

    return Llama()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    torch = cuda_torch()
    if torch is None:
        return
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build(torch, args.layers).to(device=dev, dtype=torch.bfloat16)
    for p in model.parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02)
    params = [p for p in model.parameters()]
    ids = torch.randint(0, 32000, (args.batch, args.seq), device=dev)
    eps, lr = 1e-3, 1e-6
    gen = torch.Generator(device=dev)

    def perturb(seed, scale):
        gen.manual_seed(seed)
        for p in params:
            z = torch.normal(0.0, 1.0, p.shape, generator=gen, device=dev, dtype=p.dtype)
            p.add_(z, alpha=scale)

    def timed(fn):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop), out

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    steps, fwd, pert = [], [], []
    with torch.no_grad():
        model(ids, ids)  # warm-up
        for it in range(args.iters + 1):
            seed = 1000 + it

            def step():
                t_p, _ = timed(lambda: perturb(seed, eps))
                t_f, lp = timed(lambda: model(ids, ids))
                perturb(seed, -2 * eps)
                lm = model(ids, ids)
                perturb(seed, eps)
                g = (lp - lm) / (2 * eps)
                gen.manual_seed(seed)
                for p in params:  # the update: z regenerated from the seed
                    z = torch.normal(0.0, 1.0, p.shape, generator=gen, device=dev, dtype=p.dtype)
                    p.add_(z, alpha=-lr * float(g))
                return t_p, t_f

            t, (t_p, t_f) = timed(step)
            if it:  # the first is a warm-up
                steps.append(t), fwd.append(t_f), pert.append(t_p)
    mezo = {"stepMs": min(steps), "forwardMs": min(fwd), "perturbMs": min(pert), "peakBytes": torch.cuda.max_memory_allocated()}

    adamw = {}
    try:
        torch.cuda.reset_peak_memory_stats()
        opt = torch.optim.AdamW(params, lr=1e-5)
        t, _ = timed(lambda: (model(ids, ids).backward(), opt.step(), opt.zero_grad(set_to_none=True)))
        t, _ = timed(lambda: (model(ids, ids).backward(), opt.step(), opt.zero_grad(set_to_none=True)))
        adamw = {"stepMs": t, "peakBytes": torch.cuda.max_memory_allocated()}
    except torch.cuda.OutOfMemoryError as e:
        adamw = {"error": f"out of memory: {str(e).splitlines()[0][:160]}"}
    n = sum(p.numel() for p in params)
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "params": n,
                      "mezo": mezo, "adamw": adamw}))


if __name__ == "__main__":
    main()
