"""Houlsby adapters against independent computations: the frozen model's logits with zeroed adapters, the
sublayer's output written out by hand, bit-identical frozen weights after training, BERT-large's count by formula,
and identical logits after save/load."""

import pytest
import torch
from tiny_models import FAMILIES, bert_large_on_meta, tiny

from pasta_cli.adapter import load_adapter, save_adapter
from pasta_cli.baselines import apply_adapter
from pasta_cli.errors import PastaError
from pasta_cli.modeling import parameter_counts

A, B = ["the man eats food", "a dog"], ["the cat", "hello world sentence"]


def encode(tok):
    return tok(A, B, padding=True, return_tensors="pt", return_special_tokens_mask=True)


def frozen_logits(model, enc):
    with torch.no_grad():
        return model(**{k: v for k, v in enc.items() if k != "special_tokens_mask"}).logits


def snapshot(model):
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


# Houlsby's placement needs post-LayerNorm sublayers (dense, dropout, LayerNorm); ModernBERT is pre-LN: refused
POST_LN = tuple(f for f in FAMILIES if f != "modernbert")


def test_a_pre_layernorm_encoder_is_refused_in_one_line():
    model, _ = tiny("modernbert")
    with pytest.raises(PastaError, match="found \\[0, 0, 0\\] residual sublayers per layer in ModernBert"):
        apply_adapter(model, size=8)


@pytest.mark.parametrize("family", POST_LN)
def test_zeroed_adapters_give_exactly_the_frozen_models_logits(family):
    model, tok = tiny(family)
    enc = encode(tok)
    before = frozen_logits(model, enc)
    apply_adapter(model, size=8)
    with torch.no_grad():
        near = model(**enc).logits  # the default init: near identity, not identity
        for p in model.houlsby_adapters.parameters():
            p.zero_()
        assert torch.equal(model(**enc).logits, before)
    assert not torch.equal(near, before) and torch.allclose(near, before, atol=1e-3)


def test_the_attention_and_feed_forward_outputs_are_as_houlsby_writes_them():
    model, _ = tiny("bert")
    apply_adapter(model, size=4)
    for p in model.houlsby_adapters.parameters():
        torch.nn.init.normal_(p, std=0.3)
    layer = model.bert.encoder.layer[1]
    g = torch.Generator().manual_seed(0)
    h, x = torch.randn(2, 5, 32, generator=g), torch.randn(2, 5, 32, generator=g)
    inter = torch.randn(2, 5, 64, generator=g)

    def adapter(y, a):  # y + W_up gelu_tanh(W_down y + b) + b, the gelu written out
        z = y @ a.down.weight.T + a.down.bias
        z = 0.5 * z * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (z + 0.044715 * z ** 3)))
        return y + z @ a.up.weight.T + a.up.bias

    def post_ln(module, inp, res, a):  # LayerNorm(adapter(dense(inp)) + res); dropout is 0 in the tiny config
        y = adapter(inp @ module.dense.weight.T + module.dense.bias, a)
        return torch.nn.functional.layer_norm(y + res, (32,), module.LayerNorm.weight, module.LayerNorm.bias,
                                              module.LayerNorm.eps)

    attn, ffn = model.houlsby_adapters[1]
    with torch.no_grad():
        assert torch.allclose(layer.attention.output(h, x), post_ln(layer.attention.output, h, x, attn), atol=1e-5)
        assert torch.allclose(layer.output(inter, x), post_ln(layer.output, inter, x, ffn), atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "deberta"])
def test_training_changes_only_adapters_layer_norms_and_head(family):
    model, tok = tiny(family)
    original = snapshot(model)
    apply_adapter(model, size=8)
    enc = encode(tok)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(**enc, labels=torch.tensor([0, 1])).loss.backward()
        opt.step()
    after = model.state_dict()
    changed = {n for n, t in original.items() if not torch.equal(t, after[n])}
    norms = {n for n in original if ".LayerNorm." in n}
    head = {n for n in original if not n.startswith(model.base_model_prefix + ".")}
    assert changed == norms | head
    adapters = {n for n in after if n.startswith("houlsby_adapters.")}
    assert len(adapters) == 3 * 2 * 4 and all(not torch.equal(after[n], torch.zeros_like(after[n]))
                                               for n in adapters if n.endswith("bias"))


def test_bert_large_count_is_the_hand_formula():
    model = bert_large_on_meta(lambda m: apply_adapter(m, size=64))
    c = parameter_counts(model)
    adapters = 2 * 24 * (2 * 1024 * 64 + 64 + 1024)
    layer_norms = (1 + 2 * 24) * 2 * 1024  # embeddings' + two per layer, weight and bias: Houlsby train them
    assert c["method"] == adapters + layer_norms == 6_444_032
    assert c["head"] == 1024 * 2 + 2 and c["backbone"] == 333_579_264
    assert c["method_pct"] == pytest.approx(100 * 6_444_032 / 333_579_264)


def test_save_and_load_give_identical_logits(tmp_path):
    model, tok = tiny("roberta")
    model.save_pretrained(tmp_path / "backbone")
    tok.save_pretrained(tmp_path / "backbone")
    apply_adapter(model, size=8)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    model.eval()
    out = save_adapter(model, tmp_path / "adapter", backbone=str(tmp_path / "backbone"), head="classification",
                       pair=True, method="adapter", settings={"size": 8, "init_std": 1e-3})
    loaded, loaded_tok = load_adapter(out)
    with torch.no_grad():
        assert torch.equal(model(**encode(tok)).logits, loaded(**encode(loaded_tok)).logits)


def test_a_bad_size_is_one_line_naming_the_key():
    model, _ = tiny("bert")
    with pytest.raises(PastaError, match="method.size 0"):
        apply_adapter(model, size=0)
