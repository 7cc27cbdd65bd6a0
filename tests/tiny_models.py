"""Tiny randomly initialised encoders and tokenizers, built from configs in the tests (no downloads)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DebertaV2ForTokenClassification,
    DebertaV2Tokenizer,
    ElectraConfig,
    ElectraForSequenceClassification,
    ModernBertConfig,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
    PreTrainedTokenizerFast,
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


def deberta_v3_tokenizer(**kwargs):
    """DeBERTa-v3's layout: a SentencePiece (Unigram) vocabulary with [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3 and
    the template [CLS] A [SEP] B [SEP], built from a word list (the real one is a 128k-piece spm file)."""
    pieces = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0), ("[MASK]", 0.0)]
    pieces += [("\u2581" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz[]<>/#,."]
    return DebertaV2Tokenizer(vocab=pieces, unk_id=3, split_special_tokens=True, **kwargs)


def modernbert_tokenizer(**kwargs):
    """ModernBERT's layout: byte-level BPE (here with no merges) whose template is [CLS] A [SEP] B [SEP],
    special tokens at the end of the vocabulary, and no token_type_ids (its model_input_names)."""
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"):
        vocab[t] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]", split_special_tokens=True,
                                   model_input_names=["input_ids", "attention_mask"], **kwargs)


def tiny(family: str, num_labels: int = 2, token: bool = False, seed: int = 0):
    """(model, tokenizer) for family in FAMILIES."""
    torch.manual_seed(seed)
    if family == "modernbert":
        tok = modernbert_tokenizer()
        cfg = ModernBertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=64, local_attention=160, pad_token_id=tok.pad_token_id,
                               cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                               bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, num_labels=num_labels)
        cls = ModernBertForTokenClassification if token else ModernBertForSequenceClassification
        return cls(cfg).eval(), tok
    if family == "deberta-v3":  # relative attention only, as microsoft/deberta-v3-base is configured
        tok = deberta_v3_tokenizer()
        cfg = DebertaV2Config(vocab_size=len(tok), num_labels=num_labels, pooler_hidden_size=32, pooler_dropout=0.0,
                              relative_attention=True, position_buckets=16, max_relative_positions=-1,
                              pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True,
                              position_biased_input=False, type_vocab_size=0, **SMALL)
        cls = DebertaV2ForTokenClassification if token else DebertaV2ForSequenceClassification
        return cls(cfg).eval(), tok
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


FAMILIES = ("bert", "roberta", "electra", "deberta", "deberta-v3", "modernbert")


def bert_large_on_meta(apply):
    """apply(model) on bert-large-cased's architecture (2 labels), built on the meta device: counts, no weights."""
    config = BertConfig(vocab_size=28996, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096, num_labels=2)
    with torch.device("meta"):
        return apply(BertForSequenceClassification(config))
