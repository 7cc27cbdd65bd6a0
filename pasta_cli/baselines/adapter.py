"""Adapters (Houlsby et al., ICML 2019), implemented here: PEFT has no bottleneck adapter, and AdapterHub's
`adapters` package pins transformers 4.x.

Every encoder layer gets two bottlenecks, placed as Houlsby et al. (and google-research/adapter-bert) place
them: on the output of the attention output projection and on the output of the feed-forward output
projection, each after its dropout and before the residual add and LayerNorm,

    LayerNorm(x + adapter(dropout(W_o h))),   adapter(y) = y + W_up gelu(W_down y + b_down) + b_up

W_down (hidden -> size) and W_up (size -> hidden) are drawn from a normal truncated at two standard deviations
with std `init_std` (adapter-bert's `init_scale`, 1e-3 in its recipe), the biases are zero: near identity, so
training starts at the frozen model. What trains, as adapter-bert's optimiser collections ("adapters",
"layer_norm", "head"): the adapters, every LayerNorm of the backbone (embeddings' included), the task head.
BERT's pooler stays frozen, as there.

Mechanism: a forward hook on the `dropout` of each sublayer that ends in `LayerNorm(dropout(dense(h)) + x)`
(BertSelfOutput / BertOutput and their RoBERTa, ELECTRA and DeBERTa-v2 copies), found generically in the
encoder's layer list; the model keeps its classes and state-dict names. The adapters live on the model as
`houlsby_adapters` (layers x 2 bottlenecks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pasta_cli.errors import PastaError, check_number
from pasta_cli.methods import Method, MethodSettings, register_method, with_changes
from pasta_cli.modeling import AddedModule, accept_special_tokens_mask, encoder_layers, freeze, head_names
from pasta_cli.paper_data import recipe

ADAPTER_MODULE = "houlsby_adapters"  # attribute on the model
# the adapter recipe (paper.yaml recipes.adapter, google-research/adapter-bert): its common values, which are
# every run's (a recipe's task and backbone entries hold budgets, never a method setting)
RECIPE = recipe("adapter")


@dataclass
class AdapterSettings(MethodSettings):
    """Adapters (`method=adapter`, Houlsby et al. 2019): two bottlenecks per layer (after the attention output
    and the feed-forward output, before each residual add and LayerNorm); adapters + every LayerNorm + the
    head train."""

    size: int = RECIPE["size"]            # bottleneck units (Houlsby et al. sweep 8, 64, 256)
    init_std: float = RECIPE["init_std"]  # truncated-normal std of both projections; biases 0: near identity

    def check(self) -> None:
        """Refuse settings that cannot build adapters (the runner calls this before a model loads)."""
        check_number("method.size", self.size, lambda v: v >= 1,
                     "the bottleneck needs a whole number of units, at least 1 (Houlsby et al. use 8 to 256)",
                     whole=True)
        check_number("method.init_std", self.init_std, lambda v: v > 0,
                     f"give a positive std (adapter-bert: {RECIPE['init_std']})")


class Bottleneck(AddedModule):
    """y + up(gelu(down(y))): the adapter module of Houlsby et al., Figure 2."""

    def __init__(self, hidden: int, size: int, init_std: float):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        for linear in (self.down, self.up):
            nn.init.trunc_normal_(linear.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # adapter-bert's gelu is the tanh approximation
        return y + self.up(nn.functional.gelu(self.down(y), approximate="tanh"))


def residual_sublayers(layer: nn.Module) -> list[nn.Module]:
    """The sublayers of one encoder layer that compute LayerNorm(dropout(dense(h)) + x) into the hidden size:
    the attention output and the feed-forward output, in forward order."""
    hidden = None
    found = []
    for module in layer.modules():
        dense, norm, drop = (getattr(module, a, None) for a in ("dense", "LayerNorm", "dropout"))
        if isinstance(dense, nn.Linear) and isinstance(norm, nn.LayerNorm) and isinstance(drop, nn.Dropout):
            hidden = hidden or norm.normalized_shape[0]
            if dense.out_features == hidden:
                found.append(module)
    return found


def _hook(bottleneck: Bottleneck):
    def run_adapter(module, args, output):
        return bottleneck(output)
    return run_adapter


def apply_adapter(model: nn.Module, settings: AdapterSettings | None = None, **changes) -> nn.Module:
    """Two bottleneck adapters per layer; adapters + LayerNorms + head train, everything else is frozen.
    `settings` (else AdapterSettings' defaults) with `changes` (size=8, ...)."""
    if hasattr(model, ADAPTER_MODULE):
        raise PastaError("apply_adapter was already applied to this model")
    s = with_changes(AdapterSettings, settings, changes)
    layers = encoder_layers(model)
    sublayers = [residual_sublayers(layer) for layer in layers]
    if any(len(found) != 2 for found in sublayers):
        raise PastaError(f"found {[len(found) for found in sublayers]} residual sublayers per layer in "
                         f"{type(model).__name__}; adapters need 2 per layer (attention output, feed-forward output: "
                         "modules with dense, dropout and LayerNorm, as BERT, RoBERTa, ELECTRA and DeBERTa-v2 have)")
    hidden = model.config.hidden_size
    adapters = nn.ModuleList(nn.ModuleList(Bottleneck(hidden, s.size, s.init_std) for _ in range(2)) for _ in layers)
    adapters.to(next(model.parameters()).device)
    norms = {f"{n}." for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    # freeze first: the adapters are not on the model yet, so every LayerNorm prefix is the backbone's
    head = head_names(model)
    freeze(model, lambda name: name in head or any(name.startswith(p) for p in norms))
    setattr(model, ADAPTER_MODULE, adapters)
    for layer_adapters, layer_sublayers in zip(adapters, sublayers):
        for bottleneck, sublayer in zip(layer_adapters, layer_sublayers):
            sublayer.dropout.register_forward_hook(_hook(bottleneck))
    accept_special_tokens_mask(model)
    return model


ADAPTER = register_method(Method("adapter", lambda model, tok, s, pair: apply_adapter(model, s), ("size", "init_std"),
                                 schema=AdapterSettings))
