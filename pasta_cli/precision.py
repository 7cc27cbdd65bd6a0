"""The number formats a model is stored and computed in, and which one this machine runs fast.

Two settings, independent:
- the compute precision of fp32 weights (`trainer.precision`: autocast, for training and evaluation);
- the storage of the *frozen* weights (`model.dtype`). PASTA's backbone never trains, so it needs no fp32
  master copy: stored in bf16 it takes half the memory and runs bf16 matmuls, which a CPU with AVX512-BF16
  or AMX (or a CUDA GPU) does 4x faster than fp32. What trains (PASTA's vectors, the head, a baseline's own
  weights) stays fp32, with fp32 optimiser state. A bf16-stored weight can only multiply bf16 activations,
  so wherever the frozen weights are bf16 the forward runs under bf16 autocast (on a CPU that keeps LayerNorm
  and softmax in their input's dtype, bf16; the loss is computed in fp32).

`auto` is bf16 where bf16 is fast here (`fast_bf16`), else fp32: a CPU without bf16 instructions emulates
it, slower than fp32.

Serving (MultiTaskPasta, pasta-predict, pasta-serve `--precision`) has its own names, SERVING_PRECISIONS, because
at inference nothing trains and the whole encoder is frozen: `bf16` stores the encoder in bf16 and runs it under
bf16 autocast; `int8` replaces the encoder's nn.Linear layers by dynamically quantized ones (qint8 weights,
activations quantized per batch, fp32 in between; CPU only); `fp16` is autocast over fp32 weights (as before);
`auto` is `resolve_serving`'s choice. What PASTA adds (its vectors) and the task heads stay fp32 in every
precision: the vectors are added in the activations' dtype, the heads read fp32 hidden states.
"""

from __future__ import annotations

import warnings

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


def store_frozen(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast the frozen floating-point parameters of `model` to `dtype`, in place; what trains stays as it is.
    A module whose own parameters partly train (BitFit's LayerNorm: frozen weight, trained bias) keeps its
    frozen ones in fp32 too, as its op needs one dtype; a Linear does not need to (autocast runs its matmul
    in bf16 whatever the storage)."""
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if any(p.requires_grad for p in own) and not isinstance(module, nn.Linear):
            continue
        for p in own:
            if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)


def compute_dtype(precision: str, stored: str) -> torch.dtype | None:
    """The autocast dtype of a forward: trainer.precision's, or bf16 where frozen weights are stored in bf16
    (fp16 autocast over bf16 weights would cast every weight at every step: refused by the config check)."""
    return AMP_DTYPES[precision] or (torch.bfloat16 if stored == "bf16" else None)


# serving: the frozen encoder's number format at inference (MultiTaskPasta, pasta-predict, pasta-serve)
SERVING_PRECISIONS = ("auto", "fp32", "bf16", "int8", "fp16")


def resolve_serving(name: str, device_type: str) -> str:
    """The serving precision `name` as run on `device_type`: `auto` becomes bf16 where `fast_bf16`, else fp32.

    Why not int8, even where it is the fastest (one thread of an AMD EPYC with AVX512-BF16/VNNI: int8 ~1.3x bf16,
    docs/results/serve_cpu.md): dynamic int8 quantizes each batch's activations with one scale per tensor, which a
    few large hidden dimensions of MiniLM set, so its logits move by up to ~40% of the largest and some labels flip
    (tests/test_precision_serving.py), where bf16 stays within ~2% of fp32. int8 is there to ask for."""
    if name not in SERVING_PRECISIONS:
        raise PastaError(f"unknown precision '{name}': choose one of {', '.join(SERVING_PRECISIONS)}")
    if name == "int8" and device_type != "cpu":
        raise PastaError(f"precision int8 runs on the CPU only (torch's dynamic quantization), not on {device_type}: "
                         "use bf16 or fp16 there")
    return resolve(name, device_type) if name == "auto" else name  # auto: model.dtype's rule, never int8


def quantize_int8(model: nn.Module) -> nn.Module:
    """`model`'s nn.Linear layers replaced, in place, by dynamically quantized ones: qint8 weights, one scale per
    output channel (on MiniLM as accurate as or better than one per tensor, and as fast); each batch's activations
    quantized per tensor on the fly, fp32 between layers. Forward hooks on the other modules are kept."""
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it moves to torchao; its eager dynamic quantization still works and is
        # the one library path without a new dependency: silenced here, at the one call
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        spec = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def prepare_serving(encoder: nn.Module, precision: str) -> torch.dtype | None:
    """Put a frozen `encoder` in the resolved serving `precision` (in place); returns the autocast dtype of its
    forward (None: plain fp32)."""
    if precision == "bf16":
        store_frozen(encoder, torch.bfloat16)
    elif precision == "int8":
        quantize_int8(encoder)
    return AMP_DTYPES.get(precision)  # int8: none (fp32 activations)
