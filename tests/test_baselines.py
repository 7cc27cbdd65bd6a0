"""The baselines against independent computations: hand counts, bit-for-bit frozen weights, hand attention."""

import math

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from pasta_cli.baselines import (
    apply_adapter,
    apply_bitfit,
    apply_diff_prune,
    apply_full_ft,
    apply_lora,
    apply_loreft,
    apply_prefix,
)
from pasta_cli.modeling import parameter_counts

H, LAYERS, HEADS, INTER, VOCAB = 32, 2, 4, 64, 100
FAMILIES = ("bert", "roberta", "electra")


def make(family="bert", token=False, attn="sdpa", seed=0, num_labels=2):
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  intermediate_size=INTER, max_position_embeddings=64, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, num_labels=num_labels, attn_implementation=attn)
    if family == "bert":
        cls = BertForTokenClassification if token else BertForSequenceClassification
        return cls(BertConfig(**common)).eval()
    if family == "roberta":
        return RobertaForSequenceClassification(RobertaConfig(pad_token_id=1, **common)).eval()
    if family == "electra":
        return ElectraForSequenceClassification(ElectraConfig(embedding_size=16, **common)).eval()
    raise ValueError(family)


def batch(seed=1, token=False):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    special = torch.zeros_like(ids)
    special[:, 0] = 1
    labels = torch.randint(0, 2, (3, 9) if token else (3,), generator=g)
    return dict(input_ids=ids, attention_mask=mask, special_tokens_mask=special, labels=labels)


def train(model, steps=3, lr=1e-2, token=False):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    for s in range(steps):
        opt.zero_grad()
        model(**batch(seed=s, token=token)).loss.backward()
        opt.step()
    model.eval()


def snapshot(model):
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def changed(before, model):
    after = model.state_dict()
    return {n for n, t in before.items() if not torch.equal(t, after[n])}


def head_numel(model):
    """The task head counted by hand: the `classifier` module of every model here."""
    return sum(p.numel() for p in model.classifier.parameters())


# ------------------------------------------------------------------------------------------ full FT


@pytest.mark.parametrize("family", FAMILIES)
def test_full_ft_trains_everything(family):
    model = apply_full_ft(make(family))
    assert all(p.requires_grad for p in model.parameters())
    c = parameter_counts(model)
    total = sum(p.numel() for p in model.parameters())
    assert c["trainable"] == total
    assert c["backbone"] == sum(p.numel() for p in model.base_model.parameters())
    assert c["method"] == c["backbone"] and c["method_pct"] == 100.0
    assert c["head"] == head_numel(model)


# ------------------------------------------------------------------------------------------ BitFit


def hand_bias_count(model):
    """Every bias of the backbone, found through the modules (Linear, LayerNorm), not parameter names."""
    return sum(m.bias.numel() for m in model.base_model.modules()
               if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None)


def test_bitfit_bert_count_by_formula():
    model = apply_bitfit(make("bert"))
    # per layer: q,k,v,attention-output (4H) + 2 LayerNorms (2H) + intermediate (I) + output (H);
    # plus the embedding LayerNorm (H) and the pooler (H)
    per_layer = 4 * H + 2 * H + INTER + H
    biases = LAYERS * per_layer + H + H
    c = parameter_counts(model)
    assert c["method"] == biases == hand_bias_count(model)
    assert c["head"] == H * 2 + 2
    assert c["trainable"] == biases + H * 2 + 2


@pytest.mark.parametrize("family", FAMILIES)
def test_bitfit_changes_only_biases_and_head(family):
    model = apply_bitfit(make(family))
    c = parameter_counts(model)
    assert c["method"] == hand_bias_count(model)
    assert c["head"] == head_numel(model)
    assert c["backbone"] == sum(p.numel() for p in model.base_model.parameters())
    before = snapshot(model)
    train(model)
    diff = changed(before, model)
    prefix = model.base_model_prefix + "."
    for name in before:
        if name.startswith(prefix) and not name.endswith(".bias"):
            assert name not in diff, f"frozen backbone weight {name} changed"
    assert all(n.endswith(".bias") or not n.startswith(prefix) for n in diff)
    # the head and the biases of every kind actually trained
    assert {n for n in before if n.startswith("classifier.")} <= diff
    assert any("LayerNorm.bias" in n for n in diff)
    assert any("intermediate.dense.bias" in n for n in diff)
    assert any("attention.self.query.bias" in n for n in diff)


# ------------------------------------------------------------------------------------------ LoRA


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_count_by_hand(family):
    r = 8
    model = apply_lora(make(family), r=r, alpha=16, dropout=0.1)
    c = parameter_counts(model)
    lora = LAYERS * 2 * r * (H + H)  # query and value: A (r x in) + B (out x r)
    assert c["method"] == lora
    hf = model.get_base_model()
    assert c["head"] == sum(p.numel() for n, p in hf.classifier.named_parameters()
                            if "modules_to_save" in n)
    assert c["head"] == (H * 2 + 2 if family == "bert" else H * H + H + H * 2 + 2)
    assert c["trainable"] == lora + c["head"]
    assert c["backbone"] == sum(p.numel() for n, p in hf.base_model.named_parameters() if "lora_" not in n)
    names = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    for layer in range(LAYERS):
        for target in ("query", "value"):
            for mat in ("lora_A", "lora_B"):
                assert any(f"layer.{layer}.attention.self.{target}.{mat}" in n for n in names)


def test_lora_custom_targets_count():
    model = apply_lora(make("bert"), r=4, target_modules=("query", "key", "value", "dense"))
    # dense: attention output (H->H), intermediate (H->I), output (I->H) per layer, pooler (H->H)
    per_layer = 3 * 4 * (H + H) + 4 * (H + H) + 4 * (H + INTER) + 4 * (INTER + H)
    assert parameter_counts(model)["method"] == LAYERS * per_layer + 4 * (H + H)


def test_lora_unknown_target_is_a_clear_error():
    from pasta_cli.errors import PastaError

    with pytest.raises(PastaError, match="q_proj"):
        apply_lora(make("bert"), target_modules=["q_proj"])


@pytest.mark.parametrize("family,token", [("bert", False), ("bert", True), ("roberta", False)])
def test_lora_changes_only_lora_and_head(family, token):
    base = make(family, token=token, num_labels=2)
    reference = base(**{k: v for k, v in batch(token=token).items()
                        if k not in ("labels", "special_tokens_mask")}).logits
    model = apply_lora(base)
    expected = "PeftModelForTokenClassification" if token else "PeftModelForSequenceClassification"
    assert type(model).__name__ == expected
    # B starts at zero: before training LoRA is the identity
    assert torch.allclose(model(**batch(token=token)).logits, reference, atol=1e-6)
    before = snapshot(model)
    train(model, token=token)
    diff = changed(before, model)
    assert diff and all(("lora_A" in n or "lora_B" in n or "modules_to_save" in n) for n in diff)
    assert any("lora_A" in n for n in diff) and any("lora_B" in n for n in diff)
    assert any("modules_to_save" in n for n in diff)


# ------------------------------------------------------------------------------------------ prefix


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_count_by_hand(family):
    model = apply_prefix(make(family), length=20)
    c = parameter_counts(model)
    assert c["method"] == 2 * LAYERS * 20 * H
    assert c["head"] == head_numel(model)
    assert c["trainable"] == c["method"] + c["head"]
    assert c["backbone"] == sum(p.numel() for p in model.base_model.parameters())
    assert all(not p.requires_grad for p in model.base_model.parameters())


def hand_attention(attn, hidden, mask2d, pk, pv):
    """softmax(Q K^T / sqrt(d)) V over [prefix; tokens], padded keys excluded, by plain tensor algebra."""
    b, t, _ = hidden.shape
    d = H // HEADS
    q = (hidden @ attn.query.weight.T + attn.query.bias).view(b, t, HEADS, d)
    k = (hidden @ attn.key.weight.T + attn.key.bias).view(b, t, HEADS, d)
    v = (hidden @ attn.value.weight.T + attn.value.bias).view(b, t, HEADS, d)
    n = pk.shape[0]
    out = torch.zeros(b, t, HEADS, d)
    for row in range(b):
        keep = [j for j in range(t) if mask2d[row, j]]
        for h in range(HEADS):
            keys = torch.cat([pk.view(n, HEADS, d)[:, h], k[row, keep, h]])
            vals = torch.cat([pv.view(n, HEADS, d)[:, h], v[row, keep, h]])
            weights = torch.softmax(q[row, :, h] @ keys.T / math.sqrt(d), dim=-1)
            out[row, :, h] = weights @ vals
    return out.reshape(b, t, H)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_prefix_attention_matches_hand_computation(family, attn):
    model = apply_prefix(make(family, attn=attn), length=5, dropout=0.1)
    with torch.no_grad():  # prefixes large enough to matter
        model.prefix_encoder.keys.normal_(std=1.0)
        model.prefix_encoder.values.normal_(std=1.0)
    model.eval()  # no dropout on prefixes in eval
    enc = batch()
    layer = 1
    attn_module = model.base_model.encoder.layer[layer].attention.self
    seen = {}
    h1 = attn_module.register_forward_pre_hook(
        lambda m, a, kw: seen.__setitem__("in", a[0] if a else kw["hidden_states"]), with_kwargs=True)
    h2 = attn_module.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out[0]))
    with torch.no_grad():
        model(**enc)
    h1.remove(), h2.remove()
    expected = hand_attention(attn_module, seen["in"], enc["attention_mask"],
                              model.prefix_encoder.keys[layer], model.prefix_encoder.values[layer])
    assert torch.allclose(seen["out"], expected, atol=1e-5)


def test_prefix_respects_padding():
    """A padded row gives the same logits as the row alone; what sits in padding has no effect."""
    model = apply_prefix(make("bert"), length=4)
    with torch.no_grad():
        model.prefix_encoder.keys.normal_(std=1.0)
        model.prefix_encoder.values.normal_(std=1.0)
    enc = batch()
    del enc["labels"]
    with torch.no_grad():
        full = model(**enc).logits
        alone = model(input_ids=enc["input_ids"][2:, :3], attention_mask=enc["attention_mask"][2:, :3]).logits
        noisy = dict(enc, input_ids=enc["input_ids"].masked_fill(enc["attention_mask"] == 0, 42))
        assert torch.allclose(full[2], alone[0], atol=1e-5)
        assert torch.allclose(model(**noisy).logits, full, atol=1e-5)
        # and the prefixes are attended: changing them changes every row
        model.prefix_encoder.values.add_(1.0)
        moved = model(**enc).logits
    assert ((moved - full).abs().amax(dim=-1) > 1e-4).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_training_changes_only_prefixes_and_head(family):
    model = apply_prefix(make(family), length=6)
    before = snapshot(model)
    train(model)
    diff = changed(before, model)
    assert diff == {"prefix_encoder.keys", "prefix_encoder.values"} | {
        n for n in before if n.startswith("classifier.")}


def test_prefix_dropout_acts_on_prefixes_in_training_only():
    model = apply_prefix(make("bert"), length=8, dropout=0.5)
    enc = {k: v for k, v in batch().items() if k != "labels"}
    with torch.no_grad():
        model.eval()
        a, b = model(**enc).logits, model(**enc).logits
        assert torch.equal(a, b)
        model.train()  # backbone dropouts are 0: only the prefix dropout is random
        torch.manual_seed(0)
        c = model(**enc).logits
        torch.manual_seed(1)
        d = model(**enc).logits
    assert not torch.allclose(c, d)


# ------------------------------------------------------------------------------------------ all


METHODS = {
    "full_ft": apply_full_ft, "bitfit": apply_bitfit, "lora": apply_lora,
    "prefix": apply_prefix, "adapter": apply_adapter, "diff_prune": apply_diff_prune, "loreft": apply_loreft,
}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_ignores_special_tokens_mask(method, family):
    model = METHODS[method](make(family))
    enc = batch()
    with torch.no_grad():
        with_mask = model(**enc).logits
        without = model(**{k: v for k, v in enc.items() if k != "special_tokens_mask"}).logits
    assert torch.equal(with_mask, without)


def test_counts_cover_pasta_too():
    """One count function for every row of the comparison table, PASTA's included."""
    from tiny_models import bert_tokenizer

    from pasta_cli import add_pasta

    tok = bert_tokenizer()
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tok), hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTER, max_position_embeddings=64))
    add_pasta(model, tok, pair=True)
    c = parameter_counts(model)
    assert c["method"] == LAYERS * 3 * H  # one vector per slot ([CLS], [SEP], [SEP]) per layer
    assert c["head"] == H * 2 + 2
    assert c["backbone"] == sum(p.numel() for p in model.bert.parameters())


def test_an_empty_parameter_that_requires_grad_is_refused_before_ddp():
    """DDP waits for a gradient from every parameter that requires grad; an empty one never sends it."""
    from tiny_models import tiny

    from pasta_cli.errors import PastaError
    from pasta_cli.methods import apply_method
    from pasta_cli.modeling import check_gradients_reachable

    model, tok = tiny("bert")
    model.extra = nn.Parameter(torch.zeros(3, 0, 32))  # requires grad, as nn.Parameter does by default
    with pytest.raises(PastaError, match=r"^parameters extra require grad but are empty"):
        check_gradients_reachable(model)
    model.extra.requires_grad_(False)
    check_gradients_reachable(model)  # frozen, it is fine
    # every method goes through apply_method, which freezes what is empty whatever the method made
    model, tok = tiny("bert")
    made = apply_method(model, tok, {"name": "pasta", "variant": "classifier_only"}, pair=True)
    check_gradients_reachable(made)
    assert all(p.numel() > 0 for p in made.parameters() if p.requires_grad)
