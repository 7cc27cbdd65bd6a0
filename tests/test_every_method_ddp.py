"""Every method under `torchrun --nproc_per_node 2` (gloo, CPU): a few DDP steps each, one results.json each.

DDP waits for a gradient from every parameter that requires grad; a method that leaves one without (an empty
tensor, as classifier_only's vectors once were) fails at its second step. One torchrun launch runs a Hydra
multirun over the methods, on a tiny random BERT saved to disk, so the whole sweep costs seconds per method.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from test_scale import ENV, TORCHRUN, TRAIN, free_port
from tiny_models import tiny
from transformers import BertConfig, BertForSequenceClassification

pytestmark = pytest.mark.slow
METHODS = ["pasta", "classifier_only", "full_ft", "bitfit", "lora", "prefix", "adapter", "diff_prune", "ia3", "vera",
           "ln_tuning", "trainable_tokens", "road", "fourierft", "loreft"]
VARIANTS = ["full", "cls_only", "sep_only", "shared", "classifier_only"]
STEPS = 3
# two sweeps in one launch would need a product of method x variant; the variants are PASTA's alone, so the
# methods go as one multirun and PASTA's other variants as a second (one torchrun each, one test case each)
SWEEPS = {
    "methods": (f"method={','.join(METHODS)}",
                {"pasta-full", "pasta-classifier_only", "full_ft-na", "bitfit-na", "lora-na", "prefix-na",
                 "adapter-na", "diff_prune-na", "ia3-na", "vera-na", "ln_tuning-na", "trainable_tokens-na",
                 "road-road_1", "fourierft-na", "loreft-na"}),  # RoAd's variant names its folder, as PASTA's
    "variants": (f"method.variant={','.join(VARIANTS[1:4])}", {"pasta-cls_only", "pasta-sep_only", "pasta-shared"}),
}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp") / "tiny-bert"
    small, tok = tiny("bert")
    # 64 wide rather than 32: RoAd's groups of 64 (its recipe's) must divide the projections' outputs
    model = BertForSequenceClassification(BertConfig(**{**small.config.to_dict(), "hidden_size": 64,
                                                        "intermediate_size": 128}))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_every_method_trains_under_torchrun_with_two_processes(tmp_path, tiny_bert, sweep):
    sweep_over, want = SWEEPS[sweep]
    sweep_dir = tmp_path / "sweep"
    common = [f"model.name_or_path={tiny_bert}", "model.tag=tiny-bert", "task.builtin.train_size=64",
              "task.builtin.dev_size=16", "task.builtin.test_size=8", f"trainer.max_steps={STEPS}",
              "trainer.batch_size=4", "trainer.eval_batch_size=16", "trainer.max_length=32", "trainer.epochs=1",
              "trainer.progress=false", f"hydra.sweep.dir={sweep_dir}",
              "hydra.sweep.subdir=${method.name}-${oc.select:method.variant,na}"]
    cmd = [*TORCHRUN, "--nproc_per_node", "2", "--master_port", str(free_port()), *TRAIN, "-m", sweep_over, *common]
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.rglob("results.json")}
    assert set(results) == want
    for name, r in results.items():
        assert r["devices"] == 2 and r["steps"] == STEPS and r["effective_batch_size"] == 8, name
        assert r["trainable"] > 0 and r["recipe"] == ("pasta" if name.startswith("pasta") else name.split("-")[0])
    if sweep == "methods":
        assert results["pasta-classifier_only"]["trainable_method"] == 0
