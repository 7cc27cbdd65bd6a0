"""Diff pruning (Guo, Rush and Kim, ACL 2021), implemented here: PEFT has no diff pruning; the authors' code
(dguo98/DiffPruning) patches transformers 2.x. Each pretrained weight theta stays frozen; the task trains

    theta + z * w,   z = min(1, max(0, sigmoid(log u - log(1 - u) + alpha) (r - l) + l)),   u ~ U(0, 1)

per parameter (unstructured): w the diff, alpha the log-odds of its gate, the stretched hard-concrete of
Louizos et al. with l = -1.5, r = 1.5 and no temperature, as their code. The loss adds the expected L0 norm,
lambda * sum sigmoid(alpha - log(-l / r)). Outside training the gate is deterministic,
min(1, max(0, sigmoid(alpha) (r - l) + l)).

Two phases in one run, as the authors' three scripts (L0 training, magnitude pruning, fixed-mask fine-tuning):
for the first `l0_fraction` of the optimiser steps the diff and the gates train with the L0 penalty; then
the diff z * w is projected onto its `sparsity` x (backbone size) largest magnitudes (one global top-k), its
gates are set to exactly open (alpha = +SHUT) or shut (-SHUT), and the kept diffs train on with that mask and no
penalty, at `finetune_lr`. Evaluation always sees the projected model (a cached top-k while the gates still
train), so the model picked on dev is the one the adapter stores: the non-zero diffs (flat indices into the
backbone's parameters in named order, and values) and the head.

Mechanism: torch's parametrize (`register_parametrization`) on every backbone parameter, so every module
keeps its class; the diffs and gates live on the model as `diff_prune`. Its home in the method registry
(pasta_cli.methods) is at the bottom: `DiffPruneSettings`, and the adapter's tensors (`DiffPruning`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from pasta_cli.errors import PastaError, check_number
from pasta_cli.methods import Method, MethodSettings, load_head, register_method, with_changes
from pasta_cli.modeling import AddedModule, accept_special_tokens_mask, freeze_backbone, head_parameters
from pasta_cli.paper_data import recipe

DIFF_MODULE = "diff_prune"   # attribute on the model
# the diff_prune recipe (paper.yaml recipes.diff_prune, dguo98/DiffPruning's scripts): its common values, which
# are every run's (a recipe's task and backbone entries hold budgets, never a method setting)
RECIPE = recipe("diff_prune")
STRETCH = (-1.5, 1.5)        # hard-concrete (l, r), the authors' --concrete_lower/upper
SHUT = 1.0e4                 # |alpha| of a projected gate: sigmoid(+-1e4 + logit noise) is exactly 1 or 0 in fp32


def hard_concrete(alpha: torch.Tensor, training: bool) -> torch.Tensor:
    """The gate z in [0, 1]: sampled while training, its deterministic value otherwise."""
    low, high = STRETCH
    if training:
        u = torch.rand_like(alpha).clamp_(1e-4, 1 - 1e-4)  # the authors' clamp
        s = torch.sigmoid(u.log() - (1 - u).log() + alpha)
    else:
        s = torch.sigmoid(alpha)
    return (s * (high - low) + low).clamp(0.0, 1.0)


@dataclass
class DiffPruneSettings(MethodSettings):
    """Diff pruning (`method=diff_prune`, Guo et al. 2021): a gated diff on every backbone weight, L0-penalised
    (hard concrete), then projected to exactly `sparsity` of the backbone's weights and fine-tuned with that
    mask fixed."""

    sparsity: float = RECIPE["sparsity"]        # share of backbone weights the saved diff changes (0.005 = 0.5%)
    penalty: float = RECIPE["penalty"]          # lambda of the expected-L0 term
    alpha_init: float = RECIPE["alpha_init"]    # initial gate log-odds (5: every gate open)
    alpha_lr: float = RECIPE["alpha_lr"]        # the gates' learning rate (their own optimiser in the authors' code)
    l0_fraction: float = RECIPE["l0_fraction"]  # share of the run's steps before the projection (3 + 3 epochs: 0.5)
    # the diffs' and head's rate after the projection (fixed-mask phase); null: optim.lr's schedule goes on
    finetune_lr: float | None = RECIPE["finetune_lr"]

    def check(self) -> None:
        """Refuse settings that cannot prune (the runner calls this before a model loads)."""
        check_number("method.sparsity", self.sparsity, lambda v: 0 < v <= 1,
                     "give the fraction of backbone weights the diff may change, in (0, 1] (Guo et al.: 0.005)")
        check_number("method.l0_fraction", self.l0_fraction, lambda v: 0 <= v <= 1,
                     "give the share of steps before the projection, in [0, 1]")
        check_number("method.penalty", self.penalty, lambda v: v >= 0,
                     "give the L0 weight lambda, 0 or more (Guo et al.: 1.25e-7)")
        check_number("method.alpha_init", self.alpha_init, lambda v: True,
                     "give the gates' initial log-odds (Guo et al.: 5)")
        check_number("method.alpha_lr", self.alpha_lr, lambda v: v > 0,
                     "give the gates' learning rate, above 0 (Guo et al.: 0.1)")
        if self.finetune_lr is not None:
            check_number("method.finetune_lr", self.finetune_lr, lambda v: v > 0,
                         "give the fixed-mask phase's learning rate, above 0, or null for optim.lr")


class DiffPrune(AddedModule):
    """The diff `w` and gate logits `alpha` of every backbone parameter, in the backbone's named order."""

    def __init__(self, shapes: list[tuple[str, torch.Size]], settings: DiffPruneSettings, device=None):
        super().__init__()
        self.names = [n for n, _ in shapes]
        self.w = nn.ParameterList(nn.Parameter(torch.zeros(s, device=device)) for _, s in shapes)
        alpha_init = float(settings.alpha_init)
        self.alpha = nn.ParameterList(nn.Parameter(torch.full(s, alpha_init, device=device)) for _, s in shapes)
        self.size = sum(math.prod(s) for _, s in shapes)
        self.keep = max(1, round(settings.sparsity * self.size))
        self.penalty, self.l0_fraction = settings.penalty, settings.l0_fraction
        self.alpha_lr, self.finetune_lr = settings.alpha_lr, settings.finetune_lr
        self._eval_cache: tuple[int, list[torch.Tensor]] | None = None

    @property
    def stored_parameters(self) -> int:
        """What the adapter keeps of the diff (modeling.parameter_counts counts this, not w and alpha)."""
        return self.keep

    def projected(self) -> bool:
        """Whether the mask is fixed: projected gates sit at +-SHUT, never reached by training (one element read)."""
        return bool(self.alpha[0].detach().reshape(-1)[0].abs() > SHUT / 2)

    def diff(self, i: int) -> torch.Tensor:
        if not self.training:
            return self._eval_diffs()[i]
        return hard_concrete(self.alpha[i], True) * self.w[i]

    def l0_penalty(self) -> torch.Tensor:
        """lambda x the expected number of open gates (the authors' l0_pen)."""
        low, high = STRETCH
        shift = math.log(-low / high)
        return self.penalty * sum(torch.sigmoid(a - shift).sum() for a in self.alpha)

    @torch.no_grad()
    def sparse_diff(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat indices, values) of the `keep` largest-magnitude diffs over all parameters, indices sorted."""
        flat = torch.cat([(hard_concrete(a, False) * w).reshape(-1) for w, a in zip(self.w, self.alpha)])
        index = flat.abs().topk(self.keep, sorted=False).indices.sort().values
        return index, flat[index]

    def _eval_diffs(self) -> list[torch.Tensor]:
        """The projected diffs, recomputed only when w or alpha changed (their in-place version counters)."""
        version = sum(p._version for p in self.parameters())
        if self._eval_cache is None or self._eval_cache[0] != version:
            index, values = self.sparse_diff()
            self._eval_cache = (version, self._scatter(index, values))
        return self._eval_cache[1]

    def _scatter(self, index: torch.Tensor, values: torch.Tensor) -> list[torch.Tensor]:
        """Dense per-parameter diffs from flat (index, values)."""
        flat = torch.zeros(self.size, device=values.device, dtype=values.dtype)
        flat[index] = values
        return [d.view_as(w) for d, w in zip(flat.split([w.numel() for w in self.w]), self.w)]

    @torch.no_grad()
    def set_sparse(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Fix the mask at `index` with diffs `values` (the projection, and loading an adapter)."""
        opened = self._scatter(index, torch.ones_like(values))
        for w, a, d, o in zip(self.w, self.alpha, self._scatter(index, values), opened):
            w.copy_(d)
            a.copy_(torch.where(o > 0, SHUT, -SHUT))

    @torch.no_grad()
    def project(self) -> None:
        self.set_sparse(*self.sparse_diff())


class PlusDiff(nn.Module):
    """theta -> theta + diff: the parametrization of one backbone parameter (the diffs live on `DiffPrune`)."""

    def __init__(self, owner: DiffPrune, i: int):
        super().__init__()
        self.__dict__["owner"] = owner  # a plain attribute: the diffs are registered once, on the model
        self.i = i

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return theta + self.owner.diff(self.i).to(theta.dtype)


def backbone_parameters(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(module, attribute, name) of every backbone parameter, in named order (the flat index's order)."""
    prefix = model.base_model_prefix + "."
    modules = dict(model.named_modules())
    out = []
    for name, _ in model.named_parameters():
        if name.startswith(prefix):
            owner, _, attr = name.rpartition(".")
            out.append((modules[owner], attr, name))
    return out


def apply_diff_prune(model: nn.Module, settings: DiffPruneSettings | None = None, **changes) -> nn.Module:
    """A gated diff on every backbone parameter; diffs, gates and the head train (the pretrained weights never do).
    `settings` (else DiffPruneSettings' defaults) with `changes` (sparsity=0.01, ...)."""
    if hasattr(model, DIFF_MODULE):
        raise PastaError("apply_diff_prune was already applied to this model")
    s = with_changes(DiffPruneSettings, settings, changes)
    targets = backbone_parameters(model)
    freeze_backbone(model)
    device = next(model.parameters()).device
    diffs = DiffPrune([(n, getattr(m, a).shape) for m, a, n in targets], s, device)
    diffs.train(model.training)
    setattr(model, DIFF_MODULE, diffs)
    for i, (module, attr, _) in enumerate(targets):
        # unsafe: skip the trial forward (theta + diff keeps shape and dtype; the trial would run a global top-k)
        parametrize.register_parametrization(module, attr, PlusDiff(diffs, i), unsafe=True)

    def add_l0_penalty(module, args, kwargs, output):
        # the loss the runner backpropagates is the model's: the L0 term joins it here, while the gates train
        if module.training and getattr(output, "loss", None) is not None and not diffs.projected():
            output.loss = output.loss + diffs.l0_penalty()
        return output

    model.register_forward_hook(add_l0_penalty, with_kwargs=True)
    accept_special_tokens_mask(model)
    return model


def param_groups(model: nn.Module, params: list[nn.Parameter]) -> list[dict]:
    """The gates on their own learning rate (the authors' alpha optimiser: lr 0.1), everything else on optim.lr."""
    gates = {id(p) for p in getattr(model, DIFF_MODULE).alpha}
    rest = [p for p in params if id(p) not in gates]
    # no weight decay on the gates (the authors' alpha optimiser has none): decay would also pull a projected gate's
    # +-SHUT towards 0 over a long fixed-mask phase, until `projected()` no longer held
    return [{"params": rest}, {"params": [p for p in params if id(p) in gates], "lr": model.diff_prune.alpha_lr,
                               "weight_decay": 0.0}]


def after_step(model: nn.Module, step: int, total_steps: int, scheduler) -> None:
    """At the end of the L0 phase: project to the exact sparsity and move the diffs to the fine-tuning rate."""
    diffs = getattr(model, DIFF_MODULE)
    if step == max(1, round(diffs.l0_fraction * total_steps)) and not diffs.projected():
        diffs.project()
        if diffs.finetune_lr:
            scheduler.base_lrs[0] = diffs.finetune_lr  # group 0: diffs and head (param_groups)


class DiffPruning(Method):
    """Diff pruning: the adapter holds the non-zero diffs (`diff_indices` into the backbone's parameters in named
    order, `diff_values`) and the head; loading fixes the mask there."""

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
        return param_groups(model, params)

    def after_step(self, model, step, total_steps, scheduler):
        after_step(model, step, total_steps, scheduler)


DIFF_PRUNE = register_method(DiffPruning("diff_prune", lambda model, tok, s, pair: apply_diff_prune(model, s),
                                         ("sparsity",), schema=DiffPruneSettings,
                                         low_precision_frozen=False))
