"""P-tuning v2 (Liu et al., ACL 2022), implemented here, because PEFT's prefix tuning refuses encoder
models without a key/value cache under transformers 5.x. Formulation: the reparameterisation-free
("prefix_projection=False") variant, i.e. deep prompt tuning with direct parameters

    P_K, P_V in R^{num_layers x length x hidden}   (length: `PrefixSettings`, init N(0, 0.02^2))
    layer l, per head h:  K_l = [dropout(P_K[l])_h ; X W_K,h],  V_l = [dropout(P_V[l])_h ; X W_V,h]
    Attention_l,h = softmax(Q_h K_l^T / sqrt(d_head) + mask) V_l

The prefixes are keys/values directly (not tokens passed through W_K/W_V), prepended at every
layer, with dropout (hidden_dropout_prob-style, P-tuning v2's recipe) on the prefix parameters as in the
official code. Every token, padding included, attends to all `length` prefixes; padded tokens
stay masked as keys. The backbone is frozen; prefixes + task head train. Unlike the official code
(which passes the prefixes as `past_key_values`, so old transformers shifted the tokens'
position ids by `length`), token position ids are left unchanged.

Mechanism: a custom attention function registered in transformers' `AttentionInterface` as
"pasta_prefix" (with `sdpa_mask` registered for it in `AttentionMaskInterface`, so padding masks
are still built); it prepends the layer's prefixes to key/value, extends the mask, and delegates
to the implementation the model had before (sdpa or eager).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface
from transformers.models.bert.modeling_bert import eager_attention_forward as bert_eager_attention

from pasta_cli.errors import PastaError, check_number
from pasta_cli.methods import Method, MethodSettings, register_method, with_changes
from pasta_cli.modeling import AddedModule, accept_special_tokens_mask, encoder_layers, freeze_backbone
from pasta_cli.paper_data import recipe

PREFIX_ATTN = "pasta_prefix"
PREFIX_MODULE = "prefix_encoder"  # attribute name of the prefix parameters on the model
INIT_STD = 0.02                   # the prefixes start as normal(0, INIT_STD^2), as the official code's
# P-tuning v2's recipe (paper.yaml recipes.prefix): its common values, which are every run's (a recipe's task
# and backbone entries hold budgets, never a method setting)
RECIPE = recipe("prefix")


@dataclass
class PrefixSettings(MethodSettings):
    """P-tuning v2 (`method=prefix`, Liu et al. 2022): trainable key/value prefixes at every layer."""

    length: int = RECIPE["length"]     # prefixes per layer (20, as the PASTA paper re-ran it)
    dropout: float = RECIPE["dropout"]  # on the prefix parameters

    def check(self) -> None:
        """Refuse settings that cannot build prefixes (the runner calls this before a model loads)."""
        check_number("method.length", self.length, lambda v: v >= 1,
                     "give the prefix length, a whole number of at least 1 (the PASTA paper's re-run: 20)", whole=True)
        check_number("method.dropout", self.dropout, lambda v: 0 <= v < 1, "give a dropout probability in [0, 1)")


class PrefixEncoder(AddedModule):
    """Trainable key/value prefixes for every layer: `keys`, `values` of shape (num_layers, length, hidden)."""

    def __init__(self, num_layers, length, hidden_size, num_heads, dropout, init_std=INIT_STD, delegate="sdpa"):
        super().__init__()
        if hidden_size % num_heads:
            raise PastaError(f"hidden size {hidden_size} is not a multiple of {num_heads} heads")
        self.length, self.num_heads, self.head_dim = length, num_heads, hidden_size // num_heads
        self.keys = nn.Parameter(torch.randn(num_layers, length, hidden_size) * init_std)
        self.values = nn.Parameter(torch.randn(num_layers, length, hidden_size) * init_std)
        self.dropout = nn.Dropout(dropout)
        self.delegate = delegate  # the attention implementation that does the actual work

    def key_value(self, layer: int, batch: int, dtype: torch.dtype):
        """This layer's prefixes as (batch, heads, length, head_dim) keys and values."""
        def per_head(p):
            p = self.dropout(p[layer]).to(dtype)
            p = p.view(self.length, self.num_heads, self.head_dim).transpose(0, 1)
            return p.unsqueeze(0).expand(batch, -1, -1, -1)
        return per_head(self.keys), per_head(self.values)


def _extend_mask(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Prepend `length` always-visible key columns to a boolean or additive attention mask."""
    if mask is None:
        return None
    shape = (*mask.shape[:-1], length)
    visible = mask.new_ones(shape) if mask.dtype == torch.bool else mask.new_zeros(shape)
    return torch.cat([visible, mask], dim=-1)


def _eager_for(module: nn.Module):
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", bert_eager_attention)


def prefix_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """Attention over [prefix; tokens]: the layer's prefix keys/values are prepended, then the model's
    own implementation (sdpa or eager) runs. Modules without prefixes (none in an encoder) pass through."""
    state = module.__dict__.get("_pasta_prefix")
    if state is None:
        delegate = "sdpa"
    else:
        prefix, layer = state
        delegate = prefix.delegate
        pk, pv = prefix.key_value(layer, key.shape[0], key.dtype)
        key = torch.cat([pk, key], dim=2)
        value = torch.cat([pv, value], dim=2)
        attention_mask = _extend_mask(attention_mask, prefix.length)
    if delegate == "eager":
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device) \
                .masked_fill(~attention_mask, torch.finfo(query.dtype).min)
        return _eager_for(module)(module, query, key, value, attention_mask, **kwargs)
    return ALL_ATTENTION_FUNCTIONS[delegate](module, query, key, value, attention_mask, **kwargs)


def register_prefix_attention() -> None:
    """Make "pasta_prefix" a valid attention implementation (and give it sdpa's mask builder)."""
    AttentionInterface.register(PREFIX_ATTN, prefix_attention_forward)
    AttentionMaskInterface.register(PREFIX_ATTN, sdpa_mask)


def _self_attention(layer: nn.Module) -> nn.Module:
    """The module of an encoder layer that calls the attention interface (has query/key/value)."""
    for m in layer.modules():
        if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value")):
            return m
    for m in layer.modules():  # other namings (DeBERTa's query_proj, ...): first "*SelfAttention"
        if type(m).__name__.endswith("SelfAttention"):
            return m
    raise PastaError(f"found no self-attention module in {type(layer).__name__}")


def apply_prefix(model: nn.Module, settings: PrefixSettings | None = None, **changes) -> nn.Module:
    """P-tuning v2: trainable key/value prefixes at every layer; backbone frozen, prefixes + head train.
    `settings` (else PrefixSettings' defaults) with `changes` (length=8, ...)."""
    s = with_changes(PrefixSettings, settings, changes)
    config = model.config
    delegate = config._attn_implementation or "eager"
    if delegate == PREFIX_ATTN:
        raise PastaError("apply_prefix was already applied to this model")
    if delegate not in ("sdpa", "eager"):
        delegate = "sdpa"  # flash/flex kernels cannot take the extended mask; sdpa computes the same thing
    layers = encoder_layers(model)
    prefix = PrefixEncoder(len(layers), s.length, config.hidden_size, config.num_attention_heads,
                           s.dropout, INIT_STD, delegate)
    prefix.to(next(model.parameters()).device)
    prefix.train(model.training)  # a new module starts in training mode; follow the model's mode
    freeze_backbone(model)
    setattr(model, PREFIX_MODULE, prefix)
    for i, layer in enumerate(layers):
        attention = _self_attention(layer)
        # a plain attribute (not a submodule), so the prefixes are registered once, on the model
        attention.__dict__["_pasta_prefix"] = (prefix, i)
    register_prefix_attention()
    try:
        model.set_attn_implementation(PREFIX_ATTN)
    except (ValueError, KeyError, AttributeError):
        config._attn_implementation = PREFIX_ATTN
    for m in model.modules():  # every submodule that holds a config must see the new implementation
        cfg = getattr(m, "config", None)
        if cfg is not None and cfg is not config and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = PREFIX_ATTN
    if config._attn_implementation != PREFIX_ATTN:
        raise PastaError(f"{type(model).__name__} did not accept the prefix attention implementation")
    accept_special_tokens_mask(model)
    return model


PREFIX = register_method(Method("prefix", lambda model, tok, s, pair: apply_prefix(model, s), ("length", "dropout"),
                                schema=PrefixSettings))
