"""Full fine-tuning and BitFit: the baselines that unfreeze weights the backbone already has.

* full fine-tuning: every weight trains.
* BitFit (Ben Zaken et al., 2022): every bias term of the backbone trains (query/key/value, attention
  output, intermediate, output, LayerNorm and embedding-LayerNorm biases, BERT's pooler bias), plus
  the task head; all other weights stay frozen.
"""

from __future__ import annotations

from torch import nn

from pasta_cli.modeling import accept_special_tokens_mask, freeze, is_head


def apply_full_ft(model: nn.Module) -> nn.Module:
    """Every weight trains."""
    freeze(model, lambda name: True)
    accept_special_tokens_mask(model)
    return model


def is_bias(name: str) -> bool:
    return name.endswith(".bias") or name == "bias"


def apply_bitfit(model: nn.Module) -> nn.Module:
    """Only the backbone's bias terms (all of them, LayerNorm biases included) and the head train."""
    freeze(model, lambda name: is_bias(name) or is_head(model, name))
    accept_special_tokens_mask(model)
    return model
