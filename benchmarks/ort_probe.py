#!/usr/bin/env python
"""Is ONNX Runtime's int8 worth shipping for serving (issue #24)? MiniLM's encoder alone (no PASTA vectors, no
heads), one batch of the built-in task, timed at equal threads in torch (fp32, bf16, int8 as MultiTaskPasta runs
them: pasta_cli.precision.prepare_serving) and in ONNX Runtime (the exported encoder, fp32 and its
onnxruntime.quantization.quantize_dynamic int8, per channel). Prints ms per batch and the largest difference of
the real tokens' hidden states from torch fp32. Needs `pip install onnx onnxruntime` (not a pasta-cli
dependency); not part of serve_bench.py because MultiTaskPasta does not use it (the PASTA injection, per row and
per layer, would have to be exported into the graph).

    python benchmarks/ort_probe.py [--threads 1] [--batch-size 32] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pasta_cli.backbones import load_model, load_tokenizer
from pasta_cli.data.builtin import build_splits
from pasta_cli.precision import prepare_serving

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


class Encoder(torch.nn.Module):
    """The encoder with positional inputs, for the exporter."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = build_splits(seed=0, train_size=args.batch_size, dev_size=1, test_size=1)["train"]
    enc = load_tokenizer("minilm")([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], padding=True,
                                   return_tensors="pt")
    real = enc["attention_mask"].bool()
    fresh = lambda: load_model("minilm", "classification", 2).base_model.eval().requires_grad_(False)  # noqa: E731
    with torch.inference_mode():
        ref = fresh()(**enc).last_hidden_state
    results = {}
    for precision in ("fp32", "bf16", "int8"):
        model = fresh()
        autocast = prepare_serving(model, precision)
        with torch.inference_mode(), torch.autocast("cpu", autocast or torch.float32, enabled=bool(autocast)):
            out = model(**enc).last_hidden_state.float()
            results[f"torch {precision}"] = (median_ms(lambda m=model: m(**enc), args.repeats),
                                             float((out - ref)[real].abs().max()))
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "encoder.onnx", Path(tmp) / "encoder-int8.onnx"
        torch.onnx.export(Encoder(fresh()), tuple(enc[n] for n in NAMES), str(fp32), input_names=NAMES,
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in NAMES})
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        feeds = {n: enc[n].numpy() for n in NAMES}
        for label, path in (("onnxruntime fp32", fp32), ("onnxruntime int8", int8)):
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            out = torch.from_numpy(session.run(None, feeds)[0])
            results[label] = (median_ms(lambda s=session: s.run(None, feeds), args.repeats),
                              float((out - ref)[real].abs().max()))
    shape = tuple(enc["input_ids"].shape)
    for label, (ms, diff) in results.items():
        print(f"{label}: {ms:.1f} ms per batch of {shape[0]} x {shape[1]} tokens, {args.threads} thread(s); "
              f"largest |hidden - torch fp32| on real tokens {diff:.3f}")


if __name__ == "__main__":
    main()
