"""Tokenization and batching of a loaded task.

`encode` tokenizes every split (truncated, not padded: batches are padded to their longest row by
`Collator`, which wastes less compute than padding to max_length). The tokenizer is called with
the same arguments as by the loader this replaced, so the same rows give byte-identical input_ids.
For token classification only a word's first sub-word carries its tag (the others -100, as
conlleval scores words), and the positions of those first sub-words are recorded on the task,
so per-token predictions can be turned back into one tag per word for prediction files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithFlattening, DataCollatorWithPadding

from pasta_cli.data.spec import Kind
from pasta_cli.data.task import TaskData
from pasta_cli.errors import PastaError

# Keys of an encoded row that go to the model; everything else (idx, ...) stays out of a batch.
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask", "labels")
IGNORE = -100  # label of positions that are not scored (special tokens, later sub-words, padding)
# per-token keys the flattening collator leaves out, concatenated the same way (token_type_ids: BERT-style pairs)
PACKED_EXTRA = ("special_tokens_mask", "token_type_ids")


def encode(task: TaskData, tokenizer, max_length: int = 128) -> dict[str, Any]:
    """split -> `datasets.Dataset` with input_ids, attention_mask, token_type_ids (when the
    tokenizer makes them), special_tokens_mask, labels and idx."""
    if max_length < 3:
        raise PastaError(f"max_length={max_length} leaves no room for text between the special tokens")
    token_level = task.kind == Kind.token_classification
    text = ["text_a", "text_b"] if task.pair else ["text_a"]

    def fn(batch: dict[str, list]) -> dict[str, list]:
        if token_level:
            enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length,
                            return_special_tokens_mask=True)
            labels, starts = zip(*(_first_subwords(enc, i, tags) for i, tags in enumerate(batch["label"])))
        else:
            enc = tokenizer(*[batch[c] for c in text], truncation=True, max_length=max_length,
                            return_special_tokens_mask=True)
            labels = batch["label"]
        out = {k: v for k, v in enc.items() if k in MODEL_KEYS}
        out["labels"] = list(labels)
        out["idx"] = batch["idx"]
        if token_level:
            out["_word_starts"] = list(starts)
        return out

    encoded = {}
    for split, ds in task.splits.items():
        enc = ds.map(fn, batched=True, remove_columns=ds.column_names,
                     new_fingerprint=_fingerprint(ds, tokenizer, max_length), desc=f"tokenizing {task.name} {split}")
        if token_level:
            task.word_starts[split] = ([int(i) for i in enc["idx"]], [list(r) for r in enc["_word_starts"]])
            enc = enc.remove_columns("_word_starts")
        encoded[split] = enc
    return encoded


def _first_subwords(enc, row: int, tags: list[int]) -> tuple[list[int], list[int]]:
    """(labels per token, positions of each word's first sub-word) of one sentence."""
    try:
        word_ids = enc.word_ids(row)
    except (ValueError, AttributeError):
        raise PastaError("token classification needs a fast (tokenizers-backed) tokenizer, one with word_ids") from None
    labels, first, previous = [], [], None
    for pos, w in enumerate(word_ids):
        if w is not None and w != previous:
            first.append(pos)
        # special token, later sub-word, or a word without a tag (an unlabelled test sentence)
        labels.append(IGNORE if w is None or w == previous or w >= len(tags) else int(tags[w]))
        previous = w
    return labels, first


def _fingerprint(ds, tokenizer, max_length: int) -> str:
    """A cache key for datasets' map; hashing the tokenizer itself is slow and not always stable."""
    key = "|".join([str(getattr(ds, "_fingerprint", "")), type(tokenizer).__name__,
                    str(getattr(tokenizer, "name_or_path", "")), str(len(tokenizer)), str(max_length),
                    "pasta-encode-v1"])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Collator:
    """Pads a list of encoded rows to the longest one: tensors input_ids, attention_mask,
    token_type_ids, special_tokens_mask (padded with 1: padding is no text) and labels (padded with
    -100 for token classification; float for regression). idx and other columns stay out."""

    def __init__(self, task: TaskData, tokenizer):
        if tokenizer.pad_token_id is None:
            raise PastaError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no pad token; set one "
                             f"before batching")
        self.regression = task.kind == Kind.regression
        if task.kind == Kind.token_classification:
            self.inner = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE, return_tensors="pt")
        else:
            self.inner = DataCollatorWithPadding(tokenizer, return_tensors="pt")

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, Any]:
        batch = dict(self.inner([{k: v for k, v in f.items() if k in MODEL_KEYS} for f in features]))
        if "labels" in batch:
            labels = torch.as_tensor(batch["labels"])
            batch["labels"] = labels.float() if self.regression else labels.long()
        return batch


class PackingCollator:
    """Padding-free batches (trainer.packing=true): every row of the batch concatenated into one row by
    transformers' `DataCollatorWithFlattening`, with `position_ids` restarting at `first_position` for each
    sequence and the boundaries `cu_seq_lens_q/k`, `max_length_q/k` that a varlen attention kernel (flash
    attention) reads to keep the sequences apart; PASTA numbers its slots per sequence from the same
    boundaries. Labels are per token (token classification: the first token of each sequence is a special
    token, -100 either way); special_tokens_mask and token_type_ids are concatenated alongside."""

    def __init__(self, first_position: int = 0):
        self.inner = DataCollatorWithFlattening(return_position_ids=True, return_flash_attn_kwargs=True,
                                                separator_id=IGNORE, position_ids_start=first_position)

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, Any]:
        batch = dict(self.inner([{k: f[k] for k in ("input_ids", "labels") if k in f} for f in features]))
        for key in PACKED_EXTRA:
            if key in features[0]:
                batch[key] = torch.tensor([[v for f in features for v in f[key]]], dtype=torch.long)
        return batch
