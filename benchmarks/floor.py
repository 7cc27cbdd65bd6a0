"""The floor: the cheapest training step that any method adapting inside encoder layer 0 can have.

Nothing trains: the backbone and the head are frozen. But the input of encoder layer 0 is made to
require grad, so the backward pass still runs through every layer, as it must for PASTA, whose
vectors are added at every layer's input from layer 0 on. Timing PASTA against the floor therefore
measures what PASTA's own work costs (finding the slots, adding the vectors, updating them), apart
from the backward through the frozen encoder that no such method can avoid.

It lives with the benchmark, not in `pasta_cli.methods`, because nobody should train it. The
benchmark registers it (`register_method`) so that it is built by the runner's own `build` (same
model loading, same optimiser, same step), with its settings in conf/method/floor.yaml beside this file.
"""

from __future__ import annotations

import torch
from torch import nn

from pasta_cli.methods import Method, register_method
from pasta_cli.modeling import accept_special_tokens_mask, encoder_layers, freeze


def _layer0_input_requires_grad(module, args, kwargs):
    """Forward pre-hook of encoder layer 0: its input becomes a leaf that requires grad (when
    training), so autograd keeps every layer's activations and runs the backward through them."""
    hidden = args[0] if args else kwargs["hidden_states"]
    if torch.is_grad_enabled() and not hidden.requires_grad:
        hidden = hidden.detach().requires_grad_(True)
    if args:
        return (hidden, *args[1:]), kwargs
    kwargs["hidden_states"] = hidden
    return args, kwargs


def apply_floor(model: nn.Module, tokenizer=None, settings=None, pair: bool = True) -> nn.Module:
    """Freeze everything; make the backward reach encoder layer 0's input.

    Nothing trains: the runner gives a method with nothing to train an optimiser over one empty tensor
    outside the model (pasta_cli.training.build), so its optimiser, clipping and schedule run as for any
    method, with nothing to update. It counts 0 in `parameter_counts`.
    """
    freeze(model, lambda name: False)
    encoder_layers(model)[0].register_forward_pre_hook(_layer0_input_requires_grad, with_kwargs=True)
    accept_special_tokens_mask(model)
    return model


FLOOR = register_method(Method("floor", apply_floor))
