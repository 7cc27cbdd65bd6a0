"""The number formats a model is stored and computed in, and which one this machine runs fast.

Two settings, independent:
- the compute precision of fp32 weights (`trainer.precision`: autocast, for training and evaluation);
- the storage of the *frozen* weights (`model.dtype`). PASTA's backbone never trains, so it needs no fp32
  master copy: stored in bf16 it takes half the memory and runs bf16 matmuls, which a CPU with AVX512-BF16
  or AMX (or a CUDA GPU) does 4x faster than fp32. What trains (PASTA's vectors, the head, a baseline's own
  weights) stays fp32, with fp32 optimiser state. A bf16-stored weight can only multiply bf16 activations,
  so wherever the frozen weights are bf16 the forward runs under bf16 autocast, whose fp32 list keeps
  LayerNorm, softmax and the loss in fp32.

`auto` is bf16 where bf16 is fast here (`fast_bf16`), else fp32: a CPU without bf16 instructions emulates
it, slower than fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from pasta_cli.errors import PastaError

# trainer.precision -> autocast dtype (None: plain fp32), for training and inference alike
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# model.dtype: the frozen weights' storage
MODEL_DTYPES = ("fp32", "bf16", "auto")
STORAGE = {"fp32": torch.float32, "bf16": torch.bfloat16}


def fast_bf16(device_type: str) -> bool:
    """Whether bf16 matmuls run natively here: a CUDA GPU with bf16 (Ampere on), or a CPU with
    AVX512-BF16 or AMX tiles (torch's own CPU feature probe)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve(name: str, device_type: str) -> str:
    """`model.dtype` as stored: `auto` becomes bf16 where `fast_bf16`, else fp32."""
    if name not in MODEL_DTYPES:
        raise PastaError(f"unknown model.dtype '{name}': choose one of {', '.join(MODEL_DTYPES)}")
    if name == "auto":
        return "bf16" if fast_bf16(device_type) else "fp32"
    return name


def store_frozen(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast the frozen floating-point parameters of `model` to `dtype`, in place; what trains stays as it is.
    A module whose own parameters partly train (BitFit's LayerNorm: frozen weight, trained bias) keeps its
    frozen ones in fp32 too, as its op needs one dtype; a Linear does not need to (autocast runs its matmul
    in bf16 whatever the storage). Returns how many parameters were cast."""
    cast = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if any(p.requires_grad for p in own) and not isinstance(module, nn.Linear):
            continue
        for p in own:
            if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
                cast += 1
    return cast


def compute_dtype(precision: str, stored: str) -> torch.dtype | None:
    """The autocast dtype of a forward: trainer.precision's, or bf16 where frozen weights are stored in bf16
    (fp16 autocast over bf16 weights would cast every weight at every step: refused by the config check)."""
    return AMP_DTYPES[precision] or (torch.bfloat16 if stored == "bf16" else None)
