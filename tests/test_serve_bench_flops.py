"""benchmarks/serve_bench.py's roofline counts (issue #24): encoder_flops equals torch's own FLOP counter on a
forward of a tiny BERT, in fp32 and after int8 quantization; the targets table reads the results it is given."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from pasta_cli.precision import prepare_serving

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # scripts beside the package
import serve_bench  # noqa: E402


def tiny_bert(pooler: bool = True) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64)
    config._attn_implementation = "eager"  # attention as matmuls, which FlopCounterMode counts (CPU sdpa: not)
    return BertModel(config, add_pooling_layer=pooler).eval().requires_grad_(False)


def counted(model, batch: int, length: int) -> int:
    ids = torch.randint(5, 60, (batch, length))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    return counter.get_total_flops()


@pytest.mark.parametrize("pooler", [True, False])
@pytest.mark.parametrize("batch,length", [(1, 11), (3, 7), (2, 1)])
def test_encoder_flops_equal_torchs_flop_counter(pooler, batch, length):
    model = tiny_bert(pooler)
    assert serve_bench.encoder_flops(model, [length] * batch) == counted(model, batch, length)


def test_padding_is_counted_only_when_asked_and_int8_counts_the_same_work():
    model = tiny_bert()
    useful = serve_bench.encoder_flops(model, [3, 9])
    assert useful == serve_bench.encoder_flops(model, [3]) + serve_bench.encoder_flops(model, [9])
    assert serve_bench.encoder_flops(model, [9, 9]) > useful  # the padded row's work, executed
    before = serve_bench.linear_weights(model)
    prepare_serving(model, "int8")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
    assert serve_bench.linear_weights(model) == before == 3 * (4 * 32 * 32 + 2 * 32 * 64) + 32 * 32
    assert serve_bench.encoder_flops(model, [3, 9]) == useful


def test_the_targets_read_the_results():
    res = {"precision": {"precisions": {
               "fp32": {"examples_per_s": 100.0, "share_of_peak_model": 0.7},
               "bf16": {"examples_per_s": 250.0, "share_of_peak_model": 0.4},
               "int8": {"examples_per_s": 310.0, "share_of_peak_model": 0.3}}},
           "tasks": {"tasks": 1000, "throughput": {"1": {"vs_1_task": 1.0}, "1000": {"vs_1_task": 0.9}},
                     "memory": {"per_task_over_folder": 1.5}}}
    ratios, targets = serve_bench.ratios(res)
    assert ratios["precision_int8_over_fp32"] == pytest.approx(3.1)
    assert {k: v["met"] for k, v in targets.items()} == {
        "precision_best_over_fp32": True, "share_of_peak_model_fp32": True, "share_of_peak_model_bf16": False,
        "share_of_peak_model_int8": False, "tasks_all_over_1": False, "memory_per_task_over_adapter_folder": True}
    assert "| tasks_all_over_1 | 0.900 | >= 0.95 | no |" in serve_bench.markdown(
        {"ratios": ratios, "targets": targets, "date": "d", "command": "c",
         "machine": {"cpu": "x", "torch_threads": 1}})
