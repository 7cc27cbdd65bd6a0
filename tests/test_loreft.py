"""LoReFT against independent computations: h + R^T(W h + b - R h) written out by hand at exactly the chosen
positions of a layer's output (every other position untouched), R's orthonormal rows, training on every family
(classification and token classification) that moves only the interventions and the head, identical logits after
save/load (directly and through a pasta-train run), BERT-large's and RoBERTa-large's counts by formula, and the
one-line refusals."""

import copy

import pytest
import torch
import yaml
from runner_fixtures import TINY_BUILTIN, TINY_RUN, pasta_train, save_tiny_bert
from safetensors.torch import load_file
from tiny_models import FAMILIES, bert_large_on_meta, tiny
from transformers import RobertaConfig, RobertaForSequenceClassification

from pasta_cli.adapter import load_adapter, save_adapter
from pasta_cli.baselines.loreft import LOREFT, _index_in_sequence, apply_loreft
from pasta_cli.errors import PastaError
from pasta_cli.methods import apply_method
from pasta_cli.modeling import parameter_counts

A, B = ["the man eats food", "a dog"], ["the cat", "hello world sentence"]
TOKEN_FAMILIES = ("bert", "deberta-v3", "modernbert")  # tiny() builds a token-classification model for these


def encode(tok, pair=True):
    return tok(A, B if pair else None, padding=True, return_tensors="pt", return_special_tokens_mask=True)


def snapshot(model):
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def randomize(model, std=0.3):
    """W, b drawn at random, R a random orthonormal r x d (set through the parametrization, as it allows)."""
    for layer in model.loreft.interventions:
        for intervention in layer:
            r, d = intervention.rotate.weight.shape
            with torch.no_grad():
                intervention.learned_source.weight.normal_(std=std)
                intervention.learned_source.bias.normal_(std=std)
                intervention.rotate.weight = torch.linalg.qr(torch.randn(d, r)).Q.T


def layer_output(model, layer, enc):
    """What encoder layer `layer` returns (after any forward hook already registered on it)."""
    seen = {}
    handle = model.base_model.encoder.layer[layer].register_forward_hook(
        lambda m, a, out: seen.setdefault("h", (out[0] if isinstance(out, tuple) else out).detach()))
    with torch.no_grad():
        model(**enc)
    handle.remove()
    return seen["h"]


def by_hand(h, intervention):
    """h + R^T(W h + b - R h) (no dropout, linear activation), from the parameters alone."""
    r = intervention.rotate.weight
    w, b = intervention.learned_source.weight, intervention.learned_source.bias
    return h + (h @ w.T + b - h @ r.T) @ r


@pytest.mark.parametrize("positions", ["f1+l1", "f2", "l1", "special"])
def test_the_edit_is_the_papers_equation_at_exactly_the_chosen_positions(positions):
    model, tok = tiny("bert")
    frozen = copy.deepcopy(model)
    enc = encode(tok)
    apply_loreft(model, tok, positions=positions, layers=[1], rank=3)
    randomize(model)
    before = layer_output(frozen, 1, enc)  # layer 0 is not intervened: layer 1's input is the frozen model's
    after = layer_output(model, 1, enc)
    real, special = enc["attention_mask"].bool(), enc["special_tokens_mask"].bool()
    length = real.sum(dim=1, keepdim=True)
    index = torch.arange(real.shape[1]).expand_as(real)  # right padding: a token's index among the real ones
    chosen = {"f1+l1": (index == 0) | (index == length - 1), "f2": index < 2, "l1": index == length - 1,
              "special": special}[positions] & real
    assert chosen.any() and (~chosen & real).any()
    with torch.no_grad():
        want = by_hand(before[chosen], model.loreft.interventions[0][0])
    assert torch.allclose(after[chosen], want, atol=1e-5)
    assert torch.equal(after[~chosen], before[~chosen])  # every other position, padding included, untouched
    assert not torch.allclose(after[chosen], before[chosen])


def test_r_has_orthonormal_rows_before_and_after_training():
    model, tok = tiny("bert")
    apply_loreft(model, tok, rank=4, positions="f1+l1")
    # the runner's groups: weight decay everywhere but on R's parameter, whose +-1 diagonal the map reads
    groups = LOREFT.param_groups(model, [p for p in model.parameters() if p.requires_grad])
    assert [g.get("weight_decay") for g in groups] == [None, 0.0] and len(groups[1]["params"]) == 3
    opt = torch.optim.AdamW(groups, lr=5e-2, weight_decay=0.1)
    for step in range(4):
        for layer in model.loreft.interventions:
            r = layer[0].rotate.weight
            assert r.shape == (4, 32) and torch.allclose(r @ r.T, torch.eye(4), atol=1e-5), step
        opt.zero_grad()
        model(**encode(tok), labels=torch.tensor([0, 1])).loss.backward()
        opt.step()


def test_unshared_positions_get_their_own_intervention():
    model, tok = tiny("bert")
    frozen = copy.deepcopy(model)
    enc = encode(tok)
    apply_loreft(model, tok, positions="f1+l1", layers=[0], rank=2, shared=False)
    randomize(model)
    first, last = model.loreft.interventions[0]
    before, after = layer_output(frozen, 0, enc), layer_output(model, 0, enc)
    ends = enc["attention_mask"].sum(dim=1) - 1
    rows = torch.arange(2)
    with torch.no_grad():
        assert torch.allclose(after[:, 0], by_hand(before[:, 0], first), atol=1e-5)
        assert torch.allclose(after[rows, ends], by_hand(before[rows, ends], last), atol=1e-5)


CASES = [(f, False) for f in FAMILIES] + [(f, True) for f in TOKEN_FAMILIES]


@pytest.mark.parametrize(("family", "token"), CASES)
def test_training_changes_only_the_interventions_and_the_head(family, token):
    model, tok = tiny(family, token=token)
    original = snapshot(model)
    apply_method(model, tok, {"name": "loreft", "rank": 2, "positions": "f1+l1"}, pair=True)
    enc = encode(tok)
    labels = torch.randint(0, 2, enc["input_ids"].shape) if token else torch.tensor([0, 1])
    trainable = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in trainable]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(**enc, labels=labels).loss.backward()
        opt.step()
    after = model.state_dict()
    changed = {n for n, t in original.items() if not torch.equal(t, after[n])}
    assert changed and all(not n.startswith(model.base_model_prefix + ".") for n in changed), changed
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert {n.split(".")[0] for n in names} - {"loreft"} == {n.split(".")[0] for n in changed}
    moved = {n for n, p, s in zip(names, trainable, start) if not torch.equal(p.detach(), s)}
    assert any(n.startswith("loreft.") for n in moved) and any(not n.startswith("loreft.") for n in moved)


def test_bf16_frozen_weights_and_autocast_keep_the_hidden_states_dtype():
    model, tok = tiny("bert")
    apply_loreft(model, tok, positions="f1+l1")
    model.to(torch.bfloat16)
    model.loreft.float()  # as precision.store_frozen leaves them: what trains stays fp32
    seen = []
    model.bert.encoder.layer[2].register_forward_hook(lambda m, a, out: seen.append(
        (out[0] if isinstance(out, tuple) else out).dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**encode(tok), labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert seen == [torch.bfloat16] and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 and p.grad is not None for p in model.loreft.parameters())


def test_save_and_load_give_identical_logits(tmp_path):
    model, tok = tiny("roberta")
    model.save_pretrained(tmp_path / "backbone")
    tok.save_pretrained(tmp_path / "backbone")
    settings = {"rank": 2, "layers": [0, 2], "positions": "special", "dropout": 0.0, "shared": True,
                "activation": "linear"}
    apply_loreft(model, tok, **settings)
    randomize(model)
    model.eval()
    out = save_adapter(model, tmp_path / "adapter", backbone=str(tmp_path / "backbone"), head="classification",
                       pair=True, method="loreft", settings=settings)
    loaded, loaded_tok = load_adapter(out)
    with torch.no_grad():
        assert torch.equal(model(**encode(tok)).logits, loaded(**encode(loaded_tok)).logits)


def test_a_pasta_train_run_saves_an_adapter_that_reloads_to_the_same_logits(tmp_path):
    backbone = save_tiny_bert(tmp_path / "tiny-bert")
    code, _, err = pasta_train("task=builtin", *TINY_BUILTIN, *TINY_RUN, "trainer.max_steps=2",
                               f"model.name_or_path={backbone}", "method=loreft", "method.positions=f1+l1",
                               "method.rank=2", "model.dtype=bf16", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 0, err
    adapter = tmp_path / "run" / "adapter"
    config = yaml.safe_load((adapter / "adapter_config.json").read_text())
    assert config["method"] == "loreft"
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert sum(n.startswith("loreft.") for n in tensors) == 3 * 3  # per layer: R's parameter, W, b
    first, tok = load_adapter(adapter)
    second, _ = load_adapter(adapter)
    enc = encode(tok)
    with torch.no_grad():
        assert torch.equal(first(**enc).logits, second(**enc).logits)
    loaded = dict(first.named_parameters())
    assert all(torch.equal(loaded[n].float(), t.float()) for n, t in tensors.items())
    # the saved R is the trained one, not a fresh draw: re-saving gives the same tensors
    out = save_adapter(first, tmp_path / "again", backbone=str(backbone), head="classification", pair=True,
                       method="loreft", settings=config)
    again = load_file(str(out / "adapter_model.safetensors"))
    assert again.keys() == tensors.keys() and all(torch.equal(again[n], tensors[n]) for n in tensors)


def test_bert_large_count_is_the_hand_formula():
    model = bert_large_on_meta(lambda m: apply_loreft(m, None, rank=1, positions="f1"))
    c = parameter_counts(model)
    per_layer = 1 * 1024 + 1 * 1024 + 1  # R (r x d), W (r x d), b (r)
    assert c["method"] == 24 * per_layer == 49_176
    assert c["head"] == 1024 * 2 + 2 and c["backbone"] == 333_579_264
    model = bert_large_on_meta(lambda m: apply_loreft(m, None, rank=4, layers=[0, 5, 23], positions="f1+l1",
                                                      shared=False))
    assert parameter_counts(model)["method"] == 3 * 2 * (2 * 4 * 1024 + 4)


def test_roberta_large_count_is_the_hand_formula():
    config = RobertaConfig(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, num_labels=2)
    with torch.device("meta"):
        model = apply_loreft(RobertaForSequenceClassification(config), None, rank=1, positions="f1")
    c = parameter_counts(model)
    assert c["method"] == 24 * (2 * 1024 + 1) == 49_176
    assert c["method_pct"] == pytest.approx(100 * 49_176 / c["backbone"])


@pytest.mark.parametrize(("changes", "message"), [
    ({"rank": 0}, "method.rank 0: give the rank"),
    ({"positions": "cls"}, "unknown method.positions 'cls': give 'special'"),
    ({"positions": "f0"}, "method.positions 'f0' selects no token"),
    ({"layers": [0, 3]}, r"method.layers \[3\] out of range: BertForSequenceClassification has 3 layers, 0 to 2"),
    ({"layers": [1, 1]}, r"method.layers \[1, 1\]: give distinct layer indices"),
    ({"rank": 33}, "method.rank 33 exceeds the hidden size 32"),
    ({"dropout": 1.0}, "method.dropout 1.0: give a dropout probability"),
    ({"activation": "swishy"}, "unknown method.activation 'swishy'"),
])
def test_bad_settings_are_refused_in_one_line(changes, message):
    model, tok = tiny("bert")
    with pytest.raises(PastaError, match=message) as e:
        apply_loreft(model, tok, **changes)
    assert "\n" not in str(e.value)


def test_first_and_last_tokens_are_counted_per_sequence_in_padded_and_packed_rows():
    # padded rows (right and left padding): one sequence per row
    real = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]]).bool()
    index, length = _index_in_sequence(real)
    assert index[real].tolist() == [0, 1, 2, 0, 1, 2] and length[real].tolist() == [3] * 6
    # one packed row of three sequences (lengths 2, 3, 1): by the collator's boundaries or restarting position_ids
    packed = torch.ones(1, 6, dtype=torch.bool)
    want = ([0, 1, 0, 1, 2, 0], [2, 2, 3, 3, 3, 1])
    for kwargs in ({"cu_seq_lens": torch.tensor([0, 2, 5, 6])}, {"position_ids": torch.tensor([[0, 1, 0, 1, 2, 0]])}):
        index, length = _index_in_sequence(packed, **kwargs)
        assert (index[0].tolist(), length[0].tolist()) == want, kwargs


def test_special_positions_need_a_tokenizer_that_inserts_special_tokens():
    model, _ = tiny("bert")

    class Bare:  # a tokenizer whose template inserts nothing (GPT-2's)
        def __call__(self, *texts, return_special_tokens_mask=False):
            return {"input_ids": [5, 6], "special_tokens_mask": [0, 0]}

    with pytest.raises(PastaError, match="Bare inserts no special tokens.*use positions f1\\+l1"):
        apply_loreft(model, Bare(), positions="special")
