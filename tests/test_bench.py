"""pasta-bench: the harness runs every method on a tiny random BERT and writes the documented JSON.

No timing is asserted (the machine is shared); only shapes, keys, counts and the floor's gradient path.
"""

from __future__ import annotations

import json

import pytest
import torch

from pasta_cli import bench

TINY = ["--model-config", "tiny", "--batch-size", "4", "--seq-len", "16", "--num-batches", "2",
        "--rounds", "1", "--steps", "1", "--warmup", "0", "--device", "cpu", "--quiet"]


def _args(*extra):
    return bench.parse_args([*TINY, *extra])


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    code = bench.main([*TINY, "--memory", "off", "--profile", "pasta", "--output", str(out)])
    assert code == 0
    return out, json.loads(out.read_text())


def test_every_method_is_measured_with_the_documented_keys(result):
    out, res = result
    assert list(res["methods"]) == list(bench.TRAIN_METHODS)
    assert set(bench.PASTA_VARIANTS) == {"pasta", "pasta_cls_only", "pasta_sep_only", "pasta_shared"}
    for section, names in (("methods", bench.TRAIN_METHODS), ("inference", bench.INFER_METHODS)):
        for name in names:
            r = res[section][name]
            for key in ("step_s", "examples_per_s", "peak_mem_mb", "trainable"):
                assert key in r, (section, name, key)
            assert r["step_s"] > 0 and r["examples_per_s"] == pytest.approx(4 / r["step_s"])
    for key in ("machine", "command", "date", "config", "targets", "injection", "projection", "profile"):
        assert key in res
    for key in ("cpu", "cores", "torch", "transformers", "device"):
        assert key in res["machine"]
    assert res["command"].startswith("pasta-bench ") and "--model-config tiny" in res["command"]
    assert res["config"]["batch_size"] == 4 and res["config"]["seq_len"] == 16
    # trainable counts: the floor and the plain forward train nothing; PASTA's variants order as the paper's
    m = res["methods"]
    assert m["floor"]["trainable"] == 0 and res["inference"]["plain"]["trainable"] == 0
    assert m["classifier_only"]["trainable"] < m["pasta_shared"]["trainable"] < m["pasta"]["trainable"]
    assert m["pasta_cls_only"]["trainable"] == m["pasta_shared"]["trainable"]
    assert m["pasta"]["trainable"] < m["bitfit"]["trainable"] < m["full_ft"]["trainable"]
    # tiny: 2 layers x 3 slots x 32 + the 2-class head (32 x 2 + 2)
    assert m["pasta"]["trainable"] == 2 * 3 * 32 + 66
    md = out.with_suffix(".md").read_text()
    assert "x full_ft" in md and "x floor" in md and "## Targets" in md
    assert {t["status"] for t in res["targets"]} <= {"pass", "miss", "n/a"}


def test_floor_has_no_trainable_weight_and_its_layer0_input_gets_a_gradient():
    args = _args()
    tok = bench.build_tokenizer(args)
    batches, pair = bench.get_batches(args, tok)
    model, optimizer, trainable = bench.build_method(args, "floor", tok, pair)
    assert trainable == 0 and optimizer is None
    assert not any(p.requires_grad for p in model.parameters())
    runner = bench.Runner("floor", model, optimizer, trainable, args)
    loss = runner.step(batches[0])
    assert loss.requires_grad
    x = model._floor_input
    assert x.grad is not None and x.grad.shape == (4, 16, 32) and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_synthetic_batches_follow_the_pair_template():
    args = _args()
    tok = bench.build_tokenizer(args)
    (batch,) = bench.synthetic_batches(tok, 3, 12, True, 1, 0)
    assert batch["input_ids"].shape == (3, 12) and batch["attention_mask"].all()
    assert (batch["special_tokens_mask"].sum(1) == 3).all()
    assert (batch["input_ids"][:, 0] == tok.cls_token_id).all() and (batch["input_ids"][:, -1] == tok.sep_token_id).all()
    assert ((batch["input_ids"] == tok.sep_token_id).sum(1) == 2).all()
    assert torch.equal(batch["special_tokens_mask"].bool(), torch.isin(batch["input_ids"], torch.tensor([101, 102])))
    # segment B (token type 1) starts right after the middle [SEP]
    for row in range(3):
        mid = int((batch["input_ids"][row] == tok.sep_token_id).nonzero()[0])
        assert batch["token_type_ids"][row, :mid + 1].eq(0).all() and batch["token_type_ids"][row, mid + 1:].eq(1).all()
    (single,) = bench.synthetic_batches(tok, 2, 8, False, 1, 0)
    assert (single["special_tokens_mask"].sum(1) == 2).all()


def test_memory_probe_child_reports_its_memory():
    args = _args("--memory-steps", "1")
    # what the parent sends its memory children survives the JSON round trip
    child = bench.argparse.Namespace(**{**json.loads(bench._probe_config(args)), "probe": "pasta:train"})
    out = bench.probe_child(child)
    assert out["peak_mem_mb"] >= out["mem_loaded_mb"] > 0 and out["peak_over_runtime_mb"] > 0
    assert out["measure"] == "getrusage ru_maxrss"


def test_targets_and_table_from_a_synthetic_result():
    def r(step, mem=None):
        return {"step_s": step, "examples_per_s": 32 / step, "peak_mem_mb": mem, "trainable": 1,
                "peak_over_runtime_mb": mem and mem - 100, "round_medians_s": [step, step]}

    res = {"methods": {"pasta": r(1.0, 300), "floor": r(0.99, 290), "bitfit": r(1.0, 310), "lora": r(1.2, 320),
                       "full_ft": r(1.5, 500)},
           "inference": {"pasta": r(0.5), "plain": r(0.45)},
           "epoch": {"grouped": {"wall_s": 10.0}, "pad_max": {"wall_s": 20.0}}}
    status = {t["target"]: t["status"] for t in bench.evaluate_targets(res)}
    assert list(status.values()) == ["pass", "pass", "pass", "miss", "pass", "pass", "pass"]


def test_bad_flags_are_refused(capsys):
    assert bench.main([*TINY, "--methods", "pasta,nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert bench.main([*TINY, "--precision", "fp16"]) == 2  # fp16 needs CUDA
    if not torch.cuda.is_available():
        assert bench.main([*TINY, "--device", "cuda"]) == 2


def test_gpu_flags_parse_on_cpu():
    """The flags scripts/gpu_bench.sh passes, checked on CPU with the tiny shape (bf16 autocast on CPU)."""
    args = bench.parse_args(["--device", "cpu", "--precision", "bf16", "--model-config", "tiny", "--attn", "sdpa",
                             "--methods", "pasta,full_ft", "--batch-size", "2", "--seq-len", "8", "--memory", "spawn"])
    assert args.method_list == ["pasta", "full_ft"] and args.memory == "spawn"
    tok = bench.build_tokenizer(args)
    batches, pair = bench.get_batches(args, tok)
    model, optimizer, trainable = bench.build_method(args, "pasta", tok, pair)
    assert model.config._attn_implementation == "sdpa"
    bench.Runner("pasta", model, optimizer, trainable, args).step(batches[0])
    assert model.pasta.vectors.grad is not None


def test_standin_tokenizer_matches_bert_uncased_special_ids():
    tok = bench.standin_bert_tokenizer()
    assert len(tok) == 30522 and (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 101, 102)
    (batch,) = bench.synthetic_batches(tok, 2, 10, True, 1, 0)
    assert (batch["special_tokens_mask"].sum(1) == 3).all()


def test_injection_cost_keys(result):
    inj = result[1]["injection"]
    assert inj["layers"] == 2 and inj["slots_per_batch"] == 4 * 3
    assert set(inj["alternatives_fwd_bwd_ms"]) == {"index_put_inplace", "index_add", "dense"}
    assert inj["locate_ms"] > 0


def test_render_rewrites_the_table_from_a_result(result, tmp_path, capsys):
    out, res = result
    copy = tmp_path / "again.json"
    copy.write_text(json.dumps(res))
    assert bench.main(["--render", str(copy)]) == 0
    assert copy.with_suffix(".md").read_text().startswith("# pasta-bench")
    targets = json.loads(copy.read_text())["targets"]
    assert targets[0]["target"].startswith("PASTA train step") and "min_value" in targets[0]
