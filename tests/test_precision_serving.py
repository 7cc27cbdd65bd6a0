"""Serving precisions (issue #24): MultiTaskPasta, pasta-predict and pasta-serve with the frozen encoder in
fp32, bf16 (stored in bf16, run under bf16 autocast) or int8 (torch.ao dynamic quantization of its Linear
layers), `auto` picking bf16 only where this machine runs it natively. PASTA's vectors and the heads stay fp32.

Tolerances, on the tiny random BERT of deploy_fixtures (3 layers, hidden 32; its logits reach about 7):
- bf16 keeps 8 significant bits (a relative step of 2^-8 = 0.4% per rounding), compounded over 3 layers and a
  head: measured 0.9% of the largest logit off fp32. int8 quantizes weights per tensor and each batch's activations
  per tensor to 255 steps: measured 0.1% (and 0.2% between a row alone and in a batch, since the activation scale
  is the batch's). TOL_OFF_FP32 = 3% of the largest logit leaves a 3x margin; a task mix-up (another task's
  vectors on the same text) moves logits by far more, checked below in each precision.
- a row in a mixed batch against the same row alone, in the same precision (the criterion of test_multitask, whose
  fp32 bound is 1e-5): padding and batch neighbours change the sums' order, and in int8 the activations' scale.
"""

from __future__ import annotations

import json

import pytest
import torch
from deploy_fixtures import ADAPTERS, ITEMS, make_adapter, make_all, reference_logits

from pasta_cli import MultiTaskPasta, PastaError
from pasta_cli import precision as precision_module
from pasta_cli.precision import SERVING_PRECISIONS, resolve_serving

TOL_OFF_FP32 = 0.03                                          # x the largest fp32 logit
TOL_MIXED = {"fp32": 1e-5, "bf16": 0.01, "int8": 0.03}       # fp32 absolute (test_multitask's), others x the largest


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("prec-bert")
    backbone, paths = make_all(root)
    return backbone, paths, reference_logits(paths, ITEMS)


@pytest.fixture(scope="module")
def models(bert):
    backbone, paths, _ = bert
    return {p: MultiTaskPasta.from_adapters(paths, precision=p) for p in ("fp32", "bf16", "int8")}


def max_diff(got, expected):
    return max(float((g - e).abs().max()) for g, e in zip(got, expected))


def labels(item, logits):
    """The labels a row's logits give (one per token for a token task; none for regression)."""
    head = ADAPTERS[item["task"]][1]
    if head == "regression":
        return []
    return logits.argmax(-1).flatten().tolist()


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_bf16_and_int8_answer_as_fp32_does(bert, models, precision):
    _, _, expected = bert
    scale = max(float(e.abs().max()) for e in expected)
    got = models[precision].logits(ITEMS)
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert [g.dtype for g in got] == [torch.float32] * len(got)
    assert max_diff(got, expected) <= TOL_OFF_FP32 * scale
    ours = [x for item, g in zip(ITEMS, got) for x in labels(item, g)]
    theirs = [x for item, e in zip(ITEMS, expected) for x in labels(item, e)]
    assert len(ours) == len(theirs) >= 15  # 6 sentence rows, 13 token positions
    assert sum(a == b for a, b in zip(ours, theirs)) >= 0.9 * len(theirs)
    assert max_diff(got, expected) > 0  # the precision really changed the computation


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_a_mixed_batch_equals_each_row_alone_in_the_same_precision(bert, models, precision):
    _, _, expected = bert
    scale = 1.0 if precision == "fp32" else max(float(e.abs().max()) for e in expected)
    mt = models[precision]
    mixed = mt.logits(ITEMS[::-1], batch_size=4)[::-1]
    alone = [mt.logits([item])[0] for item in ITEMS]
    assert max_diff(mixed, alone) <= TOL_MIXED[precision] * scale


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_the_mixed_test_can_fail_other_vectors_move_logits_beyond_the_bounds(bert, models, precision):
    backbone, paths, expected = bert
    scale = max(float(e.abs().max()) for e in expected)
    mt = MultiTaskPasta(backbone, precision=precision)
    mt.add_adapter("rte", paths["rte"])
    mt.add_adapter("other", make_adapter(paths["rte"].parent / f"rte-other-{precision}", backbone, True,
                                         "classification", "full", ADAPTERS["rte"][3], seed=99))
    a, b = mt.logits([ITEMS[0], {**ITEMS[0], "task": "other"}])
    assert float((a - b).abs().max()) > max(TOL_OFF_FP32, TOL_MIXED[precision]) * scale


def test_the_encoder_changes_format_and_the_vectors_and_heads_stay_fp32(models):
    fp32, bf16, int8 = models["fp32"], models["bf16"], models["int8"]
    assert (fp32.precision, bf16.precision, int8.precision) == ("fp32", "bf16", "int8")
    assert {p.dtype for p in fp32.encoder.parameters()} == {torch.float32}
    assert {p.dtype for p in bf16.encoder.parameters()} == {torch.bfloat16}
    quantized = [m for m in int8.encoder.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and not any(type(m) is torch.nn.Linear for m in int8.encoder.modules())
    for mt in models.values():
        assert mt.injector.table.dtype == torch.float32 and mt.injector.table.shape[1] > 0
        assert {t.vectors.dtype for t in mt.tasks.values()} == {torch.float32}
        assert {p.dtype for t in mt.tasks.values() for p in t.model.parameters()} == {torch.float32}
        torch.testing.assert_close(mt.injector.table[:, :3], fp32.tasks["rte"].vectors, rtol=0, atol=0)


def test_auto_is_bf16_only_where_bf16_is_native(bert, monkeypatch):
    backbone, paths, _ = bert
    monkeypatch.setattr(precision_module, "fast_bf16", lambda device_type: False)
    plain = MultiTaskPasta.from_adapters({"rte": paths["rte"]}, precision="auto")
    assert plain.precision == "fp32" and {p.dtype for p in plain.encoder.parameters()} == {torch.float32}
    assert plain._autocast is None
    monkeypatch.setattr(precision_module, "fast_bf16", lambda device_type: True)
    fast = MultiTaskPasta.from_adapters({"rte": paths["rte"]}, precision="auto")
    assert fast.precision == "bf16" and {p.dtype for p in fast.encoder.parameters()} == {torch.bfloat16}
    assert MultiTaskPasta.__init__.__defaults__[-1] == "auto"


@pytest.mark.parametrize("name,device,message", [
    ("int4", "cpu", "unknown precision 'int4': choose one of auto, fp32, bf16, int8, fp16"),
    ("BF16", "cpu", "unknown precision 'BF16'"),
    ("int8", "cuda", "precision int8 runs on the CPU only"),
])
def test_a_bad_precision_is_one_line(name, device, message):
    with pytest.raises(PastaError, match=message) as err:
        resolve_serving(name, device)
    assert "\n" not in str(err.value)
    assert set(SERVING_PRECISIONS) == {"auto", "fp32", "bf16", "int8", "fp16"}


def test_multitaskpasta_refuses_a_bad_precision_before_loading(bert):
    with pytest.raises(PastaError, match="unknown precision 'fp8'"):
        MultiTaskPasta(bert[0], precision="fp8")


def test_pasta_predict_says_its_precision_and_answers_in_it(bert, tmp_path, capsys):
    from pasta_cli.deploy.predict import main

    backbone, paths, _ = bert
    rows = [item for item in ITEMS if item["task"] == "rte"]
    data = tmp_path / "rte.jsonl"
    data.write_text("".join(json.dumps({"a": r["text"][0], "b": r["text"][1]}) + "\n" for r in rows))
    main(["--adapter", f"rte={paths['rte']}", "--input", f"rte={data}", "--columns", "rte=a,b", "--output",
          str(tmp_path / "out"), "--precision", "int8", "--no-progress"])
    err = capsys.readouterr().err
    assert "pasta-predict: 1 task(s) on " in err and ", cpu, precision int8" in err
    got = [json.loads(line) for line in (tmp_path / "out" / "rte.jsonl").read_text().splitlines()]
    want = MultiTaskPasta.from_adapters({"rte": paths["rte"]}, precision="int8").predict(rows)
    assert [g["label"] for g in got] == [w["label"] for w in want]

    with pytest.raises(SystemExit) as exit_:
        main(["--adapter", f"rte={paths['rte']}", "--input", f"rte={data}", "--output", str(tmp_path / "bad"),
              "--precision", "int4", "--no-progress"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.strip().splitlines() == [
        "pasta-predict: error: unknown precision 'int4': choose one of auto, fp32, bf16, int8, fp16"]
    assert not (tmp_path / "bad").exists()


def test_pasta_serve_health_says_the_resolved_precision_and_refuses_a_bad_one(bert, capsys):
    from test_serve import Served

    from pasta_cli.deploy.server import build, main

    backbone, paths, _ = bert
    app, _, _ = build(["--adapter", f"rte={paths['rte']}", "--precision", "bf16"])
    server = Served(app)
    try:
        status, body, _ = server.request("/health")
        answer = server.request("/predict", {"items": [ITEMS[0]]})
    finally:
        server.close()
    assert status == 200 and body["precision"] == "bf16" and answer[0] == 200
    with pytest.raises(SystemExit) as exit_:
        main(["--backbone", backbone, "--precision", "fp64", "--port", "0"])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "pasta-serve: error: unknown precision 'fp64': choose one of auto, fp32, bf16, int8, fp16"]


@pytest.mark.slow
def test_minilm_bf16_and_int8_labels_agree_with_fp32(tmp_path):
    """The packaged MiniLM (6 layers, hidden 384) with one random PASTA adapter: bf16 labels equal fp32's on 90% of
    the built-in task's rows, logits within 3% of the largest. int8 is lossier on MiniLM: a few hidden dimensions
    with large activations set each batch's per-tensor activation scale and leave the others few int8 levels
    (torch.ao's dynamic quantization has no finer activation scale), so its logits move by up to ~40% of the
    largest (measured), its labels still equal fp32's on 80%: `auto` never picks int8."""
    from pasta_cli import add_pasta, save_adapter
    from pasta_cli.backbones import load_model, load_tokenizer
    from pasta_cli.data.builtin import build_splits

    torch.manual_seed(0)
    model = load_model("minilm", "classification", 2, {0: "no", 1: "yes"})
    injector = add_pasta(model, load_tokenizer("minilm"), "full", pair=True)
    with torch.no_grad():
        injector.vectors.normal_(std=0.5)
        model.classifier.weight.normal_(std=0.5)  # logits of a few units, as a trained head gives (not ~0)
    path = save_adapter(model, tmp_path / "a", backbone="minilm", head="classification", pair=True)
    rows = build_splits(seed=0, train_size=64, dev_size=1, test_size=1)["train"]
    items = [{"task": "t", "text": [r["sentence1"], r["sentence2"]]} for r in rows]
    ref = MultiTaskPasta.from_adapters({"t": path}, precision="fp32").logits(items, batch_size=16)
    scale = max(float(r.abs().max()) for r in ref)
    for precision in ("bf16", "int8"):
        got = MultiTaskPasta.from_adapters({"t": path}, precision=precision).logits(items, batch_size=16)
        agree = sum(int(g.argmax() == r.argmax()) for g, r in zip(got, ref))
        if precision == "bf16":
            assert max_diff(got, ref) <= TOL_OFF_FP32 * scale and agree >= 0.9 * len(items)
        else:  # measured: 0.42 of logits up to 1.2, 55-64 of 64 labels equal (per-tensor activation scales)
            assert max_diff(got, ref) <= 0.5 * scale and agree >= 0.8 * len(items)
