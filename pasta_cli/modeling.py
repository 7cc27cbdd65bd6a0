"""What every method needs to know about a Hugging Face encoder with a task head, defined once:
its layers, its head, how to freeze it, how to count its parameters, and how it accepts the
`special_tokens_mask` the runner's collator always sends.

The backbone is `model.base_model` (`bert`, `roberta`, ...). The head is every weight outside it
that no method added: BERT's pretrained pooler lives inside `bert` and stays frozen, as in the
paper; RoBERTa's and ELECTRA's classification heads are new and train. What a method added, it
declares: its modules inherit `AddedModule` (PEFT's tuner layers name theirs in `adapter_layer_names`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pasta_cli.errors import PastaError


def hf_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's list of Transformer layers, found generically (bert.encoder.layer, ...)."""
    depth = model.config.num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise PastaError(
        f"found no list of {depth} encoder layers in {type(model).__name__}: "
        "PASTA needs a Transformer encoder with one module per layer"
    )


class AddedModule(nn.Module):
    """A module a method adds to a model (PASTA's vectors, P-tuning v2's prefixes, Houlsby's adapters,
    Diff-Prune's diffs and gates): its parameters are the method's own, neither backbone nor head."""


def added_parameters(model: nn.Module) -> set[str]:
    """The names of the parameters a method added: an `AddedModule`'s, and those of the layers a PEFT tuner
    layer declares its own (`adapter_layer_names`: LoRA's lora_A, lora_B, ...; duck-typed, peft not imported).
    A tuner layer wraps a base layer (`get_base_layer`); PEFT's modules_to_save copy of the head, which also
    names its layers so, does not: it stays the head."""
    added: set[str] = set()
    for prefix, module in model.named_modules():
        owned = [(prefix, module)] if isinstance(module, AddedModule) else []
        tuner = callable(getattr(module, "get_base_layer", None))
        for attr in getattr(module, "adapter_layer_names", ()) if tuner else ():
            layer = getattr(module, attr, None)
            if isinstance(layer, nn.Module):
                owned.append((f"{prefix}.{attr}", layer))
        for where, m in owned:
            added.update(f"{where}.{n}".lstrip(".") for n, _ in m.named_parameters(remove_duplicate=False))
    return added


def head_names(model: nn.Module) -> set[str]:
    """The task head's parameter names: outside the backbone, and not what a method added."""
    backbone, added = hf_model(model).base_model_prefix + ".", added_parameters(model)
    return {n for n, _ in model.named_parameters() if not n.startswith(backbone) and n not in added}


def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The task head's parameters under their Hugging Face names (classifier.weight, ...)."""
    head = head_names(model)
    return {n: p for n, p in model.named_parameters() if n in head}


def head_modules(model: nn.Module) -> list[str]:
    """The head's top-level modules (classifier; RoBERTa's classifier holds dense + out_proj): what PEFT's
    modules_to_save copies, trains and saves beside a method."""
    return sorted({n.split(".", 1)[0] for n in head_parameters(model)})


def freeze(model: nn.Module, trains: Callable[[str], bool]) -> None:
    """requires_grad=trains(name) for every parameter: a frozen weight gets no gradient at all, so
    none is computed, stored or all-reduced (DDP registers only parameters that require grad)."""
    for name, p in model.named_parameters():
        p.requires_grad_(trains(name))


def freeze_backbone(model: nn.Module) -> None:
    """Only the head (and what a method adds later) trains."""
    head = head_names(model)
    freeze(model, lambda name: name in head)


def freeze_empty(model: nn.Module) -> None:
    """An empty parameter (0 elements) never requires grad: it never gets a gradient, so DDP, which
    waits for one from every parameter that requires grad, would hang at the next step."""
    for p in model.parameters():
        if p.numel() == 0:
            p.requires_grad_(False)


def check_gradients_reachable(model: nn.Module) -> None:
    """Refuse, before DDP wraps the model, any parameter DDP would wait for in vain: one that requires
    grad but has no elements (its gradient never comes; the second step fails or hangs)."""
    empty = [n for n, p in model.named_parameters() if p.requires_grad and p.numel() == 0]
    if empty:
        raise PastaError(f"parameters {', '.join(empty)} require grad but are empty, so they can never "
                         "receive a gradient (DDP would wait for it): set requires_grad=False on them "
                         "(pasta_cli.modeling.freeze_empty)")


def trainable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor under its parameter name (a baseline's adapter, a checkpoint, the best model)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy saved tensors into the trainable parameters of the same names; names and shapes must agree."""
    params = dict(model.named_parameters())
    expected = set(trainable_tensors(model))
    if set(tensors) != expected:
        raise PastaError(f"{where} holds {sorted(set(tensors) - expected)[:3] or 'no extra tensors'} "
                         f"but lacks {sorted(expected - set(tensors))[:3] or 'nothing'}: it was saved from another "
                         "method or model; load it with the backbone and method it was saved with")
    copy_checked(params, tensors, where)


def copy_checked(params: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], where: str) -> None:
    """params[name] <- tensors[name] for every saved tensor, refusing one whose shape differs."""
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise PastaError(f"{where}: tensor '{name}' has shape {tuple(value.shape)}, the model expects "
                                 f"{tuple(params[name].shape)}")
            params[name].copy_(value)


def parameter_counts(model: nn.Module) -> dict:
    """Trainable parameters the way the paper counts them, for every method alike.

    backbone: the pretrained backbone (what a method adds excluded); method: what the method trains
    besides the head (PASTA's vectors, BitFit's biases, LoRA's matrices, Diff-Prune's kept diffs, ...);
    head: the trainable head; trainable: all of it. Percentages are of the backbone, as the paper reports them.
    """
    inner = hf_model(model)
    prefix, added = inner.base_model_prefix + ".", added_parameters(inner)
    backbone = method = head = 0
    for name, p in inner.named_parameters():
        in_backbone = name.startswith(prefix) and name not in added
        backbone += p.numel() if in_backbone else 0
        if p.requires_grad:
            if in_backbone or name in added:
                method += p.numel()
            else:
                head += p.numel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for module in inner.modules():
        # a method that trains more than it keeps (Diff-Prune: dense diffs and gates, stored as its non-zero
        # diffs) says what it keeps; that is its count, as its paper's
        stored = getattr(module, "stored_parameters", None)
        if stored is not None:
            trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
            method, trainable = method - trained + stored, trainable - trained + stored
    return {"backbone": backbone, "method": method, "head": head, "trainable": trainable,
            "method_pct": 100.0 * method / backbone, "trainable_pct": 100.0 * trainable / backbone}


def template_token_ids(tokenizer) -> list[int]:
    """Ids the tokenizer's template inserts ([CLS]/[SEP], <s>/</s>, ...), read off a real encoding."""
    enc = tokenizer("a", "b", return_special_tokens_mask=True)
    ids = {i for i, special in zip(enc["input_ids"], enc["special_tokens_mask"]) if special}
    return sorted(ids)


def accept_special_tokens_mask(model: nn.Module, consumer: Callable | None = None) -> None:
    """The one place that takes `special_tokens_mask` out of a forward call's keywords.

    The collator always sends it (it marks the tokens the tokenizer's template inserted); the
    backbone does not know the keyword. `consumer(args, kwargs, mask)` sees it first: PASTA finds
    its slots there. Registered once per model, on the module the runner calls.
    """
    if getattr(model, "_accepts_special_tokens_mask", False):
        raise PastaError(f"{type(model).__name__} already takes special_tokens_mask: apply one method per model")

    def hook(module, args, kwargs):
        mask = kwargs.pop("special_tokens_mask", None)
        if consumer is not None:
            consumer(args, kwargs, mask)
        return args, kwargs

    model.register_forward_pre_hook(hook, with_kwargs=True)
    model._accepts_special_tokens_mask = True
