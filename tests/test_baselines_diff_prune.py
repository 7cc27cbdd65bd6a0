"""Diff pruning against independent computations: an all-zero diff is the frozen model, the L0 term and the
projected weights written out by hand, bit-identical pretrained weights after training, the exact number of
saved non-zeros, identical logits after reload, BERT-large's count by formula, and a run resumed before or after
its projection that ends exactly as a straight one."""

import json
import math

import pytest
import torch
from deploy_fixtures import save_backbone
from safetensors.torch import load_file
from test_faults import crash_on_save
from tiny_models import FAMILIES, bert_large_on_meta, tiny

from pasta_cli.adapter import load_adapter, save_adapter
from pasta_cli.baselines import apply_diff_prune
from pasta_cli.baselines.diff_prune import SHUT
from pasta_cli.config import compose
from pasta_cli.errors import PastaError
from pasta_cli.methods import get_method
from pasta_cli.modeling import parameter_counts
from pasta_cli.train import run_job
from pasta_cli.training import checkpoint

A, B = ["the man eats food", "a dog"], ["the cat", "hello world sentence"]
LABELS = torch.tensor([0, 1])


def encode(tok):
    return tok(A, B, padding=True, return_tensors="pt", return_special_tokens_mask=True)


def plain(enc):
    return {k: v for k, v in enc.items() if k != "special_tokens_mask"}


def backbone_weights(model):
    """Every backbone tensor by its Hugging Face name (parametrized ones: their frozen original)."""
    out = {}
    for n, t in model.state_dict().items():
        if n.startswith(model.base_model_prefix + "."):
            out[n.replace(".parametrizations.", ".").replace(".original", "")] = t.detach().clone()
    return out


def effective_diff(model, original):
    """The weights the model computes with, minus the pretrained ones, flattened in named order."""
    modules = dict(model.named_modules())
    parts = []
    for name, theta in original.items():
        owner, _, attr = name.rpartition(".")
        parts.append((getattr(modules[owner], attr) - theta).reshape(-1))
    return torch.cat(parts)


def train(model, enc, steps=3, lr=1e-2):
    groups = get_method("diff_prune").param_groups(model, [p for p in model.parameters() if p.requires_grad])
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(**enc, labels=LABELS).loss.backward()
        opt.step()
    return opt


@pytest.mark.parametrize("family", FAMILIES)
def test_an_all_zero_diff_gives_exactly_the_frozen_models_logits(family):
    model, tok = tiny(family)
    enc = encode(tok)
    with torch.no_grad():
        before = model(**plain(enc)).logits
        apply_diff_prune(model, sparsity=0.01)
        assert torch.equal(model.eval()(**enc).logits, before)
        assert torch.equal(model.train()(**enc).logits, before)  # sampled gates times a zero diff: still zero


def test_the_loss_adds_lambda_times_the_expected_l0_norm():
    model, tok = tiny("bert")
    enc = encode(tok)
    with torch.no_grad():
        task_loss = model(**plain(enc), labels=LABELS).loss
        apply_diff_prune(model, sparsity=0.01, penalty=1e-3, alpha_init=0.7)
        loss = model.train()(**enc, labels=LABELS).loss  # w = 0: the task loss is the frozen model's
    n = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".original"))
    open_prob = 1 / (1 + math.exp(-(0.7 - math.log(1.5 / 1.5))))  # sigmoid(alpha - log(-l / r))
    assert loss.item() == pytest.approx(task_loss.item() + 1e-3 * n * open_prob, rel=1e-5)


def test_evaluation_sees_the_hand_projected_diff():
    model, tok = tiny("electra")
    original = backbone_weights(model)
    apply_diff_prune(model, sparsity=0.02)
    d = model.diff_prune
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for w, a in zip(d.w, d.alpha):
            w.copy_(torch.randn(w.shape, generator=g))
            a.copy_(torch.randn(a.shape, generator=g) * 2)
    gate = torch.cat([(torch.sigmoid(a) * 3 - 1.5).clamp(0, 1).reshape(-1) for a in d.alpha]).detach()
    dense = gate * torch.cat([w.detach().reshape(-1) for w in d.w])
    keep = round(0.02 * dense.numel())
    want = torch.zeros_like(dense)
    top = dense.abs().argsort(descending=True)[:keep]
    want[top] = dense[top]
    model.eval()
    with torch.no_grad():
        got = effective_diff(model, original)
    assert (got != 0).sum() == keep
    assert torch.allclose(got, want, atol=1e-6)


def test_training_changes_only_diffs_gates_and_head_and_the_saved_diff_has_exactly_the_target(tmp_path):
    model, tok = tiny("bert")
    model.save_pretrained(tmp_path / "backbone")
    tok.save_pretrained(tmp_path / "backbone")
    original = backbone_weights(model)
    head = {n: p.detach().clone() for n, p in model.classifier.named_parameters()}
    apply_diff_prune(model, sparsity=0.01, l0_fraction=0.5, finetune_lr=2e-2)
    enc = encode(tok)
    method = get_method("diff_prune")
    opt = train(model, enc, steps=2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    method.after_step(model, 2, 4, sched)  # step 2 of 4 with l0_fraction 0.5: the projection
    assert model.diff_prune.projected() and sched.base_lrs[0] == 2e-2
    keep = model.diff_prune.keep
    assert keep == round(0.01 * sum(t.numel() for t in original.values()))
    train(model, enc, steps=2)  # fixed-mask phase: the kept diffs move, no other weight does
    assert backbone_weights(model).keys() == original.keys()
    assert all(torch.equal(t, original[n]) for n, t in backbone_weights(model).items())
    assert all(not torch.equal(p, head[n]) for n, p in model.classifier.named_parameters())
    model.eval()
    with torch.no_grad():
        diff = effective_diff(model, original)
        logits = model(**enc).logits
    assert (diff != 0).sum() == keep
    out = save_adapter(model, tmp_path / "adapter", backbone=str(tmp_path / "backbone"), head="classification",
                       pair=True, method="diff_prune", settings={"sparsity": 0.01})
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert set(tensors) == {"diff_indices", "diff_values", "classifier.weight", "classifier.bias"}
    assert tensors["diff_indices"].dtype == torch.int64 and tensors["diff_values"].count_nonzero() == keep
    # (theta + diff) - theta rounds: the weights' differences are the saved values to float precision
    assert torch.allclose(tensors["diff_values"], diff[tensors["diff_indices"]], atol=1e-6)
    loaded, loaded_tok = load_adapter(out)
    with torch.no_grad():
        assert torch.equal(loaded(**encode(loaded_tok)).logits, logits)
    assert loaded.diff_prune.alpha[0].abs().min() == SHUT  # the mask is fixed on load


def test_bert_large_count_is_the_target_share_of_the_backbone():
    model = bert_large_on_meta(lambda m: apply_diff_prune(m, sparsity=0.005))
    c = parameter_counts(model)
    assert c["backbone"] == 333_579_264
    assert c["method"] == round(0.005 * 333_579_264) == 1_667_896  # what the adapter stores, not w and alpha
    assert c["head"] == 2050 and c["trainable"] == 1_667_896 + 2050


def test_a_bad_sparsity_is_one_line_naming_the_key():
    model, _ = tiny("bert")
    with pytest.raises(PastaError, match=r"method.sparsity 2\.0: .* in \(0, 1\]"):
        apply_diff_prune(model, sparsity=2.0)


# 64 rows, batch 16, 2 epochs: 8 steps; the projection at step 4 (l0_fraction 0.5); a checkpoint every 2 steps
RUN = ["method=diff_prune", "task.builtin.train_size=64", "task.builtin.dev_size=32", "task.builtin.test_size=8",
       "trainer.epochs=2", "trainer.batch_size=16", "trainer.max_length=32", "trainer.progress=false",
       "trainer.eval_every_steps=2", "trainer.checkpoint_every_steps=2", "optim.lr=1e-2", "method.sparsity=0.05",
       "method.finetune_lr=2e-2", "optim.weight_decay=0.01", "logger=none"]


def record(run_dir):
    """metrics.jsonl without its wall-clock times: step, epoch, train loss, lr and the dev scores."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff_resume")
    settings = [*RUN, f"model.name_or_path={save_backbone(root / 'backbone')}"]
    results = run_job(compose(settings), root / "straight")
    return settings, root / "straight", results


# the 2nd save would be step 4's: resumed from step 2, in the L0 phase; the 4th, step 8's: from step 6, masked
@pytest.mark.parametrize("nth_save", [2, 4])
def test_a_run_resumed_before_or_after_the_projection_ends_as_a_straight_one(straight, tmp_path, nth_save):
    settings, straight_dir, expected = straight
    crash_on_save(compose(settings), tmp_path / "run", nth_save)
    assert checkpoint.peek(tmp_path / "run" / checkpoint.CHECKPOINT)["state"]["step"] == 2 * (nth_save - 1)
    results = run_job(compose([*settings, "resume=true"]), tmp_path / "run")
    assert results["steps"] == expected["steps"] == 8
    for key in ("best_scores", "best_step", "trainable_method"):
        assert results[key] == expected[key], key
    assert record(tmp_path / "run") == record(straight_dir)
    a, b = (load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (straight_dir, tmp_path / "run"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_weight_decay_never_moves_a_projected_gate():
    model, tok = tiny("bert")
    apply_diff_prune(model, sparsity=0.01)
    groups = get_method("diff_prune").param_groups(model, [p for p in model.parameters() if p.requires_grad])
    opt = torch.optim.AdamW(groups, lr=0.1, weight_decay=0.5)  # decay would shrink alpha by 5% a step
    model.diff_prune.project()
    enc = encode(tok)
    model.train()
    for _ in range(20):
        opt.zero_grad()
        model(**enc, labels=LABELS).loss.backward()
        opt.step()
    assert model.diff_prune.projected()
    assert all(a.abs().min() == SHUT for a in model.diff_prune.alpha)
