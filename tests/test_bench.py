"""benchmarks/bench.py on a tiny random-init BERT: every method measured with the documented keys, the
floor's gradient path, the synthetic batches' template, the memory subcommand, the refusals.

No time is asserted (the machine is shared); only shapes, keys, counts and gradients.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from pasta_cli.backbones import load_tokenizer
from pasta_cli.config import task_spec
from pasta_cli.data import load_task
from pasta_cli.methods import METHODS as RUNNER_METHODS
from pasta_cli.modeling import encoder_layers, parameter_counts

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))  # the benchmark is a script beside the package, not part of it

import bench  # noqa: E402
import floor  # noqa: E402
import report  # noqa: E402

# one thread: on a loaded 2-core machine two OpenMP threads wait for each other at every op (100x slower steps)
TINY = ["--model", "random-tiny", "--batch-size", "4", "--seq-len", "16", "--device", "cpu", "--threads", "1"]
H, LAYERS = 32, 2  # random-tiny's hidden size and depth


@pytest.fixture(autouse=True, scope="module")
def _keep_torch_threads():
    """bench.main sets torch's thread count for the whole process; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(["run", *TINY, "--rounds", "1", "--no-memory", "--output", str(out)]) == 0
    return out, json.loads(out.read_text())


def test_every_method_is_measured_with_the_documented_keys(result):
    out, res = result
    assert list(res["methods"]) == list(bench.METHODS)
    assert list(res["inference"]) == ["pasta", "plain"]
    timing = ("step_s", "step_s_min", "examples_per_s", "cpu_step_s", "round_medians_s", "timed_steps")
    for name, r in [*res["methods"].items(), *res["inference"].items()]:
        assert all(key in r for key in timing), name
        assert r["step_s"] >= r["step_s_min"] > 0 and r["examples_per_s"] == pytest.approx(4 / r["step_s"])
        assert len(r["round_medians_s"]) == 1 and r["timed_steps"] == 1
    for r in res["methods"].values():
        assert r["trainable"] == r["params"]["trainable"] and "peak_mem_mb" in r
    assert set(res["ratios"]) == {"pasta/floor", "pasta/bitfit", "pasta/lora", "pasta/full_ft", "inference pasta/plain",
                                  "pasta_bf16/pasta", "pasta_bf16/pasta_autocast", "pasta_autocast/pasta"}
    # the roofline: every row's FLOPs, speed and share of the same-run matmul peak of the dtype it computes in
    assert set(res["roofline"]["peak_gflops"]) == {"fp32", "bf16"}
    for name, r in [*res["methods"].items(), *res["inference"].items()]:
        assert r["gflops"] == pytest.approx(r["gflop_per_step"] / r["step_s"]), name
        assert r["peak_share"] == pytest.approx(r["gflops"] / res["roofline"]["peak_gflops"][r["compute_dtype"]])
    computes = {name: r["compute_dtype"] for name, r in res["methods"].items()}
    assert computes["pasta"] == "fp32" and computes["pasta_autocast"] == computes["pasta_bf16"] == "bf16"
    # the same work whatever the dtype; full FT's backward also computes the weights' gradients
    assert res["methods"]["pasta_bf16"]["gflop_per_step"] == res["methods"]["pasta"]["gflop_per_step"]
    assert res["methods"]["full_ft"]["gflop_per_step"] > res["methods"]["pasta"]["gflop_per_step"]
    for r in res["ratios"].values():
        assert set(r) == {"median", "fastest", "cpu", "per_round"} and r["median"] > 0
    assert res["wall_s"] > 0
    for key in ("cpu", "cores", "torch", "transformers", "peft", "device", "load_avg_at_end"):
        assert key in res["machine"]
    assert res["command"].startswith("python benchmarks/bench.py run ") and "--model random-tiny" in res["command"]
    assert res["config"]["batch_size"] == 4 and res["config"]["batches"] == "synthetic pairs"
    m = {name: r["trainable"] for name, r in res["methods"].items()}
    assert m["floor"] == 0
    assert m["classifier_only"] < m["pasta_shared"] == m["pasta_cls_only"] < m["pasta_sep_only"] < m["pasta"]
    assert m["pasta"] == LAYERS * 3 * H + (H * 2 + 2)  # one vector per slot per layer + the 2-class head
    assert m["pasta"] < m["bitfit"] < m["full_ft"]
    md = out.with_suffix(".md").read_text()
    assert "| pasta/floor |" in md and "| floor | 0 |" in md and "| plain |" in md


def test_what_is_timed_is_the_runners_train_step(monkeypatch, tmp_path):
    calls = []
    real = bench.train_step

    def counting(run, micro_batches):
        calls.append(run.cfg.method.name)
        return real(run, micro_batches)

    monkeypatch.setattr(bench, "train_step", counting)
    argv = ["run", *TINY, "--methods", "floor,lora", "--rounds", "2", "--warmup", "1", "--no-memory",
            "--output", str(tmp_path / "b.json")]
    assert bench.main(argv) == 0
    assert calls.count("floor") == calls.count("lora") == 1 + 1 + 2  # counted FLOPs, warm-up, one step per round


def test_the_floor_through_the_runner_has_an_optimiser_and_nothing_to_update():
    args = bench.parse(["run", *TINY])
    with tempfile.TemporaryDirectory() as folder:
        model = bench.prepare_model("random-tiny", folder)
        task = load_task(task_spec(bench.config(args, "floor", model)))
        run = bench.build_run(args, "floor", model, task)
        before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
        bench.train(run, bench.batches_for(args, run)[0])
    assert parameter_counts(run.model)["trainable"] == 0 and [p.numel() for p in run.params] == [0]
    assert all(torch.equal(p, before[n]) for n, p in run.model.named_parameters())
    assert RUNNER_METHODS["floor"] is floor.FLOOR  # the benchmark registers it through the public call


# ------------------------------------------------------------------ the floor on three families

FAMILIES = ("bert", "roberta", "electra")


def make(family):
    torch.manual_seed(0)
    common = {"vocab_size": 100, "hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
              "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0, "num_labels": 2}
    if family == "bert":
        return BertForSequenceClassification(BertConfig(**common)).eval()
    if family == "roberta":
        return RobertaForSequenceClassification(RobertaConfig(pad_token_id=1, **common)).eval()
    return ElectraForSequenceClassification(ElectraConfig(embedding_size=16, **common)).eval()


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[mask == 0] = 0
    special = torch.zeros_like(ids)
    special[:, 0] = 1
    return {"input_ids": ids, "attention_mask": mask, "special_tokens_mask": special, "labels": torch.tensor([0, 1, 0])}


@pytest.mark.parametrize("family", FAMILIES)
def test_floor_has_no_trainable_weight_but_backprops_to_layer0(family):
    model = floor.apply_floor(make(family))
    assert parameter_counts(model)["trainable"] == 0
    seen = {}

    def grab(module, args, kwargs):  # registered after the floor's hook: sees the input that hook made
        seen["x"] = args[0] if args else kwargs["hidden_states"]

    encoder_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    model.train()
    loss = model(**batch()).loss
    assert loss.requires_grad
    loss.backward()
    assert seen["x"].grad is not None and seen["x"].grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_floor_ignores_special_tokens_mask(family):
    model = floor.apply_floor(make(family))
    enc = batch()
    with torch.no_grad():
        with_mask = model(**enc).logits
        without = model(**{k: v for k, v in enc.items() if k != "special_tokens_mask"}).logits
    assert torch.equal(with_mask, without)


# ------------------------------------------------------------------ batches, memory, refusals


@pytest.mark.parametrize("which", ["minilm", "stand-in"])
def test_synthetic_batches_follow_the_pair_template(which):
    tok = load_tokenizer("minilm") if which == "minilm" else bench.standin_tokenizer()
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, len(tok)) == (0, 101, 102, 30522)
    (b,) = bench.synthetic_batches(tok, 3, 12, 1)
    ids = b["input_ids"]
    assert ids.shape == (3, 12) and b["attention_mask"].all()
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all() and ((ids == 102).sum(1) == 2).all()
    assert torch.equal(b["special_tokens_mask"].bool(), torch.isin(ids, torch.tensor([101, 102])))
    for row in range(3):  # segment B (token type 1) starts right after the middle [SEP]
        mid = int((ids[row] == 102).nonzero()[0])
        assert b["token_type_ids"][row, :mid + 1].eq(0).all() and b["token_type_ids"][row, mid + 1:].eq(1).all()
    mids = {int((bb["input_ids"][r] == 102).nonzero()[0]) for bb in bench.synthetic_batches(tok, 8, 12, 2)
            for r in range(8)}
    assert len(mids) > 1  # the middle separator moves


def test_memory_subcommand_reports_its_memory():
    args = bench.parse(["run", *TINY])
    out = bench.measure_memory(args, "pasta", "random-tiny")  # python benchmarks/bench.py memory --method pasta ...
    assert out["method"] == "pasta" and out["mem_steps"] == bench.MEMORY_STEPS
    assert out["peak_mem_mb"] >= out["mem_loaded_mb"] > out["mem_runtime_mb"] > 0
    assert out["peak_over_runtime_mb"] == pytest.approx(out["peak_mem_mb"] - out["mem_runtime_mb"])
    assert out["mem_measure"] in ("VmHWM", "ru_maxrss")


def test_memory_ratio_is_reported_beside_the_step_ratios():
    def r(step, peak):
        return {"step_s": step, "step_s_min": step, "cpu_step_s": step, "round_medians_s": [step],
                "peak_mem_mb": peak, "peak_over_runtime_mb": peak - 100}

    res = {"methods": {"pasta": r(1.0, 300), "full_ft": r(2.0, 500)}, "inference": {}}
    ratios = report.ratios(res)
    assert ratios["pasta/full_ft"]["median"] == 0.5
    assert ratios["memory pasta/full_ft"] == {"peak": 0.6, "over_runtime": 0.5}


@pytest.mark.parametrize("flags, message", [
    (["--methods", "pasta,nope"], "unknown method"),
    (["--precision", "fp16", "--device", "cpu"], "fp16"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--epoch"], "--epoch needs real data"),
    (["--task", "rte"], "--task needs --data-dir"),
    (["--probe", "pasta:train"], "unrecognized arguments"),
])
def test_bad_flags_are_refused_with_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["run", *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("bench.py: error: ")


def test_bad_flags_exit_2_from_the_command_line():
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "bench.py"), "run", "--rounds", "0"],
                          check=False, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == "bench.py: error: --rounds must be >= 1\n"


def test_real_batches_and_the_epoch_comparison_on_rte(data_root, tmp_path):
    out = tmp_path / "rte.json"
    argv = ["run", *TINY, "--methods", "pasta", "--rounds", "1", "--no-memory", "--task", "rte",
            "--data-dir", str(data_root / "glue" / "RTE"), "--epoch", "3", "--output", str(out)]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["config"]["batches"] == "rte (real)"
    e = res["epoch"]
    assert e["examples"] == 3 * 4 and e["batches"] == 3 and e["subset"]
    assert e["pad_max"]["padded_tokens"] == 3 * 4 * 16  # every batch padded to --seq-len
    assert e["grouped"]["padded_tokens"] <= e["dynamic"]["padded_tokens"] <= e["pad_max"]["padded_tokens"]
    assert res["ratios"]["epoch pad_max/grouped"] > 0


def test_the_matmul_peak_is_a_positive_rate_for_every_dtype():
    from roofline import matmul_peak
    for dtype in ("fp32", "bf16", "int8"):
        assert matmul_peak(dtype, 64, 32, 48, repeats=2) > 0
