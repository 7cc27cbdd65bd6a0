"""LoReFT (Wu et al., NeurIPS 2024, "ReFT: Representation Finetuning for Language Models"), implemented here:
stanfordnlp/pyreft and the pyvene library it builds on pin transformers 4.x (pyreft 0.1.0: transformers==4.45.1),
this project runs 5.x.

The paper's LoReFT, on the hidden state h of chosen positions at chosen layers:

    Phi(h) = h + R^T (W h + b - R h),   R in R^{r x d} with orthonormal rows,  W in R^{r x d},  b in R^r

It edits h only inside the r-dimensional subspace spanned by R's rows: there, R h is replaced by W h + b. As
pyreft's LoreftIntervention.forward: the activation on W h + b is an option (linear by default, as in every run
of the paper), and the dropout is applied to the whole output Phi(h), not to the edit alone.

Where: h is a layer's output (pyreft's "block_output"; for RoBERTa the official GLUE script hooks
`roberta.encoder.layer[l].output`, the same tensor), at the positions `positions` names:
"f<k>+l<k>" (the first and last k real tokens of each sequence, as pyreft's `f1+l1`; "f<k>" or "l<k>" alone), or
"special" (where the tokenizer's template put [CLS]/[SEP], RoBERTa's <s></s></s></s>: `special_tokens_mask`, as
PASTA reads it). One intervention per layer serves every position (pyreft's --share_weights); `shared: false`
gives the last-k positions their own, as pyreft's default without --share_weights does.

R stays orthonormal through torch.nn.utils.parametrizations.orthogonal (Householder map), as in pyreft; there
with torch's default trivialization, whose random d x d `base` is a buffer the trainable tensors do not hold
(pyreft writes R into it when it loads). Here use_trivialization=False: R is a function of its parameter alone,
so an adapter, a checkpoint and the best model are just the trainable tensors (pasta-cli's format). The
parameters stay fp32; the edit runs outside autocast and comes back in the hidden state's dtype.
What trains: R, W, b per intervened layer, and the task head (the official GLUE runs' --allow_cls_grad).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN

from pasta_cli.errors import PastaError, check_number
from pasta_cli.methods import Method, MethodSettings, register_method, with_changes
from pasta_cli.modeling import (
    AddedModule,
    accept_special_tokens_mask,
    encoder_layers,
    freeze_backbone,
    template_token_ids,
)
from pasta_cli.paper_data import recipe

LOREFT_MODULE = "loreft"  # attribute on the model
POSITIONS = re.compile(r"^(?:f(\d+))?\+?(?:l(\d+))?$")
# LoReFT's recipe (paper.yaml recipes.loreft, the official GLUE command in pyreft examples/loreft/README.md)
RECIPE = recipe("loreft")


def parse_positions(positions: str) -> tuple[int, int] | None:
    """(first k, last k) of "f<k>+l<k>" / "f<k>" / "l<k>"; None for "special"; anything else is refused."""
    if positions == "special":
        return None
    m = POSITIONS.match(str(positions))
    if m is None or not any(m.groups()) or (positions.count("+") and not all(m.groups())) \
            or (positions.count("+") == 0 and all(m.groups())):
        raise PastaError(f"unknown method.positions {positions!r}: give 'special' (the template's [CLS]/[SEP]), "
                         "'f<k>+l<k>' (the first and last k real tokens, pyreft's f1+l1), 'f<k>' or 'l<k>'")
    first, last = (int(g or 0) for g in m.groups())
    if first + last == 0:
        raise PastaError(f"method.positions {positions!r} selects no token: give k of at least 1 (f1, l1, f1+l1)")
    return first, last


@dataclass
class LoreftSettings(MethodSettings):
    """LoReFT (`method=loreft`, Wu et al. 2024): a rank-r edit Phi(h) = h + R^T(Wh + b - Rh) of the layers' outputs
    at a few positions; the interventions + the head train."""

    rank: int = RECIPE["rank"]                # r, pyreft's low_rank_dimension (GLUE: 1)
    layers: list[int] | None = None           # null: every layer (pyreft's `-l all`); else layer indices from 0
    positions: str = RECIPE["positions"]      # f<k>+l<k> | f<k> | l<k> | special (GLUE: f1, the <s> token)
    dropout: float = RECIPE["dropout"]        # on Phi(h), as pyreft's forward
    shared: bool = True                       # one intervention per layer for every position (--share_weights)
    activation: str = "linear"                # on W h + b (pyreft's act_fn; none in the paper's runs)

    def check(self) -> None:
        """Refuse settings that cannot build LoReFT (the runner calls this before a model loads); the layer
        indices are checked against the model once it is loaded."""
        check_number("method.rank", self.rank, lambda v: v >= 1,
                     "give the rank of the subspace, a whole number of at least 1 (the GLUE runs: 1)", whole=True)
        check_number("method.dropout", self.dropout, lambda v: 0 <= v < 1, "give a dropout probability in [0, 1)")
        parse_positions(self.positions)
        if self.activation not in ACT2FN:
            raise PastaError(f"unknown method.activation {self.activation!r}: give one of transformers' ACT2FN "
                             "(linear, the paper's; relu, gelu, ...)")
        if self.layers is not None and (not self.layers or len(set(self.layers)) != len(self.layers)
                                        or any(isinstance(i, bool) or not isinstance(i, int) for i in self.layers)):
            raise PastaError(f"method.layers {self.layers!r}: give distinct layer indices (whole numbers from 0), "
                             "or null for every layer")


class Intervention(AddedModule):
    """Phi(h) = h + R^T(act(W h + b) - R h) for one layer (and one group of positions)."""

    def __init__(self, hidden: int, rank: int, dropout: float, activation: str):
        super().__init__()
        if rank > hidden:
            raise PastaError(f"method.rank {rank} exceeds the hidden size {hidden}: R needs at most {hidden} "
                             "orthonormal rows")
        rotate = nn.Linear(hidden, rank, bias=False)
        nn.init.orthogonal_(rotate.weight)  # pyreft's LowRankRotateLayer(init_orth=True)
        # a wide matrix (r < d) gets orthonormal rows: R R^T = I_r at every step
        self.rotate = nn.utils.parametrizations.orthogonal(rotate, orthogonal_map="householder",
                                                           use_trivialization=False)
        self.learned_source = nn.Linear(hidden, rank)  # W, b (pyreft's name); nn.Linear's default init, as there
        self.act = ACT2FN[activation]
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # fp32 parameters, fp32 arithmetic: the edit of a rank-1 subspace is small beside h, bf16 would round it
        with torch.autocast(h.device.type, enabled=False):
            x = h.to(self.learned_source.weight.dtype)
            r = self.rotate.weight  # (r, d), orthonormal rows
            out = x + (self.act(self.learned_source(x)) - x @ r.T) @ r
            return self.dropout(out).to(h.dtype)


class Loreft(AddedModule):
    """Every layer's interventions (`interventions[i][group]`), the positions of the batch (found once per forward,
    before layer 0), and the template's special-token ids (where a batch comes without special_tokens_mask)."""

    def __init__(self, layers: list[int], groups: int, hidden: int, s: LoreftSettings, special_ids):
        super().__init__()
        self.layers = list(layers)
        self.interventions = nn.ModuleList(
            nn.ModuleList(Intervention(hidden, s.rank, s.dropout, s.activation) for _ in range(groups))
            for _ in layers)
        self.span = parse_positions(s.positions)
        self.shared = s.shared
        self.register_buffer("special_ids", torch.tensor(sorted(special_ids), dtype=torch.long), persistent=False)
        self._where: list[tuple[torch.Tensor, torch.Tensor]] = []

    def locate(self, input_ids, attention_mask=None, special_tokens_mask=None, position_ids=None, cu_seq_lens=None):
        """The (rows, columns) of each group of positions of this batch; padding is never chosen."""
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if self.span is None:
            special = special_tokens_mask.bool() if special_tokens_mask is not None \
                else torch.isin(input_ids, self.special_ids)
            groups = [special & real]
        else:
            index, length = _index_in_sequence(real, position_ids, cu_seq_lens)
            first, last = self.span
            groups = [real & (index < first), real & (index >= length - last)]
            if self.shared:  # one intervention, each position once
                groups = [groups[0] | groups[1]]
            elif not first or not last:  # "f<k>" or "l<k>" alone: one group
                groups = [groups[0] if first else groups[1]]
        self._where = [torch.nonzero(g, as_tuple=True) for g in groups]

    def intervene(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Phi at the located positions of this layer's output; every other position is left as it was."""
        out = hidden
        for intervention, (rows, cols) in zip(self.interventions[layer], self._where):
            # with separate interventions, a position in both groups (a sequence shorter than 2k) gets the last's
            out = out.index_put((rows, cols), intervention(hidden[rows, cols]))
        return out


def _index_in_sequence(real: torch.Tensor, position_ids=None, cu_seq_lens=None):
    """(index among its sequence's real tokens, that sequence's length) of every token. A padded row holds one
    sequence; a packed row (trainer.packing: the collator's cu_seq_lens_q, or position_ids that restart) several."""
    batch, width = real.shape
    starts = real & (real.long().cumsum(dim=1) == 1)  # each row's first real token
    if cu_seq_lens is not None:
        starts = torch.zeros_like(real)
        starts.view(-1)[cu_seq_lens[:-1].long()] = True
    elif position_ids is not None:
        pos = position_ids.expand(batch, width)
        starts = starts | (real & (torch.diff(pos, prepend=pos[:, :1] - 1, dim=1) != 1))
    flat_real, flat_starts = real.reshape(-1).long(), starts.reshape(-1).long()
    sequence = (flat_starts.cumsum(0) - 1).clamp(min=0)
    counted = flat_real.cumsum(0)  # real tokens up to and including each token, over the flattened batch
    before = torch.zeros(int(flat_starts.sum()) or 1, dtype=torch.long, device=real.device)
    before[sequence[flat_starts.bool()]] = (counted - flat_real)[flat_starts.bool()]
    index = counted - 1 - before[sequence]
    length = torch.bincount(sequence, weights=flat_real, minlength=before.numel()).long()[sequence]
    return index.view(batch, width), length.view(batch, width)


def _consumer(loreft: Loreft):
    def consume(args, kwargs, special_tokens_mask):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise PastaError("LoReFT needs input_ids to find its positions (inputs_embeds alone is not enough)")
        loreft.locate(input_ids, kwargs.get("attention_mask"), special_tokens_mask, kwargs.get("position_ids"),
                      kwargs.get("cu_seq_lens_q"))
    return consume


def _layer_hook(loreft: Loreft, i: int):
    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.dim() != 3:
            raise PastaError(f"LoReFT expects a layer output of shape (batch, length, hidden); "
                             f"{type(module).__name__} gave {tuple(hidden.shape)} (an unpadded batch?): use "
                             "trainer.packing=false and sdpa or eager attention")
        hidden = loreft.intervene(i, hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
    return hook


def apply_loreft(model: nn.Module, tokenizer=None, settings: LoreftSettings | None = None, **changes) -> nn.Module:
    """LoReFT interventions on the chosen layers' outputs; interventions + head train, the backbone is frozen.
    `settings` (else LoreftSettings' defaults) with `changes` (rank=4, positions="f1+l1", ...). `tokenizer` gives
    the template's special-token ids, for positions="special" when a batch comes without special_tokens_mask."""
    if hasattr(model, LOREFT_MODULE):
        raise PastaError("apply_loreft was already applied to this model")
    s = with_changes(LoreftSettings, settings, changes)
    layers = encoder_layers(model)
    chosen = list(range(len(layers))) if s.layers is None else list(s.layers)
    wrong = [i for i in chosen if not 0 <= i < len(layers)]
    if wrong:
        raise PastaError(f"method.layers {wrong} out of range: {type(model).__name__} has {len(layers)} layers, "
                         f"0 to {len(layers) - 1} (or null: every layer)")
    span = parse_positions(s.positions)
    groups = 2 if span is not None and not s.shared and all(span) else 1
    special = ()
    if tokenizer is not None:
        special = template_token_ids(tokenizer)
        if span is None and not special:
            raise PastaError(f"method.positions 'special': {type(tokenizer).__name__} inserts no special tokens, so "
                             "there is no position to intervene on: use positions f1+l1 (pyreft's default)")
    loreft = Loreft(chosen, groups, model.config.hidden_size, s, special)
    loreft.to(next(model.parameters()).device)
    loreft.train(model.training)
    freeze_backbone(model)
    setattr(model, LOREFT_MODULE, loreft)
    accept_special_tokens_mask(model, _consumer(loreft))
    for slot, i in enumerate(chosen):
        layers[i].register_forward_hook(_layer_hook(loreft, slot))
    return model


class LoreftMethod(Method):
    def param_groups(self, model, params):
        """R's parameter without weight decay: the Householder map reads its signs off that parameter's diagonal
        (+-1, cast to int and never trained); decay would shrink them below 1 in size and int() would make R zero.
        (pyreft has the same map; its runs use no weight decay at all.)"""
        rotate = {id(p) for n, p in getattr(model, LOREFT_MODULE).named_parameters() if ".rotate." in n}
        return [{"params": [p for p in params if id(p) not in rotate]},
                {"params": [p for p in params if id(p) in rotate], "weight_decay": 0.0}]


LOREFT = register_method(LoreftMethod("loreft", lambda model, tok, s, pair: apply_loreft(model, tok, s),
                                      ("rank", "layers", "positions", "dropout", "shared", "activation"),
                                      schema=LoreftSettings,
                                      # at the special tokens' positions: PASTA's closest relative (the frontier's row)
                                      configs={"loreft_special": {"positions": "special"}}))
