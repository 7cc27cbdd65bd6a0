"""Every method the runner trains, by name: PASTA (and its ablations) and the baselines.

A `Method` says how to put itself on a freshly loaded model, which of its config keys rebuild it,
which tensors its adapter holds, and which figure it draws. The runner, the adapter format and
the benchmark go through this registry; none of them asks "is this PASTA?".
`conf/method/<name>.yaml` holds each method's settings (`classifier_only.yaml` is PASTA's
classifier_only variant under the baseline's name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pasta_cli import baselines, norms
from pasta_cli.errors import PastaError
from pasta_cli.modeling import copy_checked, freeze_empty, head_parameters, load_trainable, trainable_tensors
from pasta_cli.pasta import VARIANTS, add_pasta, count_slots


@dataclass(frozen=True)
class Method:
    name: str
    apply: Callable[..., nn.Module]   # (model, tokenizer, settings, pair) -> the module to train
    settings: tuple[str, ...] = ()    # keys of conf/method/<name>.yaml that rebuild the method from its adapter
    peft: bool = False                # its adapter/ is PEFT's own format (PeftModel.from_pretrained loads it)
    check: Callable[[dict], None] | None = None  # (settings) -> None: refuse bad values before a model loads

    def check_tokenizer(self, tokenizer, pair: bool) -> None:
        """Refuse, before a model loads, a backbone whose tokenizer the method cannot work with."""

    def describe(self, model: nn.Module, settings: dict) -> dict:
        """What adapter_config.json records about the method (beyond backbone, head and task)."""
        return {k: settings.get(k) for k in self.settings}

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors the adapter holds."""
        return trainable_tensors(model)

    def load_state(self, model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
        load_trainable(model, tensors, f"adapter in '{where}'")

    def figure(self, model: nn.Module, tokenizer, pair: bool, path: Path, title: str) -> Path | None:
        """The method's own picture of what it learned, if it has one."""
        return None

    def param_groups(self, model: nn.Module, params: list[nn.Parameter]) -> list:
        """What the optimiser gets: the trainable parameters, or groups of them with their own settings."""
        return params

    def after_step(self, model: nn.Module, step: int, total_steps: int, scheduler) -> None:
        """Called after every optimiser step (`step` counts from 1), before evaluation and checkpoints."""


def load_head(model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy an adapter's head tensors into the model's head; names and shapes must agree."""
    head = head_parameters(model)
    if set(tensors) != set(head):
        raise PastaError(f"adapter in '{where}' has head tensors {sorted(tensors)}; "
                         f"this model's head is {sorted(head)}")
    copy_checked(head, tensors, f"adapter in '{where}'")


class Pasta(Method):
    """PASTA: one vector per (layer, special-token slot); the adapter is `pasta_vectors` + the head."""

    def check_tokenizer(self, tokenizer, pair):
        count_slots(tokenizer, pair)  # no special tokens (GPT-2): nothing to adapt, the real reason first

    def describe(self, model, settings):
        p = model.pasta
        return {"variant": p.variant, "num_layers": p.num_layers, "num_slots": p.num_slots,
                "num_vectors": p.num_vectors, "slot_to_vector": p.slot_to_vector.tolist(), "dropout": p.dropout.p}

    def state(self, model):
        head = {n: p.detach() for n, p in head_parameters(model).items()}
        return {"pasta_vectors": model.pasta.vectors.detach(), **head}

    def load_state(self, model, tensors, where):
        tensors = dict(tensors)
        vectors = tensors.pop("pasta_vectors", None)
        if vectors is None or vectors.shape != model.pasta.vectors.shape:
            found = None if vectors is None else tuple(vectors.shape)
            raise PastaError(f"adapter in '{where}': pasta_vectors has shape {found}, the model expects "
                             f"{tuple(model.pasta.vectors.shape)} (variant {model.pasta.variant})")
        load_head(model, tensors, where)
        with torch.no_grad():
            model.pasta.vectors.copy_(vectors)

    def figure(self, model, tokenizer, pair, path, title):
        if model.pasta.num_vectors == 0:
            return None  # classifier_only has no vectors to draw
        return norms.norms_heatmap(model.pasta, norms.slot_names(tokenizer, pair), path, title)


class DiffPruning(Method):
    """Diff pruning: the adapter holds the non-zero diffs (`diff_indices` into the backbone's parameters in named
    order, `diff_values`) and the head; loading fixes the mask there (baselines/diff_prune.py)."""

    def describe(self, model, settings):
        d = model.diff_prune
        return {**super().describe(model, settings), "num_diffs": d.keep, "backbone_size": d.size}

    def state(self, model):
        index, values = model.diff_prune.sparse_diff()
        head = {n: p.detach() for n, p in head_parameters(model).items()}
        return {"diff_indices": index, "diff_values": values, **head}

    def load_state(self, model, tensors, where):
        tensors = dict(tensors)
        index, values = tensors.pop("diff_indices", None), tensors.pop("diff_values", None)
        d = model.diff_prune
        if index is None or values is None or index.shape != (d.keep,) or values.shape != (d.keep,) \
                or index.is_floating_point() or (d.keep and not 0 <= int(index.min()) <= int(index.max()) < d.size):
            raise PastaError(f"adapter in '{where}' needs diff_indices and diff_values of {d.keep} entries, indices "
                             f"into a backbone of {d.size:,} weights: it was saved from another model or is damaged")
        load_head(model, tensors, where)
        d.set_sparse(index.long(), values.to(d.w[0].dtype))

    def param_groups(self, model, params):
        return baselines.diff_prune_param_groups(model, params)

    def after_step(self, model, step, total_steps, scheduler):
        baselines.diff_prune_after_step(model, step, total_steps, scheduler)


def _pasta(model, tokenizer, s, pair):
    add_pasta(model, tokenizer, s.get("variant", "full"), pair=pair, dropout=s.get("dropout"),
              init_std=s.get("init_std"))
    return model


# each baseline's keyword arguments from its settings (conf/method/<name>.yaml), in one place for its apply and check
def _lora(s):
    return {"r": s.get("r", 8), "alpha": s.get("alpha", 16), "dropout": s.get("dropout", 0.1),
            "target_modules": s.get("target_modules")}


def _prefix(s):
    return {"length": s.get("length", 20), "dropout": s.get("dropout", 0.1)}


def _adapter(s):
    return {"size": s.get("size", 64), "init_std": s.get("init_std", baselines.ADAPTER_INIT_STD)}


def _diff_prune(s):
    return {"sparsity": s.get("sparsity", 0.005), "penalty": s.get("penalty", 1.25e-7),
            "alpha_init": s.get("alpha_init", 5.0), "l0_fraction": s.get("l0_fraction", 0.5),
            "alpha_lr": s.get("alpha_lr", 0.1), "finetune_lr": s.get("finetune_lr")}


METHODS: dict[str, Method] = {m.name: m for m in (
    Pasta("pasta", _pasta, ("variant", "dropout")),
    Method("full_ft", lambda model, tok, s, pair: baselines.apply_full_ft(model)),
    Method("bitfit", lambda model, tok, s, pair: baselines.apply_bitfit(model)),
    Method("lora", lambda model, tok, s, pair: baselines.apply_lora(model, **_lora(s)),
           ("r", "alpha", "dropout", "target_modules"), peft=True, check=lambda s: baselines.check_lora(**_lora(s))),
    Method("prefix", lambda model, tok, s, pair: baselines.apply_prefix(model, **_prefix(s)), ("length", "dropout"),
           check=lambda s: baselines.check_prefix(**_prefix(s))),
    Method("adapter", lambda model, tok, s, pair: baselines.apply_adapter(model, **_adapter(s)), ("size", "init_std"),
           check=lambda s: baselines.check_adapter(**_adapter(s))),
    DiffPruning("diff_prune", lambda model, tok, s, pair: baselines.apply_diff_prune(model, **_diff_prune(s)),
                ("sparsity",), check=lambda s: baselines.check_diff_prune(**_diff_prune(s))),
)}


def register_method(method: Method) -> Method:
    """Add a method to the registry (a research variant, or the benchmark's floor), by its name."""
    if method.name in METHODS and METHODS[method.name] is not method:
        raise PastaError(f"a method named '{method.name}' is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise PastaError(f"unknown method '{name}': choose one of {', '.join(METHODS)} (or classifier_only)")
    return METHODS[name]


def check_method(settings) -> Method:
    """The method the settings name, once their values are known to work (before a model loads)."""
    method = get_method(settings.get("name"))
    if method.name == "pasta" and settings.get("variant") not in VARIANTS:
        raise PastaError(f"unknown method.variant '{settings.get('variant')}': choose one of {', '.join(VARIANTS)}")
    if method.check:
        method.check(settings)
    return method


def apply_method(model, tokenizer, settings, pair: bool) -> nn.Module:
    """Freeze/extend `model` as the method's settings (conf/method/*.yaml) say; returns the module to train."""
    model = check_method(settings).apply(model, tokenizer, dict(settings), pair)
    freeze_empty(model)  # whatever a method made, an empty tensor never trains
    return model
