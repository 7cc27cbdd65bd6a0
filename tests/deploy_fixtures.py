"""PASTA adapters of every head and variant on one tiny saved backbone, and their single-task references.

The reference for an item is what `load_adapter` (the one-task model the runner saves and reloads)
gives for that item alone, in a batch of one: no padding, no other task near it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import tiny

from pasta_cli import add_pasta, load_adapter, save_adapter
from pasta_cli.backbones import load_model, load_tokenizer

# name -> (pair, head, variant, labels); together: pair and single, all three heads, every variant kind
ADAPTERS = {
    "rte": (True, "classification", "full", ["entailment", "not_entailment"]),
    "stsb": (True, "regression", "sep_only", None),
    "sst2": (False, "classification", "shared", ["0", "1"]),
    "ner": (False, "token_classification", "full", ["O", "B-PER", "I-PER"]),
    "cola": (False, "classification", "cls_only", ["unacceptable", "acceptable"]),
    "plain": (True, "classification", "classifier_only", ["no", "yes", "maybe"]),
}

ITEMS = [
    {"task": "rte", "text": ["the man eats food", "a man eats"]},
    {"task": "sst2", "text": "a big red dog"},
    {"task": "ner", "tokens": ["the", "woman", "sees", "a", "cat", "in", "the", "park"]},
    {"task": "stsb", "text": ["hello world", "the second sentence is not the first"]},
    {"task": "cola", "text": ["the cat is blue and the dog is red and small"]},
    {"task": "plain", "text": ["a", "b"]},
    {"task": "rte", "text": ["the dog", "the dog was not a cat , the cat was a dog ."]},
    {"task": "ner", "tokens": ["hello"]},
    {"task": "sst2", "text": ["the food is big , the park is small and the dog eats"]},
    {"task": "stsb", "text": ["a", "a"]},
]


def save_backbone(folder: Path, family: str = "bert", **changes) -> str:
    """A tiny random encoder (no head) and its tokenizer, saved like a hub checkpoint."""
    model, tok = tiny(family)
    for key, value in changes.items():  # e.g. num_hidden_layers=2: another depth
        setattr(model.config, key, value)
    if "num_hidden_layers" in changes:
        layers = model.base_model.encoder.layer
        model.base_model.encoder.layer = layers[: changes["num_hidden_layers"]]
    model.base_model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def make_adapter(folder: Path, backbone: str, pair: bool, head: str, variant: str, labels, seed: int = 0,
                 task: str | None = None) -> Path:
    """A PASTA adapter whose vectors and head are random (large enough to change every logit)."""
    torch.manual_seed(seed)
    num_labels = 1 if head == "regression" else len(labels)
    model = load_model(backbone, head, num_labels, dict(enumerate(labels)) if labels else None)
    injector = add_pasta(model, load_tokenizer(backbone), variant, pair=pair)
    with torch.no_grad():
        injector.vectors.normal_()
        for p in model.parameters():
            if p.requires_grad and p is not injector.vectors:
                p.normal_(std=0.5)
    return save_adapter(model.eval(), folder, backbone=backbone, head=head, pair=pair, task=task)


def make_all(root: Path, family: str = "bert") -> tuple[str, dict[str, Path]]:
    backbone = save_backbone(root / f"{family}-backbone", family)
    paths = {name: make_adapter(root / name, backbone, *spec, seed=i, task=name)
             for i, (name, spec) in enumerate(ADAPTERS.items())}
    return backbone, paths


def reference_logits(paths: dict[str, Path], items: list[dict]) -> list[torch.Tensor]:
    """Each item's logits from its own task's single-adapter model, alone in its batch."""
    models = {name: load_adapter(paths[name]) for name in {item["task"] for item in items}}
    out = []
    for item in items:
        model, tok = models[item["task"]]
        if "tokens" in item:
            enc = tok([item["tokens"]], is_split_into_words=True, return_tensors="pt",
                      return_special_tokens_mask=True)
        else:
            text = [item["text"]] if isinstance(item["text"], str) else item["text"]
            enc = tok(*[[t] for t in text], return_tensors="pt", return_special_tokens_mask=True)
        with torch.no_grad():
            out.append(model(**enc).logits[0])
    return out
