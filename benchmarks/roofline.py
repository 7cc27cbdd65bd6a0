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
import warnings

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def count_flops(fn) -> int:
    """The FLOPs `fn()` does (torch.utils.flop_counter: 2 x multiply-adds of every matmul-like op)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(dtype: str, m: int, k: int, n: int, device: str = "cpu", repeats: int = 10) -> float:
    """GFLOP/s of the fastest of `repeats` (m x k) @ (k x n) products in `dtype` (fp32 | bf16 | int8) now, in
    this thread count. int8 is torch's dynamic quantization of a Linear (int8 weights, activations quantized
    per call), the kernel `--precision int8` serving runs; the others a plain matmul of tensors stored so."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g).to(device), torch.randn(k, n, generator=g).to(device)
    if dtype == "int8":
        linear = nn.Linear(k, n, bias=False)
        with warnings.catch_warnings():  # torch.ao's deprecation notice: the kernel is what is measured
            warnings.simplefilter("ignore")
            linear = torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)

        def product():
            return linear(a)
    else:
        a, b = a.to(DTYPES[dtype]), b.to(DTYPES[dtype])

        def product():
            return a @ b
    best = float("inf")
    with torch.inference_mode():
        product()  # warm-up: packing, allocation
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            product()
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9
