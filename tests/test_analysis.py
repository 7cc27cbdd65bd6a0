"""pasta-analyze on tiny random models: every number against an independent computation (loops over
output_attentions, hand-built attention, a model without PASTA, the vectors' own norms)."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import tiny

from pasta_cli.adapter import save_adapter
from pasta_cli.analysis import cli
from pasta_cli.analysis.heads import ARGMAX_RULE, MASS_RULE, HeadStats, analyze
from pasta_cli.analysis.subject import Subject, forward, vectors_kept
from pasta_cli.config import STAMP_ENV, compose
from pasta_cli.pasta import add_pasta

PAIRS = (["the man eats", "a dog", "the big red cat sees the small blue dog in the park"],
         ["food", "the big red cat sees the park", "hello"])


def pair_batch(tok):
    return dict(tok(*PAIRS, padding=True, return_special_tokens_mask=True, return_tensors="pt"))


ANALYSED = ["bert", "deberta-v3"]  # DeBERTa-v3: relative (disentangled) attention, its own attention weights


def eager_tiny(seed=0, family="bert"):
    model, tok = tiny(family, seed=seed)
    model.set_attn_implementation("eager")  # attention weights (SDPA returns none)
    return model, tok


def with_pasta(seed=0, variant="full", family="bert"):
    """A tiny model with PASTA, its vectors and head random (as after training)."""
    model, tok = eager_tiny(seed, family)
    add_pasta(model, tok, variant, pair=True, dropout=0.0)
    with torch.no_grad():
        model.pasta.vectors.normal_(std=2.0)
        model.classifier.weight.normal_(std=1.0)
    return model.eval(), tok


def hand_mass(attentions, batch, num_slots):
    """(L, H, P + 1) mean attention per key group over real query rows, by plain loops."""
    mask, special = batch["attention_mask"], batch["special_tokens_mask"]
    layers, heads = len(attentions), attentions[0].shape[1]
    sums, rows = np.zeros((layers, heads, num_slots + 1)), 0
    for b in range(mask.shape[0]):
        real = [t for t in range(mask.shape[1]) if mask[b, t]]
        group, seen = {}, 0
        for t in real:
            if special[b, t]:
                group[t], seen = seen, seen + 1  # the n-th special token of the row is slot n
            else:
                group[t] = num_slots
        for q in real:
            rows += 1
            for layer in range(layers):
                for h in range(heads):
                    for k in real:
                        sums[layer, h, group[k]] += float(attentions[layer][b, h, q, k])
    return sums / rows


@pytest.mark.parametrize("family", ANALYSED)
def test_special_token_mass_equals_a_hand_computation_from_output_attentions(family):
    model, tok = eager_tiny(family=family)
    batch = pair_batch(tok)
    assert not batch["attention_mask"].all()  # padding in the batch
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], output_attentions=True)
    stats = HeadStats(3, 4, 3)
    stats.add(out.attentions, batch["attention_mask"], batch["special_tokens_mask"])
    expected = hand_mass(out.attentions, batch, 3)
    np.testing.assert_allclose(stats.mass_fractions(), expected, atol=1e-5)
    np.testing.assert_allclose(stats.special_mass(), expected[..., :3].sum(-1), atol=1e-5)
    assert stats.rows == int(batch["attention_mask"].sum()) and stats.examples == 3
    # the two [SEP]s are told apart (their masses differ by more than the tolerance), text is not a slot
    assert np.abs(expected[..., 1] - expected[..., 2]).max() > 1e-4
    assert expected[..., 3].min() > 0.5


@pytest.mark.parametrize("family", ANALYSED)
def test_with_an_adapter_the_frozen_state_is_the_backbone_without_pasta_and_the_adapter_state_differs(family):
    model, tok = with_pasta(family=family)
    plain, _ = eager_tiny(family=family)
    batch = pair_batch(tok)
    stats, examples = analyze(Subject(model, tok, "tiny", True, model.pasta), [batch, batch], 3)
    with torch.no_grad():
        out = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], output_attentions=True)
    np.testing.assert_allclose(stats["frozen"].mass_fractions(), hand_mass(out.attentions, batch, 3), atol=1e-5)
    assert np.abs(stats["adapter"].mass_fractions() - stats["frozen"].mass_fractions()).max() > 1e-3
    n = int(batch["attention_mask"][0].sum())  # the grid shows the first input's real tokens only
    assert examples["frozen"].maps.shape == (3, 4, n, n) and len(examples["frozen"].tokens) == n
    np.testing.assert_allclose(examples["frozen"].maps, torch.stack(out.attentions)[:, 0, :, :n, :n].detach(), atol=1e-6)
    assert model.pasta.vectors.abs().sum() > 0  # the vectors are back after the frozen pass


def hand_built_attention():
    """One layer, two inputs of length 5 and 4 (one padding position), six heads; returns (attention, mask)."""
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    target = torch.zeros(2, 6, 5, dtype=torch.long)  # the argmax key of every (input, head, query row)
    target[:, 0] = 0                                  # head 0: always the first position         -> vertical
    target[0, 1], target[1, 1] = 4, 3                 # head 1: always the last *real* position  -> vertical
    target[:, 2] = torch.arange(5).clamp(max=4)       # head 2: the diagonal (4 of 9 rows)       -> not
    target[:, 3] = 4                                  # head 3: position 4, padding in input 2 (5 of 9) -> not
    target[:, 4] = 0
    target[0, 4, 2] = 2                               # head 4: 8 of 9 rows on the first (89%)   -> not
    target[:, 5] = 0
    target[1, 5, 4] = 2                               # head 5: the odd row is a padding row (9 of 9) -> vertical
    attention = torch.full((2, 6, 5, 5), 0.05).scatter(-1, target.unsqueeze(-1), 0.8)
    return attention, mask


def test_the_argmax_rule_on_a_hand_built_attention_tensor():
    attention, mask = hand_built_attention()
    stats = HeadStats(1, 6, 2)
    stats.add([attention], mask, torch.zeros_like(mask))
    assert stats.rows == 9
    np.testing.assert_allclose(stats.first_last_fraction()[0], [1, 1, 4 / 9, 5 / 9, 8 / 9, 1])
    assert stats.vertical(0.5)[ARGMAX_RULE][0].tolist() == [True, True, False, False, False, True]


def test_the_mass_rule_is_mean_attention_on_special_tokens_above_the_threshold():
    attention, mask = hand_built_attention()
    special = torch.tensor([[1, 0, 0, 0, 1], [1, 0, 0, 1, 0]])  # [CLS] ... [SEP] in each input
    stats = HeadStats(1, 6, 2)
    stats.add([attention], mask, special)
    # head 0: every real row puts 0.8 on [CLS] and 0.05 on the [SEP] -> 0.85; head 2 (diagonal) far less
    assert stats.special_mass()[0, 0] == pytest.approx(0.85)
    assert stats.vertical(0.84)[MASS_RULE][0, 0] and not stats.vertical(0.86)[MASS_RULE][0, 0]


def test_ablating_every_layer_equals_classifier_only_logits_and_ablating_none_the_adapters():
    model, tok = with_pasta()
    plain, _ = eager_tiny()  # the same seed: the same backbone and head, without PASTA
    with torch.no_grad():
        plain.classifier.load_state_dict(model.classifier.state_dict())
    batch = pair_batch(tok)
    subject = Subject(model, tok, "tiny", True, model.pasta)
    adapter_logits = model(**batch).logits.detach()
    classifier_only = plain(**{k: v for k, v in batch.items() if k != "special_tokens_mask"}).logits.detach()
    assert (adapter_logits - classifier_only).abs().max() > 1e-3  # the vectors matter
    with vectors_kept(model.pasta, [False, False, False]):
        torch.testing.assert_close(forward(subject, batch).logits, classifier_only)
    with vectors_kept(model.pasta, [True, True, True]):
        torch.testing.assert_close(forward(subject, batch).logits, adapter_logits)
    torch.testing.assert_close(forward(subject, batch).logits, adapter_logits)  # restored on exit


# --- the command line, on a run folder holding a tiny model's adapter ---

@pytest.fixture(scope="module", params=ANALYSED)
def backbone(tmp_path_factory, request):
    """A tiny backbone folder; every command-line test runs on BERT and on DeBERTa-v3 alike."""
    folder = tmp_path_factory.mktemp(f"backbone-{request.param}")
    model, tok = tiny(request.param)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "family").write_text(request.param)
    return folder


@pytest.fixture(scope="module")
def run_config():
    cfg = compose(["trainer.max_length=32", "task.builtin.train_size=8", "task.builtin.dev_size=24",
                   "task.builtin.test_size=8"])
    return OmegaConf.to_yaml(cfg, resolve=True)


def make_run(folder, backbone, run_config, variant="full", seed=0):
    model, tok = with_pasta(seed, variant, (backbone / "family").read_text())
    save_adapter(model, folder / "adapter", backbone=str(backbone), head="classification", pair=True,
                 task="builtin", settings={"variant": variant, "dropout": 0.0})
    (folder / "config.yaml").write_text(run_config)
    return model


def test_norms_csv_equals_the_vectors_l2_norms(tmp_path, backbone, run_config):
    runs = {"full": make_run(tmp_path / "a", backbone, run_config),
            "shared": make_run(tmp_path / "b", backbone, run_config, "shared", seed=1)}
    out = tmp_path / "out"
    assert cli.main(["norms", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "norms.csv").open()))
    assert len(rows) == 2 * 3 * 3  # two runs x 3 layers x 3 slots
    by_run = {"builtin (a)": "full", "builtin (b)": "shared"}
    slots = {"[CLS]": 0, "[SEP] #1": 1, "[SEP] #2": 2}
    for row in rows:
        vectors = runs[by_run[row["run"]]].pasta.vectors.detach().numpy()
        vector = 0 if by_run[row["run"]] == "shared" else slots[row["slot"]]  # shared: one vector for every slot
        expected = np.sqrt((vectors[int(row["layer"]), vector] ** 2).sum())
        assert float(row["norm"]) == pytest.approx(expected, rel=1e-5)
    assert (out / "norms.png").stat().st_size > 0
    trend = json.loads((out / "norms.json").read_text())["runs"]
    assert [r["label"] for r in trend] == ["builtin (a)", "builtin (b)"]


def test_heads_and_ablate_write_their_numbers_and_figures(tmp_path, backbone, run_config, capsys):
    make_run(tmp_path / "run", backbone, run_config)
    heads_out, ablate_out = tmp_path / "heads", tmp_path / "ablate"
    # the spelling, adapter=PATH (the same as --adapter PATH, which docs/WHY.md uses)
    assert cli.main(["heads", f"adapter={tmp_path / 'run'}", "--samples", "10", "--batch-size", "4",
                     "--out", str(heads_out)]) == 0
    record = json.loads((heads_out / "heads.json").read_text())
    assert record["inputs"]["examples"] == 10 and set(record["states"]) == {"frozen", "adapter"}
    rows = list(csv.DictReader((heads_out / "heads.csv").open()))
    assert len(rows) == 2 * 3 * 4
    for state, summary in record["states"].items():  # the counts per layer are the CSV's flags
        for rule, counts in summary["vertical"].items():
            assert counts["per_layer"] == [sum(r[f"vertical_{rule}"] == "True" for r in rows
                                               if r["state"] == state and int(r["layer"]) == layer) for layer in range(3)]
    for name in ("attention_maps_frozen.png", "attention_maps_adapter.png", "special_mass.png"):
        assert (heads_out / name).stat().st_size > 0, name
    assert cli.main(["ablate", str(tmp_path / "run"), "--out", str(ablate_out)]) == 0
    table = list(csv.DictReader((ablate_out / "ablation.csv").open()))
    assert len(table) == 2 + 3 * 3 and {r["ablation"] for r in table} == {"none", "all", "zero_layer", "keep_upto", "keep_from"}
    assert (ablate_out / "ablation.png").stat().st_size > 0
    assert "all vectors" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, backbone, run_config, capsys):
    stamp = os.environ.get(STAMP_ENV)
    assert cli.main(["ablate", str(tmp_path / "nowhere")]) == 2  # no --out: the default folder is named
    assert os.environ.get(STAMP_ENV) == stamp  # ... without fixing later pasta-train runs' folder stamp
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err and "run folder" in err
    make_run(tmp_path / "run", backbone, run_config)
    assert cli.main(["heads", "--adapter", str(tmp_path / "run"), "--sentence", "the man eats"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sentence pairs" in err  # a pair adapter given one sentence
    assert cli.main(["heads", "task=nosuchtask", "--sentence", "a"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
