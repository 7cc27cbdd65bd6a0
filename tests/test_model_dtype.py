"""model.dtype: the frozen weights stored in bf16, what trains kept fp32, auto resolved per machine and recorded."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from runner_fixtures import TINY_BUILTIN, TINY_RUN, error_lines, pasta_train, save_tiny_bert

from pasta_cli import precision
from pasta_cli.config import check_config, compose
from pasta_cli.errors import PastaError
from pasta_cli.training.build import build
from pasta_cli.training.step import train_step

# every built-in method config; (name, frozen weights stored in bf16 under model.dtype=bf16)
METHODS = [("pasta", True), ("classifier_only", True), ("bitfit", True), ("lora", True), ("prefix", True),
           ("adapter", True), ("full_ft", False), ("diff_prune", False), ("loreft", True)]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return str(save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert"))


def tiny_run(tiny_bert, *overrides):
    cfg = compose(["task=builtin", *TINY_BUILTIN, *TINY_RUN, f"model.name_or_path={tiny_bert}", *overrides])
    return build(cfg)


@pytest.mark.parametrize(("method", "stored_low"), METHODS)
def test_bf16_storage_casts_only_what_is_frozen_and_every_method_trains(tiny_bert, method, stored_low):
    run = tiny_run(tiny_bert, f"method={method}", "model.dtype=bf16")
    assert run.frozen_dtype == ("bf16" if stored_low else "fp32")
    # bf16-stored weights can only multiply bf16 activations: the forward runs under bf16 autocast there
    assert run.amp_dtype == (torch.bfloat16 if stored_low else None)
    named = dict(run.model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    frozen = set(named) - trainable
    assert trainable and all(named[n].dtype == torch.float32 for n in trainable)
    modules = dict(run.model.named_modules())
    for n in frozen:  # a module whose own weights partly train (BitFit's LayerNorms) runs in theirs, fp32
        owner = modules[n.rpartition(".")[0]]
        mixed = any(p.requires_grad for p in owner.parameters(recurse=False)) and not isinstance(owner, torch.nn.Linear)
        assert named[n].dtype == (torch.bfloat16 if stored_low and not mixed else torch.float32), n
    before = {n: named[n].detach().clone() for n in frozen}
    batch = run.collate(run.train_rows[:8])
    loss = train_step(run, [batch])
    assert torch.isfinite(torch.tensor(loss))
    for group in run.optimizer.param_groups:  # fp32 optimiser state for fp32 parameters
        for p in group["params"]:
            for value in run.optimizer.state[p].values():
                if torch.is_tensor(value) and value.is_floating_point() and value.dim():
                    assert value.dtype == torch.float32
    assert all(torch.equal(before[n], named[n]) for n in frozen)  # frozen stays frozen
    stepped = [n for n in trainable if run.optimizer.state.get(named[n])]
    assert stepped  # the gradient reached what trains, through the bf16 backbone


def test_bf16_storage_computes_what_fp32_computes_within_bf16_rounding(tiny_bert):
    """An independent forward: the same weights in fp32, no autocast, against bf16 storage under autocast."""
    fp32 = tiny_run(tiny_bert, "method=pasta", "model.dtype=fp32")
    low = tiny_run(tiny_bert, "method=pasta", "model.dtype=bf16")
    with torch.no_grad():
        low.model.pasta.vectors.copy_(torch.randn_like(low.model.pasta.vectors))
        fp32.model.pasta.vectors.copy_(low.model.pasta.vectors)
    batch = fp32.collate(fp32.train_rows[:8])
    fp32.model.eval(), low.model.eval()
    with torch.no_grad():
        want = fp32.model(**batch).logits
        with torch.autocast("cpu", torch.bfloat16):
            got = low.model(**batch).logits.float()
    # bf16 keeps 8 bits of mantissa: 2^-8 relative per rounding, a few roundings deep
    assert torch.allclose(got, want, atol=0.05 * want.abs().max().item() + 1e-3)
    assert not torch.equal(got, want)  # it did compute in bf16


def test_auto_stores_bf16_only_where_bf16_is_fast(monkeypatch):
    monkeypatch.setattr(precision, "fast_bf16", lambda device_type: True)
    assert precision.resolve("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "fast_bf16", lambda device_type: False)  # a CPU without AVX512-BF16 or AMX
    assert precision.resolve("auto", "cpu") == "fp32"
    assert precision.resolve("bf16", "cpu") == "bf16"  # asked for: slow there, but done
    with pytest.raises(PastaError, match="unknown model.dtype 'fp8': choose one of fp32, bf16, auto"):
        precision.resolve("fp8", "cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_the_run_folder_records_the_storage_auto_chose(tmp_path, tiny_bert, monkeypatch, fast):
    monkeypatch.setattr(precision, "fast_bf16", lambda device_type: fast)
    code, _, err = pasta_train("task=builtin", *TINY_BUILTIN, *TINY_RUN, f"model.name_or_path={tiny_bert}",
                               f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    manifest = json.loads((tmp_path / "run" / "results.json").read_text())["manifest"]
    assert config["model"]["dtype"] == ("bf16" if fast else "fp32")
    assert config["model"]["attn_implementation"] == ("eager" if fast else "sdpa")  # what was loaded
    assert manifest["frozen_dtype"] == manifest["dtype"] == ("bfloat16" if fast else "float32")


def test_full_ft_records_fp32_whatever_was_asked(tmp_path, tiny_bert):
    code, _, err = pasta_train("task=builtin", *TINY_BUILTIN, *TINY_RUN, f"model.name_or_path={tiny_bert}",
                               "method=full_ft", "model.dtype=bf16", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["model"]["dtype"] == "fp32"  # every weight trained in fp32: the folder says so


def test_a_bad_dtype_is_one_line_and_exit_2(tmp_path, tiny_bert):
    code, _, err = pasta_train("task=builtin", *TINY_BUILTIN, *TINY_RUN, f"model.name_or_path={tiny_bert}",
                               "model.dtype=half", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2 and error_lines(err) == \
        ["pasta-train: error: unknown model.dtype 'half': choose one of fp32, bf16, auto"]
    assert not (tmp_path / "run" / "results.json").exists()
    cfg = compose(["model.dtype=bf16", "trainer.precision=fp16"])
    with pytest.raises(PastaError, match="model.dtype=bf16 computes in bf16, trainer.precision=fp16"):
        check_config(cfg, cuda_available=True)


@pytest.mark.parametrize(("overrides", "want"), [
    (["model.dtype=bf16"], "eager"),                               # bf16 compute on CPU: SDPA's math kernel upcasts
    (["model.dtype=fp32", "trainer.precision=bf16"], "eager"),     # autocast over fp32 weights: the same
    (["model.dtype=fp32"], "sdpa"),
    (["model.dtype=bf16", "model.attn_implementation=sdpa"], "sdpa"),  # asked for: kept
])
def test_auto_attention_is_eager_where_a_cpu_computes_in_bf16(tiny_bert, overrides, want):
    from pasta_cli.training.build import attention, frozen_storage
    cfg = compose(["task=builtin", *TINY_BUILTIN, *TINY_RUN, f"model.name_or_path={tiny_bert}", *overrides])
    assert attention(cfg, "cpu", frozen_storage(cfg, "cpu")) == want
    assert attention(cfg, "cuda", "bf16") == ("sdpa" if want == "eager" else want)  # GPUs have bf16 SDPA kernels
    run = build(cfg)
    assert run.model.config._attn_implementation == want
