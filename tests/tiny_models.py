"""Tiny randomly initialised encoders and tokenizers, built from configs in the tests (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaTokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

WORDS = ("the a man woman dog cat eats sees food park big small red blue is was and not "
         "hello world sentence second first ##s ##ing [ ] sep , .").split()

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def bert_tokenizer(**kwargs):
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    return BertTokenizer(vocab=vocab, split_special_tokens=True, **kwargs)


def roberta_tokenizer(**kwargs):
    # byte-level BPE with no merges: every byte is a token, enough to exercise <s> A </s></s> B </s>
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for ch in bytes_to_unicode().values():
        vocab.setdefault(ch, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=[], split_special_tokens=True, **kwargs)


def tiny(family: str, num_labels: int = 2, token: bool = False, seed: int = 0):
    """(model, tokenizer) for family in bert | roberta | electra | deberta."""
    torch.manual_seed(seed)
    if family == "roberta":
        tok = roberta_tokenizer()
        cfg = RobertaConfig(vocab_size=len(tok), pad_token_id=1, bos_token_id=0, eos_token_id=2,
                            num_labels=num_labels, **{**SMALL, "max_position_embeddings": 80})
        return RobertaForSequenceClassification(cfg).eval(), tok
    tok = bert_tokenizer()
    if family == "bert":
        cfg = BertConfig(vocab_size=len(tok), num_labels=num_labels, **SMALL)
        cls = BertForTokenClassification if token else BertForSequenceClassification
        return cls(cfg).eval(), tok
    if family == "electra":
        cfg = ElectraConfig(vocab_size=len(tok), embedding_size=16, num_labels=num_labels, **SMALL)
        return ElectraForSequenceClassification(cfg).eval(), tok
    if family == "deberta":
        cfg = DebertaV2Config(vocab_size=len(tok), num_labels=num_labels, pooler_hidden_size=32,
                              pooler_dropout=0.0, **SMALL)
        return DebertaV2ForSequenceClassification(cfg).eval(), tok
    raise ValueError(family)


FAMILIES = ("bert", "roberta", "electra", "deberta")


def bert_large_on_meta(apply):
    """apply(model) on bert-large-cased's architecture (2 labels), built on the meta device: counts, no weights."""
    config = BertConfig(vocab_size=28996, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096, num_labels=2)
    with torch.device("meta"):
        return apply(BertForSequenceClassification(config))
