"""The PASTA core against independent computations: hand-built slot tables, hand-added vectors, known counts."""

import copy

import pytest
import torch
from tiny_models import FAMILIES, bert_tokenizer, deberta_v3_tokenizer, modernbert_tokenizer, roberta_tokenizer, tiny
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    GPT2Tokenizer,
    ModernBertConfig,
    ModernBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from pasta_cli import PastaError, add_pasta, parameter_counts
from pasta_cli.modeling import encoder_layers
from pasta_cli.pasta import template_token_ids

PAIRS = [  # padding (different lengths), [UNK] (unknown words), a literal "[SEP]" / "</s>" typed in text
    ("the man eats food", "the dog sees a cat"),
    ("hello [SEP] world </s> zebra", "big"),
    ("a", "the red cat and the blue dog was not small and the woman is big"),
]


def batch(tok, pairs=PAIRS, max_length=None):
    a, b = zip(*pairs)
    return tok(list(a), list(b), padding=True, truncation=max_length is not None, max_length=max_length,
               return_tensors="pt", return_special_tokens_mask=True)


def hand_slots(enc, num_slots):
    """Slot index of every position by a plain loop: the p-th template token of each row (padding excluded)."""
    table = []
    for special, attend in zip(enc["special_tokens_mask"].tolist(), enc["attention_mask"].tolist()):
        row, p = [], 0
        for s, a in zip(special, attend):
            if s and a and p < num_slots:
                row.append(p)
                p += 1
            else:
                row.append(-1)
        table.append(row)
    return table


def literal_is_a_template_id(tok):
    """Whether "[SEP]" / "</s>" typed in text comes out as the template's own id (with split_special_tokens)."""
    typed = tok("hello [SEP] world </s>", add_special_tokens=False)["input_ids"]
    return bool(set(typed) & set(template_token_ids(tok)))


def model_inputs(enc, with_mask=True):
    return {k: v for k, v in enc.items() if with_mask or k != "special_tokens_mask"}


def capture_layer_inputs(model, store):
    for i, layer in enumerate(encoder_layers(model)):
        def hook(module, args, kwargs, i=i):
            store[i] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        layer.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_vectors_give_the_frozen_models_outputs(family):
    model, tok = tiny(family)
    plain = copy.deepcopy(model)
    add_pasta(model, tok, "full", pair=True, dropout=0.0, init_std=0.0)
    enc = batch(tok)
    with torch.no_grad():
        assert torch.equal(model(**model_inputs(enc)).logits, plain(**model_inputs(enc, False)).logits)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("max_length", [None, 9])
@pytest.mark.parametrize("with_mask", [True, False])
def test_vectors_land_at_exactly_the_slots_of_every_layer(family, max_length, with_mask):
    model, tok = tiny(family)
    before, after = {}, {}
    capture_layer_inputs(model, before)          # registered first: sees the input before PASTA
    injector = add_pasta(model, tok, "full", pair=True, dropout=0.0)
    capture_layer_inputs(model, after)           # registered last: sees what the layer receives
    torch.nn.init.normal_(injector.vectors)
    pairs = PAIRS
    if not with_mask and literal_is_a_template_id(tok):
        # DeBERTa-v3's SentencePiece vocabulary holds [SEP] as a piece: split_special_tokens cannot keep a typed
        # "[SEP]" from becoming the template's id, so only the special_tokens_mask (which the collator always
        # sends) tells it from a slot; without it the row is refused, never numbered wrongly
        with pytest.raises(PastaError, match="row 1 has 4 .* return_special_tokens_mask=True"):
            model(**model_inputs(batch(tok, max_length=max_length), with_mask))
        pairs = [p for p in PAIRS if "[SEP]" not in p[0]]
    enc = batch(tok, pairs, max_length=max_length)
    if max_length:
        assert enc["input_ids"].shape[1] == max_length  # truncation happened
    with torch.no_grad():
        model(**model_inputs(enc, with_mask))
    slots = hand_slots(enc, injector.num_slots)
    assert injector.num_slots == (4 if family == "roberta" else 3)
    for layer in range(model.config.num_hidden_layers):
        expected = torch.zeros_like(before[layer])
        for r, row in enumerate(slots):
            for t, p in enumerate(row):
                if p >= 0:
                    expected[r, t] = injector.vectors[layer, p]
        assert torch.equal(after[layer], before[layer] + expected), f"layer {layer}"
    # every row of a pair input got all P slots, and no slot sits on a padding position
    assert all(sorted(p for p in row if p >= 0) == list(range(injector.num_slots)) for row in slots)


@pytest.mark.parametrize("family", ["bert", "roberta", "deberta-v3", "modernbert"])
def test_output_equals_a_hand_injected_forward(family):
    """Same logits as the plain model with m_i^l added by a naive per-token loop at each layer input."""
    model, tok = tiny(family)
    plain = copy.deepcopy(model)
    injector = add_pasta(model, tok, "full", pair=True, dropout=0.0)
    torch.nn.init.normal_(injector.vectors, std=0.5)
    enc = batch(tok)
    slots = hand_slots(enc, injector.num_slots)
    for l, layer in enumerate(encoder_layers(plain)):
        def add(module, args, kwargs, l=l):
            h = args[0].clone()
            for r, row in enumerate(slots):
                for t, p in enumerate(row):
                    if p >= 0:
                        h[r, t] = h[r, t] + injector.vectors[l, p]
            return (h, *args[1:]), kwargs
        layer.register_forward_pre_hook(add, with_kwargs=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**model_inputs(enc)).logits, plain(**model_inputs(enc, False)).logits,
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant,expected", [
    ("full", [0, 1, 2]), ("cls_only", [0, -1, -1]), ("sep_only", [-1, 0, 1]), ("shared", [0, 0, 0]),
])
def test_variants_serve_the_slots_the_paper_says(variant, expected):
    model, tok = tiny("bert")
    before, after = {}, {}
    capture_layer_inputs(model, before)
    injector = add_pasta(model, tok, variant, pair=True, dropout=0.0)
    capture_layer_inputs(model, after)
    assert injector.num_vectors == max(expected) + 1
    torch.nn.init.normal_(injector.vectors)
    enc = batch(tok)
    with torch.no_grad():
        model(**model_inputs(enc))
    slots = hand_slots(enc, 3)
    for r, row in enumerate(slots):
        for t, p in enumerate(row):
            want = injector.vectors[1, expected[p]] if p >= 0 and expected[p] >= 0 else 0.0
            assert torch.equal(after[1][r, t], before[1][r, t] + want)


def test_classifier_only_trains_the_head_alone():
    model, tok = tiny("bert")
    plain = copy.deepcopy(model)
    add_pasta(model, tok, "classifier_only", pair=True)
    counts = parameter_counts(model)
    assert counts["method"] == 0 and counts["trainable"] == 32 * 2 + 2
    # its (L, 0, H) vectors never require grad: DDP would wait for their gradient at step 2
    assert model.pasta.vectors.shape == (3, 0, 32) and not model.pasta.vectors.requires_grad
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["classifier.weight", "classifier.bias"]
    enc = batch(tok)
    with torch.no_grad():
        assert torch.equal(model(**model_inputs(enc)).logits, plain(**model_inputs(enc, False)).logits)


def test_single_sentences_have_two_slots_and_bert_large_counts_match_the_paper():
    tok = bert_tokenizer()
    with torch.device("meta"):
        large = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
        pair_model = BertForSequenceClassification(large)
        single_model = BertForSequenceClassification(large)
        add_pasta(pair_model, tok, "full", pair=True)
        add_pasta(single_model, tok, "full", pair=False)
    pair, single = parameter_counts(pair_model), parameter_counts(single_model)
    assert pair["method"] == 24 * 3 * 1024 == 73_728
    assert single["method"] == 24 * 2 * 1024 == 49_152
    assert pair["head"] == 1024 * 2 + 2  # BERT's pooler is pretrained and stays frozen
    assert pair["trainable"] == 73_728 + 2050
    assert pair["method_pct"] == pytest.approx(100 * 73_728 / pair["backbone"])
    assert 0.020 < pair["method_pct"] < 0.024 and 0.013 < single["method_pct"] < 0.016  # paper: 0.022% / 0.015%


def test_roberta_large_counts_four_pair_slots_and_a_trainable_head():
    tok = roberta_tokenizer()
    with torch.device("meta"):
        cfg = RobertaConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                            intermediate_size=4096, vocab_size=50265)
        model = RobertaForSequenceClassification(cfg)
        add_pasta(model, tok, "full", pair=True)
    counts = parameter_counts(model)
    assert counts["method"] == 24 * 4 * 1024
    assert counts["head"] == (1024 * 1024 + 1024) + (1024 * 2 + 2)  # classifier.dense + out_proj


# the hub configs of model=modernbert-base|large and deberta-v3-base|large: (layers, hidden, heads, ffn, vocab)
TODAYS_ENCODERS = {
    "modernbert-base": ("modernbert", 22, 768, 12, 1152, 50368),
    "modernbert-large": ("modernbert", 28, 1024, 16, 2624, 50368),
    "deberta-v3-base": ("deberta-v3", 12, 768, 12, 3072, 128100),
    "deberta-v3-large": ("deberta-v3", 24, 1024, 16, 4096, 128100),
}


@pytest.mark.parametrize("name", TODAYS_ENCODERS)
def test_todays_encoders_train_L_x_P_x_d_vectors_and_their_head(name):
    family, layers, d, heads, ffn, vocab = TODAYS_ENCODERS[name]
    size = dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
                vocab_size=vocab)
    if family == "modernbert":
        tok = modernbert_tokenizer()
        make = lambda: ModernBertForSequenceClassification(ModernBertConfig(**size))  # noqa: E731
        # ModernBERT's head: dense (no bias), LayerNorm (no bias), classifier
        head = d * d + d + (d * 2 + 2)
    else:
        tok = deberta_v3_tokenizer()
        make = lambda: DebertaV2ForSequenceClassification(DebertaV2Config(  # noqa: E731
            **size, relative_attention=True, position_buckets=256, max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
            type_vocab_size=0, pooler_hidden_size=d))
        head = (d * d + d) + (d * 2 + 2)  # ContextPooler's dense, classifier
    with torch.device("meta"):
        pair_model, single_model = make(), make()
        add_pasta(pair_model, tok, "full", pair=True)
        add_pasta(single_model, tok, "full", pair=False)
    pair, single = parameter_counts(pair_model), parameter_counts(single_model)
    assert pair["method"] == layers * 3 * d and single["method"] == layers * 2 * d  # [CLS] A [SEP] (B [SEP])
    assert pair["head"] == single["head"] == head
    assert pair["trainable"] == layers * 3 * d + head


@pytest.mark.parametrize("family", FAMILIES)
def test_optimizer_steps_change_only_vectors_and_head(family):
    model, tok = tiny(family)
    frozen = {n: p.detach().clone() for n, p in model.base_model.named_parameters()}
    injector = add_pasta(model, tok, "full", pair=True)
    head_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and n != "pasta.vectors"}
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    enc = batch(tok)
    for _ in range(3):
        loss = model(**model_inputs(enc), labels=torch.tensor([0, 1, 1])).loss
        loss.backward()
        assert all(p.grad is None for p in model.base_model.parameters())  # no weight gradient computed at all
        opt.step()
        opt.zero_grad()
    for n, p in model.base_model.named_parameters():
        assert torch.equal(p, frozen[n]), n
    assert injector.vectors.abs().sum() > 0
    assert all(not torch.equal(p, head_before[n]) for n, p in model.named_parameters() if n in head_before)


def test_token_classification_and_regression_heads():
    model, tok = tiny("bert", num_labels=5, token=True)
    add_pasta(model, tok, "full", pair=False)
    enc = tok([["the", "man", "eats"], ["a", "dog"]], is_split_into_words=True, padding=True,
              return_tensors="pt", return_special_tokens_mask=True)
    out = model(**enc)
    assert out.logits.shape == (2, enc["input_ids"].shape[1], 5)
    assert parameter_counts(model)["head"] == 32 * 5 + 5

    model, tok = tiny("bert", num_labels=1)
    model.config.problem_type = "regression"
    add_pasta(model, tok, "full", pair=True)
    loss = model(**model_inputs(batch(tok)), labels=torch.tensor([0.5, 1.0, 4.0])).loss
    loss.backward()
    assert model.pasta.vectors.grad is not None


def test_autocast_and_gradient_checkpointing_give_gradients():
    model, tok = tiny("bert")
    injector = add_pasta(model, tok, "full", pair=True, dropout=0.0)
    torch.nn.init.normal_(injector.vectors, std=0.1)
    model.train()
    enc, labels = batch(tok), torch.tensor([0, 1, 1])
    model(**model_inputs(enc), labels=labels).loss.backward()
    reference = injector.vectors.grad.clone()
    injector.vectors.grad = None

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model(**model_inputs(enc), labels=labels).loss.backward()
    torch.testing.assert_close(injector.vectors.grad, reference)
    injector.vectors.grad = None

    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**model_inputs(enc), labels=labels).loss
    loss.backward()
    assert injector.vectors.grad.dtype == torch.float32 and torch.isfinite(injector.vectors.grad).all()
    torch.testing.assert_close(injector.vectors.grad, reference, rtol=0.1, atol=0.05)


def test_a_tokenizer_without_special_tokens_is_refused():
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    gpt2 = GPT2Tokenizer(vocab=vocab, merges=[])
    model, _ = tiny("bert")
    with pytest.raises(PastaError, match="inserts no special tokens"):
        add_pasta(model, gpt2, "full", pair=False)


def test_unknown_variant_lists_the_choices():
    model, tok = tiny("bert")
    with pytest.raises(PastaError, match="full, cls_only, sep_only, shared, classifier_only"):
        add_pasta(model, tok, "both", pair=True)


def test_ddp_all_reduces_only_the_trainable_parameters():
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.testing._internal.distributed.fake_pg import FakeStore

    # torch's communication-free "fake" process group: gloo, even with one rank and an in-memory store, hung
    # rarely (once under CI, for the whole 90 minutes); what is checked here is what DDP would send, not gloo
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        model, tok = tiny("bert")
        add_pasta(model, tok, "full", pair=True)
        model.train()
        ddp = DDP(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert ddp._get_ddp_logging_data()["total_parameter_size_bytes"] == 4 * parameter_counts(model)["trainable"]
        sent = []

        def record(state, bucket):  # a comm hook in place of the all-reduce: it sees every bucket DDP would send
            sent.extend(bucket.parameters())
            done = torch.futures.Future()
            done.set_result(bucket.buffer())
            return done

        ddp.register_comm_hook(None, record)
        ddp(**model_inputs(batch(tok)), labels=torch.tensor([0, 1, 1])).loss.backward()
        assert {id(p) for p in sent} == {id(p) for p in trainable} and len(sent) == len(trainable)
        assert model.pasta.vectors.grad is not None
        assert all(p.grad is None for p in model.base_model.parameters())
    finally:
        dist.destroy_process_group()
