"""PASTA: Parameter-efficient tuning with Special Token Adaptation (Yang et al., EACL 2023).

The whole method, beside the paper's equation:

    H_mod^l = { h_i^l + m_i^l },   H^{l+1} = TransformerLayer_l(H_mod^l)
    m_i^l   = e(v_p^l) if token i is the p-th special token of its sequence, else 0

The backbone stays frozen (requires_grad=False everywhere); the only new weights are
`vectors` of shape (num_layers, num_vectors, hidden) plus the task head. Vectors are added by a
forward pre-hook on every encoder layer, so the model keeps its class, its state-dict names and
its gradient checkpointing (transformers checkpoints `forward`, hooks stay outside the replay).

PASTA's home in the method registry (pasta_cli.methods) is at the bottom: its settings (`PastaSettings`,
config `method=pasta`, and `method=classifier_only`: the classifier_only variant starting at the frozen
model), its adapter tensors (`pasta_vectors` + the head) and its figure (the vectors' norms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pasta_cli import norms
from pasta_cli.errors import PastaError
from pasta_cli.methods import Method, MethodSettings, load_head, register_method
from pasta_cli.modeling import (
    AddedModule,
    accept_special_tokens_mask,
    encoder_layers,
    freeze_backbone,
    head_parameters,
    template_token_ids,
)
from pasta_cli.paper_data import recipe

VARIANTS = ("full", "cls_only", "sep_only", "shared", "classifier_only")


def slot_to_vector_map(variant: str, num_slots: int) -> list[int]:
    """Which vector serves each slot (-1: none), as PAPER.md's Table 4 defines the ablations.

    Slot 0 is [CLS] (<s>); slots 1..P-1 are the [SEP]s (</s>s) in order of occurrence.
    """
    if variant == "full":
        return list(range(num_slots))
    if variant == "cls_only":
        return [0] + [-1] * (num_slots - 1)
    if variant == "sep_only":
        return [-1] + list(range(num_slots - 1))
    if variant == "shared":
        return [0] * num_slots
    if variant == "classifier_only":
        return [-1] * num_slots
    raise PastaError(f"unknown PASTA variant '{variant}': choose one of {', '.join(VARIANTS)}")


def count_slots(tokenizer, pair: bool) -> int:
    """P: how many special tokens the tokenizer adds to one input (BERT 2/3, RoBERTa 2/4)."""
    n = tokenizer.num_special_tokens_to_add(pair=pair)
    if n == 0:
        raise PastaError(
            f"{type(tokenizer).__name__} inserts no special tokens, so PASTA has nothing to adapt "
            "(the paper's stated limitation, e.g. GPT-2): use an encoder such as BERT, RoBERTa, "
            "ELECTRA or DeBERTa"
        )
    return n


def number_slots(is_special: torch.Tensor, starts: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, length) slot number of every special token (the p-th of its sequence is slot p), -1 elsewhere.

    A padded row holds one sequence; a packed row several, each beginning where `starts` is True
    (`sequence_starts`). The count restarts at each start without a loop: the specials counted before a
    sequence's first token are carried along it by `cummax` (the running count never decreases).
    The one definition of a slot's number, shared by the injector and the attention analysis.
    """
    count = is_special.long().cumsum(dim=1)
    if starts is not None:
        count = count - torch.where(starts, count - is_special.long(), 0).cummax(dim=1).values
    return torch.where(is_special, count - 1, -1)


def sequence_starts(shape, position_ids=None, cu_seq_lens=None, attention_mask=None) -> torch.Tensor | None:
    """(batch, length) True where a sequence begins in a packed batch; None for plain padded rows (no
    position_ids or boundaries given). From the collator's boundaries `cu_seq_lens` (one packed row,
    DataCollatorWithFlattening's cu_seq_lens_q) when given, else wherever `position_ids` do not continue the
    previous position (a restart at 0, or at RoBERTa's offset), as transformers' own packed-sequence test.
    Padding never starts a sequence."""
    if cu_seq_lens is not None:
        starts = torch.zeros(shape, dtype=torch.bool, device=cu_seq_lens.device)
        starts[0, cu_seq_lens[:-1].long()] = True
    elif position_ids is not None:
        position_ids = position_ids.expand(shape)
        # a row's first token always starts a sequence (prepending itself gives a difference of 0, never 1)
        starts = torch.diff(position_ids, prepend=position_ids[:, :1], dim=-1) != 1
    else:
        return None
    return starts if attention_mask is None else starts & attention_mask.bool()


def specials_per_sequence(is_special: torch.Tensor, starts: torch.Tensor | None = None) -> torch.Tensor:
    """Special tokens in each row (padded batch) or in each sequence of the packed rows, in order."""
    if starts is None:
        return is_special.sum(dim=1)
    per_row = starts.sum(dim=1).clamp(min=1)
    first_of_row = per_row.cumsum(0) - per_row  # global number of each row's first sequence
    sequence = starts.long().cumsum(dim=1).clamp(min=1) - 1 + first_of_row[:, None]
    return torch.bincount(sequence.flatten(), is_special.flatten().long(), minlength=int(per_row.sum())).long()


def special_tokens(input_ids, slot_token_ids, attention_mask=None, special_tokens_mask=None) -> torch.Tensor:
    """Where the tokenizer's template put a special token (its special_tokens_mask, or, without
    that mask, a template id); padding never counts; [UNK]/[MASK] are not template ids."""
    if special_tokens_mask is not None:
        is_special = special_tokens_mask.bool()
    else:
        is_special = torch.isin(input_ids, slot_token_ids)
    if attention_mask is not None:
        is_special = is_special & attention_mask.bool()
    return is_special


def slot_positions(is_special: torch.Tensor, slot_to_vector: torch.Tensor, starts: torch.Tensor | None = None):
    """(batch index, position, vector index) of every slot that has a vector, for the whole batch at once.

    The p-th special token of a sequence (a row, or one of a packed row's: `starts`) is slot p.
    `slot_to_vector` is (P,) when every row has the same task, or (batch, P) with one row per input (a
    mixed-task batch: each row its own task's map, vector indices into one table, -1 where a slot has no
    vector or lies beyond the row's own P).
    Slots beyond P (a literal special token in text tokenized without the mask) get no vector.
    """
    num_slots = slot_to_vector.shape[-1]
    slot = number_slots(is_special, starts)
    in_range = slot.ge(0) & (slot < num_slots)
    slot = slot.clamp(0, num_slots - 1)
    vector = slot_to_vector[slot] if slot_to_vector.dim() == 1 else slot_to_vector.gather(1, slot)
    rows, cols = torch.nonzero(in_range & (vector >= 0), as_tuple=True)
    return rows, cols, vector[rows, cols]


def check_input_form(specials_per_row: torch.Tensor, num_slots: int | torch.Tensor, unit: str = "row") -> None:
    """Every row must have the special tokens the vectors were trained for: a pair model given one
    sentence would put the middle [SEP]'s vector on the final [SEP], a single-sentence model given a
    pair would leave the final [SEP] without one. Neither is what was trained. `num_slots`: one count
    for the batch, or one per row (a mixed-task batch)."""
    expected = torch.as_tensor(num_slots).expand_as(specials_per_row)
    wrong = torch.nonzero(specials_per_row != expected)
    if len(wrong):
        row = int(wrong[0, 0])
        found, slots = int(specials_per_row[row]), int(expected[row])
        trained = "sentence pairs" if slots > 2 else "single sentences"
        given = "a single sentence" if found < slots else "more special tokens (a sentence pair?)"
        raise PastaError(
            f"this PASTA model was trained on {trained} ({slots} special tokens per input) but {unit} "
            f"{row} has {found} ({given}): tokenize inputs the way the task was trained "
            f"({'text, text_pair' if slots > 2 else 'one text per row'}), with "
            "return_special_tokens_mask=True if a text may contain a literal special token")


class PastaInjector(AddedModule):
    """Holds the PASTA vectors and adds them at the special-token slots of each layer's input."""

    def __init__(self, num_layers, num_slots, hidden_size, variant="full", slot_token_ids=(),
                 dropout=0.0, init_std=0.0):
        super().__init__()
        mapping = slot_to_vector_map(variant, num_slots)
        num_vectors = max(mapping) + 1
        self.variant, self.num_layers, self.num_slots = variant, num_layers, num_slots
        # classifier_only has no vectors: an empty tensor must not require grad, or DDP waits for its
        # gradient forever ("Expected to have finished reduction in the prior iteration")
        self.vectors = nn.Parameter(torch.zeros(num_layers, num_vectors, hidden_size), requires_grad=num_vectors > 0)
        if init_std > 0:
            nn.init.normal_(self.vectors, std=init_std)
        self.register_buffer("slot_to_vector", torch.tensor(mapping, dtype=torch.long), persistent=False)
        self.register_buffer("slot_token_ids", torch.tensor(list(slot_token_ids), dtype=torch.long),
                             persistent=False)
        self.dropout = nn.Dropout(dropout)
        self._where = None  # (batch index, position, vector index) of every slot in the batch

    @property
    def num_vectors(self) -> int:
        return self.vectors.shape[1]

    def locate(self, input_ids, attention_mask=None, special_tokens_mask=None, starts=None):
        """Find every slot of the batch at once (no loop over rows or tokens): `special_tokens`, then
        `slot_positions` with this task's slot-to-vector map; `starts`: where packed sequences begin."""
        is_special = special_tokens(input_ids, self.slot_token_ids, attention_mask, special_tokens_mask)
        check_input_form(specials_per_sequence(is_special, starts), self.num_slots,
                         "row" if starts is None else "packed sequence")
        self._where = slot_positions(is_special, self.slot_to_vector, starts)

    def inject(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """h_i + e(v_p^l) at the slot positions; everything else untouched."""
        rows, cols, vector = self._where
        added = self.dropout(self.vectors[layer, vector]).to(hidden.dtype)
        return hidden.index_put((rows, cols), added, accumulate=True)


class RowInjector(nn.Module):
    """PastaInjector's job for a batch whose rows belong to different tasks: one table of every task's vectors
    (`stack_vectors`), and per row its task's slot map into it (`row_maps`, -1: no vector) and slot count
    (`row_slots`). Shared by MultiTaskPasta and the PEFT tuner's `adapter_names=` batches (pasta_cli.peft)."""

    def __init__(self, num_layers: int, hidden_size: int, slot_token_ids):
        super().__init__()
        self.register_buffer("table", torch.zeros(num_layers, 0, hidden_size))
        self.register_buffer("slot_token_ids", torch.tensor(list(slot_token_ids), dtype=torch.long))
        self.row_maps = None    # (batch, P max): each row's slot -> index into `table`, -1 for none
        self.row_slots = None   # (batch,): each row's own slot count
        self._where = None

    def locate(self, input_ids, attention_mask=None, special_tokens_mask=None, starts=None):
        # one task per row: a packed row (several sequences) would mix tasks in one row's map
        if starts is not None and bool((starts.sum(dim=1) > 1).any()):
            raise PastaError("a mixed-task batch holds one input per row: pad the batch instead of packing it")
        is_special = special_tokens(input_ids, self.slot_token_ids, attention_mask, special_tokens_mask)
        check_input_form(is_special.sum(dim=1), self.row_slots)
        self._where = slot_positions(is_special, self.row_maps)

    def inject(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        rows, cols, vector = self._where
        return hidden.index_put((rows, cols), self.table[layer, vector].to(hidden.dtype), accumulate=True)


def stack_vectors(vectors, maps) -> tuple[torch.Tensor, torch.Tensor]:
    """(table, maps): the tasks' vectors, each (layers, its vectors, hidden), side by side in one table, and each
    task's slot-to-vector map shifted into it, padded with -1 to the widest (one row per task)."""
    shifted, offset = [], 0
    width = max((len(m) for m in maps), default=1)
    for v, m in zip(vectors, maps):
        shifted.append([i + offset if i >= 0 else -1 for i in m] + [-1] * (width - len(m)))
        offset += v.shape[1]
    return torch.cat(list(vectors), dim=1), torch.tensor(shifted or [[-1]], dtype=torch.long)


def _find_slots(injector):
    """The model's pre-hook consumer: locate the batch's slots once, before layer 0 runs (in a packed batch,
    per sequence: its position_ids or the flattening collator's cu_seq_lens_q say where each begins)."""
    def consume(args, kwargs, special_tokens_mask):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise PastaError("PASTA needs input_ids to find the special tokens (inputs_embeds alone is not enough)")
        mask = kwargs.get("attention_mask")
        starts = sequence_starts(input_ids.shape, kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q"), mask)
        injector.locate(input_ids, mask, special_tokens_mask, starts)
    return consume


def _layer_pre_hook(injector, layer):
    def hook(module, args, kwargs):
        if args:
            return (injector.inject(layer, args[0]), *args[1:]), kwargs
        kwargs["hidden_states"] = injector.inject(layer, kwargs["hidden_states"])
        return args, kwargs
    return hook


def add_pasta(model, tokenizer, variant="full", pair=True, dropout=None, init_std=None) -> PastaInjector:
    """Freeze `model`'s backbone and give it PASTA vectors; returns the injector (also `model.pasta`).

    `pair`: whether the task feeds sentence pairs (3 BERT slots) or single sentences (2).
    `dropout`: on the added vectors, as in the official code; None takes hidden_dropout_prob.
    `init_std`: the vectors start as normal(0, init_std); None takes initializer_range, as in the official
    code (its vectors are an nn.Embedding that from_pretrained initialises); 0 starts at the frozen model.
    """
    num_slots = count_slots(tokenizer, pair)
    layers = encoder_layers(model)
    if dropout is None:
        dropout = getattr(model.config, "hidden_dropout_prob", 0.0)
    if init_std is None:
        init_std = getattr(model.config, "initializer_range", 0.02)
    injector = PastaInjector(len(layers), num_slots, model.config.hidden_size, variant,
                             template_token_ids(tokenizer), dropout, init_std)
    freeze_backbone(model)
    model.pasta = injector
    if injector.num_vectors == 0:  # classifier_only: nothing to inject, the mask is still accepted
        accept_special_tokens_mask(model)
        return injector
    attach(model, injector, layers)
    return injector


def attach(model, injector, layers=None) -> None:
    """Hook `injector` onto `model`: find the batch's slots before layer 0, add the vectors at every
    layer's input. The injector needs `locate(input_ids, attention_mask, special_tokens_mask, starts)` and
    `inject(layer, hidden)`; PastaInjector for one task, the mixed-task injector for many."""
    accept_special_tokens_mask(model, _find_slots(injector))
    for i, layer in enumerate(encoder_layers(model) if layers is None else layers):
        layer.register_forward_pre_hook(_layer_pre_hook(injector, i), with_kwargs=True)


# ---------------------------------------------------------------------------------------- the method's home

@dataclass
class PastaSettings(MethodSettings):
    """PASTA: one trainable vector per special-token slot per layer, added at every layer's input.
    `method=classifier_only` is the classifier_only variant with init_std 0: the frozen backbone and a
    trained head, under the baseline's name."""

    variant: str = "full"         # full | cls_only | sep_only | shared | classifier_only (PAPER.md, Table 4)
    dropout: float | None = None  # on the added vectors; null = the backbone's hidden_dropout_prob (official code)
    # null: normal(0, the backbone's initializer_range), the authors' init; 0: start at the frozen model. The
    # recipe's common value (paper.yaml recipes.pasta; no task or backbone entry of a recipe holds a method setting)
    init_std: float | None = recipe("pasta").get("init_std")

    def check(self) -> None:
        # dropout's and init_std's ranges: config_checks.RANGES, shared by every method with such a setting
        if self.variant not in VARIANTS:
            raise PastaError(f"unknown method.variant '{self.variant}': choose one of {', '.join(VARIANTS)}")


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


def apply_pasta(model, tokenizer, settings: PastaSettings, pair: bool) -> nn.Module:
    add_pasta(model, tokenizer, settings.variant, pair=pair, dropout=settings.dropout, init_std=settings.init_std)
    return model


PASTA = register_method(Pasta("pasta", apply_pasta, ("variant", "dropout"), schema=PastaSettings,
                              configs={"classifier_only": {"variant": "classifier_only", "init_std": 0.0}}))
