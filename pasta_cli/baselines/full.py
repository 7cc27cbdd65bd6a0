"""Full fine-tuning and BitFit: the baselines that unfreeze weights the backbone already has.

* full fine-tuning: every weight trains.
* BitFit (Ben Zaken et al., 2022): every bias term of the backbone trains (query/key/value, attention
  output, intermediate, output, LayerNorm and embedding-LayerNorm biases, BERT's pooler bias), plus
  the task head; all other weights stay frozen.

Both methods' homes in the registry (pasta_cli.methods): neither has a setting beyond its name.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pasta_cli.methods import Method, MethodSettings, register_method
from pasta_cli.modeling import accept_special_tokens_mask, freeze, head_names


@dataclass
class FullFtSettings(MethodSettings):
    """Full fine-tuning (`method=full_ft`): every weight trains."""


@dataclass
class BitFitSettings(MethodSettings):
    """BitFit (`method=bitfit`, Ben Zaken et al. 2022): all bias terms of the backbone + the head."""


def apply_full_ft(model: nn.Module) -> nn.Module:
    """Every weight trains."""
    freeze(model, lambda name: True)
    accept_special_tokens_mask(model)
    return model


def is_bias(name: str) -> bool:
    return name.endswith(".bias") or name == "bias"


def apply_bitfit(model: nn.Module) -> nn.Module:
    """Only the backbone's bias terms (all of them, LayerNorm biases included) and the head train."""
    head = head_names(model)
    freeze(model, lambda name: is_bias(name) or name in head)
    accept_special_tokens_mask(model)
    return model


FULL_FT = register_method(Method("full_ft", lambda model, tok, s, pair: apply_full_ft(model), schema=FullFtSettings,
                                 low_precision_frozen=False))  # every weight trains: fp32 masters
BITFIT = register_method(Method("bitfit", lambda model, tok, s, pair: apply_bitfit(model), schema=BitFitSettings))
