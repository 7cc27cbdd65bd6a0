"""The paper's baselines, trained in the same runner as PASTA: full fine-tuning, BitFit, LoRA, P-tuning v2.

Every `apply_*` takes a freshly loaded `...ForSequenceClassification` / `...ForTokenClassification`
model and returns the model to train (LoRA returns the PEFT wrapper). Every returned model accepts
and ignores the `special_tokens_mask=` keyword the runner's collator always sends (a forward pre-hook
pops it), so one collator serves every method.

* full fine-tuning: every weight trains.
* BitFit (Ben Zaken et al., 2022): every bias term of the backbone trains (query/key/value, attention
  output, intermediate, output, LayerNorm and embedding-LayerNorm biases, BERT's pooler bias), plus
  the task head; all other weights stay frozen.
* LoRA (Hu et al., 2022), through the PEFT library: W x + (alpha / r) B A x on the attention query and
  value projections (r=8, alpha=16, dropout 0.1 on the LoRA input by default); the task head trains
  (PEFT's modules_to_save copy of it).
* P-tuning v2 (Liu et al., ACL 2022), implemented here, because PEFT's prefix tuning refuses encoder
  models without a key/value cache under transformers 5.x. Formulation: the reparameterisation-free
  ("prefix_projection=False") variant, i.e. deep prompt tuning with direct parameters

      P_K, P_V in R^{num_layers x length x hidden}   (length 20 by default, init N(0, 0.02^2))
      layer l, per head h:  K_l = [dropout(P_K[l])_h ; X W_K,h],  V_l = [dropout(P_V[l])_h ; X W_V,h]
      Attention_l,h = softmax(Q_h K_l^T / sqrt(d_head) + mask) V_l

  The prefixes are keys/values directly (not tokens passed through W_K/W_V), prepended at every
  layer, with dropout (hidden_dropout_prob-style, 0.1 by default) on the prefix parameters as in the
  official code. Every token, padding included, attends to all `length` prefixes; padded tokens
  stay masked as keys. The backbone is frozen; prefixes + task head train. Unlike the official code
  (which passes the prefixes as `past_key_values`, so old transformers shifted the tokens'
  position ids by `length`), token position ids are left unchanged.
  Mechanism: a custom attention function registered in transformers' `AttentionInterface` as
  "pasta_prefix" (with `sdpa_mask` registered for it in `AttentionMaskInterface`, so padding masks
  are still built); it prepends the layer's prefixes to key/value, extends the mask, and delegates
  to the implementation the model had before (sdpa or eager).
* floor (for benchmarks only): backbone and head frozen, no trainable weight anywhere, but the input
  of encoder layer 0 is made to require grad, so the backward pass still traverses every layer. It
  is the cost floor of any method that adapts inside the first layer (as PASTA does).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from pasta_cli.errors import PastaError

PREFIX_ATTN = "pasta_prefix"
PREFIX_MODULE = "prefix_encoder"  # attribute name of the prefix parameters on the model
METHOD_MARKERS = ("lora_", PREFIX_MODULE + ".", "pasta.")


# --------------------------------------------------------------------------------------------------
# shared helpers


def _hf_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _drop_special_tokens_mask(module, args, kwargs):
    kwargs.pop("special_tokens_mask", None)
    return args, kwargs


def _accept_special_tokens_mask(*models: nn.Module) -> None:
    """A forward pre-hook that pops `special_tokens_mask` (once per module, however often called)."""
    for m in models:
        if not getattr(m, "_drops_special_tokens_mask", False):
            m.register_forward_pre_hook(_drop_special_tokens_mask, with_kwargs=True)
            m._drops_special_tokens_mask = True


def _is_head(model: nn.Module, name: str) -> bool:
    return not name.startswith(model.base_model_prefix + ".") and not _is_method(name)


def _is_method(name: str) -> bool:
    return any(marker in name for marker in METHOD_MARKERS)


def _freeze_all_but_head(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(_is_head(model, name))


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    from pasta_cli.pasta import encoder_layers

    return encoder_layers(model)


# --------------------------------------------------------------------------------------------------
# full fine-tuning, BitFit, floor


def apply_full_ft(model: nn.Module) -> nn.Module:
    """Every weight trains."""
    for p in model.parameters():
        p.requires_grad_(True)
    _accept_special_tokens_mask(model)
    return model


def apply_bitfit(model: nn.Module) -> nn.Module:
    """Only the backbone's bias terms (all of them, LayerNorm biases included) and the head train."""
    backbone = model.base_model_prefix + "."
    for name, p in model.named_parameters():
        if name.startswith(backbone):
            p.requires_grad_(name.endswith(".bias") or name == "bias")
        else:
            p.requires_grad_(True)
    _accept_special_tokens_mask(model)
    return model


def _floor_pre_hook(model):
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if torch.is_grad_enabled() and not hidden.requires_grad:
            hidden = hidden.detach().requires_grad_(True)
        model._floor_input = hidden  # kept for inspection (tests, benchmarks)
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs
    return hook


def apply_floor(model: nn.Module) -> nn.Module:
    """Benchmark floor: nothing trains, yet gradients flow from the loss down to encoder layer 0's input."""
    for p in model.parameters():
        p.requires_grad_(False)
    layer0 = _encoder_layers(model)[0]
    layer0.register_forward_pre_hook(_floor_pre_hook(model), with_kwargs=True)
    _accept_special_tokens_mask(model)
    return model


# --------------------------------------------------------------------------------------------------
# LoRA (PEFT)

_TARGET_ALIASES = (  # default targets in the naming of each family (BERT/RoBERTa/ELECTRA first)
    ("query", "value"),
    ("query_proj", "value_proj"),  # DeBERTa
    ("q_lin", "v_lin"),  # DistilBERT
    ("q_proj", "v_proj"),
)


def _linear_names(model: nn.Module) -> set[str]:
    backbone = model.base_model
    return {n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)}


def default_lora_targets(model: nn.Module) -> list[str]:
    """query/value projection names of this backbone (BERT, RoBERTa, ELECTRA: query, value)."""
    names = _linear_names(model)
    for targets in _TARGET_ALIASES:
        if set(targets) <= names:
            return list(targets)
    raise PastaError(
        f"found no query/value projections in {type(model).__name__}: pass lora target_modules "
        f"explicitly (its linear layers: {', '.join(sorted(names))})"
    )


def apply_lora(model: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.1,
               target_modules=None) -> nn.Module:
    """LoRA on the attention projections through PEFT; LoRA matrices + task head train.

    Returns the PeftModel (task type SEQ_CLS or TOKEN_CLS, from the model's class).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.TOKEN_CLS if type(model).__name__.endswith("ForTokenClassification") else TaskType.SEQ_CLS
    if target_modules is None:
        target_modules = default_lora_targets(model)
    else:
        target_modules = list(target_modules)
        missing = set(target_modules) - _linear_names(model)
        if missing:
            raise PastaError(
                f"LoRA target modules {sorted(missing)} are not linear layers of {type(model).__name__}: "
                f"choose among {', '.join(sorted(_linear_names(model)))}"
            )
    # the head: everything outside the backbone (classifier, RoBERTa/ELECTRA's classification head)
    head = sorted({n.split(".", 1)[0] for n, _ in model.named_parameters() if _is_head(model, n)})
    config = LoraConfig(task_type=task, r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=target_modules, modules_to_save=head, bias="none")
    peft_model = get_peft_model(model, config)
    _accept_special_tokens_mask(peft_model, model)
    return peft_model


# --------------------------------------------------------------------------------------------------
# P-tuning v2 (deep prefix tuning)


class PrefixEncoder(nn.Module):
    """Trainable key/value prefixes for every layer: `keys`, `values` of shape (num_layers, length, hidden)."""

    def __init__(self, num_layers, length, hidden_size, num_heads, dropout=0.1, init_std=0.02,
                 delegate="sdpa"):
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
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        from transformers.models.bert.modeling_bert import eager_attention_forward as fn
    return fn


def prefix_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """Attention over [prefix; tokens]: the layer's prefix keys/values are prepended, then the model's
    own implementation (sdpa or eager) runs. Modules without prefixes (none in an encoder) pass through."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

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
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

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


def apply_prefix(model: nn.Module, length: int = 20, dropout: float = 0.1, init_std: float = 0.02) -> nn.Module:
    """P-tuning v2: trainable key/value prefixes at every layer; backbone frozen, prefixes + head train."""
    config = model.config
    delegate = config._attn_implementation or "eager"
    if delegate == PREFIX_ATTN:
        raise PastaError("apply_prefix was already applied to this model")
    if delegate not in ("sdpa", "eager"):
        delegate = "sdpa"  # flash/flex kernels cannot take the extended mask; sdpa computes the same thing
    layers = _encoder_layers(model)
    prefix = PrefixEncoder(len(layers), length, config.hidden_size, config.num_attention_heads,
                           dropout, init_std, delegate)
    prefix.to(next(model.parameters()).device)
    prefix.train(model.training)  # a new module starts in training mode; follow the model's mode
    _freeze_all_but_head(model)
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
    _accept_special_tokens_mask(model)
    return model


# --------------------------------------------------------------------------------------------------
# counts


def trainable_counts(model: nn.Module) -> dict:
    """Parameter counts for any of the methods (PASTA included), percentages of the backbone.

    backbone: pretrained backbone parameters (method additions such as LoRA matrices excluded);
    method: trainable parameters the method added or unfroze, head excluded;
    head: trainable head parameters; trainable: all trainable parameters.
    """
    hf = _hf_model(model)
    prefix = hf.base_model_prefix + "."
    backbone = method = head = 0
    for name, p in hf.named_parameters():
        added = _is_method(name)
        in_backbone = name.startswith(prefix) and not added
        if in_backbone:
            backbone += p.numel()
        if not p.requires_grad:
            continue
        if added or in_backbone:
            method += p.numel()
        else:
            head += p.numel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "backbone": backbone,
        "method": method,
        "head": head,
        "trainable": trainable,
        "method_pct": 100.0 * method / backbone,
        "trainable_pct": 100.0 * trainable / backbone,
    }
