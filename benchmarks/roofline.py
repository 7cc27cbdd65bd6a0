"""A roofline for the benchmarks: how many FLOPs a step really does, and how fast this machine multiplies
matrices in the same dtype and thread count, measured in the same run, so that a step's speed reads as a
share of what the silicon can do.

FLOPs are counted by torch's own `FlopCounterMode` on the real step (matmuls, batched matmuls and attention,
forward and backward as autograd runs them, padding included: the kernels multiply the padded batch).
Elementwise work (LayerNorm, GELU, dropout's random draws) is not counted: it is memory-bound, and it is why no
step reaches 100% of the matmul peak.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pasta_cli.precision import prepare_serving


def count_flops(fn) -> int:
    """The FLOPs `fn()` does (torch.utils.flop_counter: 2 x multiply-adds of every matmul-like op)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(precision: str, m: int, k: int, n: int, device: str = "cpu", repeats: int = 20) -> float:
    """GFLOP/s of the fastest of `repeats` passes of an (m x k) fp32 input through a Linear(k, n) prepared as the
    encoder's Linears are (`precision.prepare_serving`: fp32; bf16 weight under bf16 autocast, the storage
    model.dtype=bf16 trains with too; int8 dynamic quantization), now, in this thread count: the peak the model's
    matmuls can reach here."""
    linear = nn.Sequential(nn.Linear(k, n)).to(device).eval().requires_grad_(False)
    autocast = prepare_serving(linear, precision)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(0)).to(device)
    best = float("inf")
    with torch.inference_mode(), torch.autocast(device, autocast or torch.float32, enabled=autocast is not None):
        linear(x)  # warm-up: packing, allocation
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            linear(x)
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9
