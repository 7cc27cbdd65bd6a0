"""Packed (padding-free) batches: PASTA numbers its slots per sequence, so a packed row's slots equal those of
the same sequences padded, and the same adapter gives the same logits packed and padded.

Flash attention's varlen kernel (what keeps packed sequences apart on a GPU) does not run on CPU, so the
model-level tests register a CPU stand-in with the same contract: attention only within each sequence the
collator's boundaries (cu_seq_lens_q) delimit. The GPU end-to-end check is a separate, GPU-only run.
"""

import copy
import re

import pytest
import torch
from tiny_models import FAMILIES, tiny
from transformers import AttentionInterface

from pasta_cli import PastaError, add_pasta
from pasta_cli.backbones import check_packing
from pasta_cli.config import check_config, compose
from pasta_cli.data.encode import PackingCollator
from pasta_cli.modeling import encoder_layers
from pasta_cli.pasta import check_input_form, number_slots, sequence_starts, specials_per_sequence

PAIRS = [("the man eats food", "the dog sees a cat"), ("hello [SEP] world </s> zebra", "big"),
         ("a", "the red cat and the blue dog"), ("small", "was")]
VARLEN = "cpu_varlen_sdpa"


def varlen_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, cu_seq_lens_q=None, **kwargs):
    """flash_attn_varlen's contract on CPU: each packed sequence attends to itself only (tiny inputs: the
    block-diagonal mask is materialised; ModernBERT's local window is wider than any test sequence)."""
    assert attention_mask is None and cu_seq_lens_q is not None  # a packed batch, boundaries from the collator
    first = torch.zeros(query.shape[2], dtype=torch.long)
    first[cu_seq_lens_q[1:-1].long()] = 1
    sequence = first.cumsum(0)
    same = sequence[:, None] == sequence[None, :]
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=same, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(VARLEN, varlen_sdpa)


def encoded_rows(tok, pair=True, labels=False):
    a, b = zip(*PAIRS)
    enc = tok(list(a), list(b) if pair else None, return_special_tokens_mask=True)
    rows = [{k: enc[k][i] for k in enc} for i in range(len(PAIRS))]
    for r in rows:
        if labels:  # token classification: special tokens are not scored
            r["labels"] = [-100 if s else i % 2 for i, s in enumerate(r["special_tokens_mask"])]
    return rows


def hand_slots_per_sequence(rows):
    """Each sequence's slot numbers by a plain loop: the p-th special token of the sequence is slot p."""
    out = []
    for r in rows:
        p, row = 0, []
        for s in r["special_tokens_mask"]:
            row.append(p if s else -1)
            p += bool(s)
        out.append(row)
    return out


def split(packed_row, rows):
    """A packed row's values back into one list per sequence."""
    cuts, start = [], 0
    for r in rows:
        cuts.append(packed_row[start:start + len(r["input_ids"])])
        start += len(r["input_ids"])
    return cuts


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pair", [True, False])
@pytest.mark.parametrize("source", ["position_ids", "cu_seq_lens"])
def test_a_packed_rows_slots_equal_the_padded_sequences_slots(family, pair, source):
    _, tok = tiny(family)
    rows = encoded_rows(tok, pair)
    packed = PackingCollator()(rows)
    is_special = packed["special_tokens_mask"].bool()
    starts = sequence_starts(is_special.shape, packed["position_ids"] if source == "position_ids" else None,
                             packed["cu_seq_lens_q"] if source == "cu_seq_lens" else None)
    padded = tok.pad([{k: r[k] for k in ("input_ids", "attention_mask", "special_tokens_mask")} for r in rows],
                     return_tensors="pt")
    by_row = number_slots(padded["special_tokens_mask"].bool() & padded["attention_mask"].bool())
    by_sequence = split(number_slots(is_special, starts)[0].tolist(), rows)
    hand = hand_slots_per_sequence(rows)
    assert by_sequence == hand
    assert by_sequence == [by_row[i, :len(r["input_ids"])].tolist() for i, r in enumerate(rows)]
    per_input = tok.num_special_tokens_to_add(pair=pair)
    assert specials_per_sequence(is_special, starts).tolist() == [per_input] * len(rows)
    # without the boundaries the row is one sequence: slots run on past P (what PASTA would get wrong)
    assert number_slots(is_special)[0].max() == per_input * len(rows) - 1


def test_a_padded_batch_with_position_ids_numbers_as_without_them():
    _, tok = tiny("bert")
    a, b = zip(*PAIRS)
    enc = tok(list(a), list(b), padding=True, return_tensors="pt", return_special_tokens_mask=True)
    positions = torch.arange(enc["input_ids"].shape[1]).expand_as(enc["input_ids"])
    real = enc["special_tokens_mask"].bool() & enc["attention_mask"].bool()
    starts = sequence_starts(real.shape, positions, None, enc["attention_mask"])
    assert starts.sum(dim=1).tolist() == [1] * len(PAIRS)
    assert torch.equal(number_slots(real, starts), number_slots(real))


def test_a_packed_sequence_of_the_wrong_form_is_named():
    _, tok = tiny("bert")
    rows = encoded_rows(tok, pair=True)
    single = tok("just one sentence", return_special_tokens_mask=True)
    packed = PackingCollator()([rows[0], {k: single[k] for k in single}, rows[1]])
    is_special = packed["special_tokens_mask"].bool()
    starts = sequence_starts(is_special.shape, packed["position_ids"])
    with pytest.raises(PastaError, match="but packed sequence 1 has 2 .a single sentence"):
        check_input_form(specials_per_sequence(is_special, starts), 3, "packed sequence")


def capture_layer_inputs(model, store):
    for i, layer in enumerate(encoder_layers(model)):
        def hook(module, args, kwargs, i=i):
            store[i] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        layer.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("family", ["bert", "modernbert"])  # families whose attention has a varlen (flash) path
def test_the_same_adapter_gives_the_same_logits_packed_and_padded(family):
    model, tok = tiny(family, token=True)
    plain = copy.deepcopy(model)
    before, after = {}, {}
    capture_layer_inputs(model, before)
    injector = add_pasta(model, tok, "full", pair=True, dropout=0.0)
    capture_layer_inputs(model, after)
    torch.nn.init.normal_(injector.vectors, std=0.5)
    rows = encoded_rows(tok, pair=True, labels=True)

    padded = tok.pad([{k: v for k, v in r.items() if k != "labels"} for r in rows], return_tensors="pt")
    padded["labels"] = torch.tensor([r["labels"] + [-100] * (padded["input_ids"].shape[1] - len(r["labels"]))
                                     for r in rows])
    packed = PackingCollator()(rows)
    with torch.no_grad():
        want = model(**padded)
        model.set_attn_implementation(VARLEN)
        got = model(**packed)
        frozen = plain.set_attn_implementation(VARLEN) or plain(**{k: v for k, v in packed.items()
                                                                     if k != "special_tokens_mask"})
    for i, logits in enumerate(split(got.logits[0], rows)):
        torch.testing.assert_close(logits, want.logits[i, :len(rows[i]["input_ids"])], rtol=0, atol=2e-5)
    torch.testing.assert_close(got.loss, want.loss, rtol=0, atol=2e-5)  # the same labelled tokens, one mean

    # and at every layer the vectors sit exactly on each packed sequence's own slots
    slots = sum(hand_slots_per_sequence(rows), [])
    for layer in range(model.config.num_hidden_layers):
        expected = torch.zeros_like(before[layer])
        for t, p in enumerate(slots):
            if p >= 0:
                expected[0, t] = injector.vectors[layer, p]
        assert torch.equal(after[layer], before[layer] + expected), f"layer {layer}"
    assert not torch.allclose(got.logits, frozen.logits)  # the vectors changed something


@pytest.mark.parametrize("overrides,cuda,message", [
    (["task=sst2"], True, "serves token classification only: a classification head reads position 0"),
    (["trainer.pad_to_max_length=true"], True, "contradict each other"),
    ([], False, "needs flash attention, which runs on a CUDA GPU: use trainer.packing=false on CPU"),
    ([], True, "model.attn_implementation=auto: that attention lets packed sequences attend to each other; set "
               "model.attn_implementation=flash_attention_2"),
    (["model.attn_implementation=eager"], True, "set model.attn_implementation=flash_attention_2"),
    (["model.attn_implementation=flash_attention_2"], True, None),
])
def test_packing_is_offered_only_where_sequences_stay_apart(overrides, cuda, message):
    cfg = compose(["task=conll2003", "model=modernbert-base", "trainer.packing=true", *overrides])
    if message is None:
        check_config(cfg, cuda_available=True)
        return
    with pytest.raises(PastaError, match=re.escape(message)):
        check_config(cfg, cuda_available=cuda)


@pytest.mark.parametrize("family,refused", [("modernbert", False), ("bert", False), ("deberta-v3", True)])
def test_packing_is_refused_for_a_family_without_a_varlen_attention(family, refused):
    config = tiny(family, token=True)[0].config
    if not refused:
        check_packing(config, family)
        return
    with pytest.raises(PastaError, match="has no flash-attention path in transformers.*use trainer.packing=false"):
        check_packing(config, "microsoft/deberta-v3-base")
