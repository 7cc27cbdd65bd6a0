"""Today's tiny-budget PEFT methods (pasta_cli/baselines/peft_tuners.py): each trains on every family it
supports (refused in one line elsewhere), changes only its own parameters and the head, saves and reloads with
identical logits, and trains on BERT-large exactly the parameters a hand count gives."""

from __future__ import annotations

import json

import pytest
import torch
from test_adapter import encoded
from tiny_models import FAMILIES, bert_large_on_meta, tiny

from pasta_cli.adapter import load_adapter, save_adapter
from pasta_cli.baselines.peft_tuners import TUNERS
from pasta_cli.errors import PastaError
from pasta_cli.methods import METHODS, apply_method
from pasta_cli.modeling import added_parameters, head_names, parameter_counts

TUNER_NAMES = sorted(TUNERS)
TINY = {"road": {"group_size": 8}}  # RoAd's groups must divide the projections' 32 outputs of the tiny models
# ModernBERT fuses query, key and value into one projection (Wqkv): the tuners that adapt them separately refuse it
REFUSED = {(m, "modernbert"): "query/value projections|key and value projections" for m in ("ia3", "vera", "road",
                                                                                          "fourierft")}


def settings(method: str) -> dict:
    return {"name": method, **TINY.get(method, {})}


def inputs(tok) -> dict:
    return {k: v for k, v in encoded(tok).items()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", TUNER_NAMES)
def test_every_tuner_trains_its_own_parameters_and_the_head_or_refuses_in_one_line(method, family):
    model, tok = tiny(family)
    if (method, family) in REFUSED:
        with pytest.raises(PastaError, match=REFUSED[method, family]) as err:
            apply_method(model, tok, settings(method), pair=True)
        assert "\n" not in str(err.value)
        return
    model = apply_method(model, tok, settings(method), pair=True).train()
    own, head = added_parameters(model), head_names(model)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trains and trains <= own | head and trains & own and trains & head
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([0, 1])
    for _ in range(3):
        loss = model(**inputs(tok), labels=labels).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trains, changed ^ trains


@pytest.mark.parametrize("method", TUNER_NAMES)
def test_every_tuner_trains_a_token_classifier(method):
    model, tok = tiny("bert", num_labels=5, token=True)
    model = apply_method(model, tok, settings(method), pair=False).train()
    enc = tok(["the man eats food", "a dog"], padding=True, return_tensors="pt", return_special_tokens_mask=True)
    loss = model(**enc, labels=torch.zeros_like(enc["input_ids"])).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def trained(method: str, tmp_path, family: str):
    model, tok = tiny(family)
    backbone = tmp_path / "backbone"
    model.save_pretrained(backbone)
    tok.save_pretrained(backbone)
    model = apply_method(model, tok, settings(method), pair=True)
    torch.manual_seed(1)
    with torch.no_grad():  # moved off their initialisation: (IA)^3's ones and TrainableTokens' zero deltas are no-ops
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval(), tok, str(backbone)


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("method", TUNER_NAMES)
def test_every_tuner_saves_and_reloads_with_identical_logits(tmp_path, method, family):
    from peft import PeftModel

    model, tok, backbone = trained(method, tmp_path, family)
    save_adapter(model, tmp_path / "a", backbone=backbone, head="classification", pair=True, task="rte",
                 method=method, settings=settings(method))
    loaded, loaded_tok = load_adapter(tmp_path / "a")
    with torch.no_grad():
        expected, got = model(**inputs(tok)).logits, loaded(**inputs(loaded_tok)).logits
        fresh = tiny(family)[0](**{k: v for k, v in inputs(tok).items() if k != "special_tokens_mask"}).logits
    assert torch.equal(expected, got), (expected, got)
    assert not torch.allclose(fresh, got)  # the adapter changes the model: not a no-op round trip
    assert json.loads((tmp_path / "a" / "pasta_config.json").read_text())["method"] == method
    if method != "trainable_tokens":  # PEFT's own loader too (TrainableTokensConfig has no modules_to_save field,
        # so PEFT alone does not put the saved head back: load_adapter / peft_tuners.load_peft do)
        enc = {k: v for k, v in inputs(tok).items() if k != "special_tokens_mask"}
        with torch.no_grad():
            assert torch.equal(PeftModel.from_pretrained(tiny(family)[0], str(tmp_path / "a")).eval()(**enc).logits,
                               expected)


def test_trainable_tokens_train_the_template_tokens_rows():
    model, tok = tiny("bert")
    model = apply_method(model, tok, {"name": "trainable_tokens"}, pair=True)
    layer = next(m for m in model.modules() if hasattr(m, "token_indices"))
    assert sorted(layer.token_indices["default"]) == sorted({tok.cls_token_id, tok.sep_token_id})
    with pytest.raises(PastaError, match=r"not in the tokenizer's vocabulary"):
        apply_method(tiny("bert")[0], tok, {"name": "trainable_tokens", "tokens": ["<nope>"]}, pair=True)


@pytest.mark.parametrize(("method", "bad", "says"), [
    ("vera", {"r": 0}, "method.r"), ("road", {"variant": "road_3"}, "road_1, road_2 or road_4"),
    ("road", {"group_size": 7}, "method.group_size"), ("fourierft", {"n_frequency": 0}, "method.n_frequency"),
])
def test_bad_settings_are_refused_before_a_model_loads(method, bad, says):
    with pytest.raises(PastaError, match=says):
        METHODS[method].typed({"name": method, **bad})


class _Tokenizer:  # what the tuners ask of a tokenizer on the meta device: the template's ids (BERT's 101, 102)
    def __call__(self, a, b, return_special_tokens_mask=True):
        return {"input_ids": [101, 5, 102, 6, 102], "special_tokens_mask": [1, 0, 1, 0, 1]}


L, D, FF = 24, 1024, 4096  # BERT-large


def hand_count(method: str) -> int:
    s = METHODS[method].typed({"name": method})
    count = {  # each a function of the settings: only the method's own are read
        "ia3": lambda: L * (D + D + FF),                      # l_k, l_v (key and value outputs), l_ff (FFN inner)
        "vera": lambda: L * 2 * (s.r + D),                    # d (r) and b (out) per query/value projection
        "ln_tuning": lambda: (1 + 2 * L) * 2 * D,             # embeddings' LayerNorm + 2 per layer, gain and bias
        "trainable_tokens": lambda: 2 * D,                    # the [CLS] and [SEP] rows
        "road": lambda: L * 2 * {"road_1": 1, "road_2": 2, "road_4": 4}[s.variant] * D,  # angle+scale per pair
        "fourierft": lambda: L * 2 * s.n_frequency,           # n spectral coefficients per query/value projection
    }
    return count[method]()


@pytest.mark.parametrize("method", TUNER_NAMES)
def test_bert_large_trainable_counts_equal_a_hand_count(method):
    counts = bert_large_on_meta(lambda m: parameter_counts(apply_method(m, _Tokenizer(), {"name": method}, True)))
    assert counts["method"] == hand_count(method)
    assert counts["head"] == 2 * D + 2 and counts["trainable"] == counts["method"] + counts["head"]
