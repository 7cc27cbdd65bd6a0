#!/usr/bin/env python
"""Does serving in bf16 or int8 keep each task's score? Every adapter's whole dev split, predicted by one
MultiTaskPasta per precision, scored with the runner's own metrics (pasta_cli.eval.metrics); and mixed-task
batches against single-task ones in the same precision.

For each precision: (1) every task alone, its dev rows in batches of --batch-size; (2) all tasks' dev rows
shuffled into one stream (seeded) in batches of the same size, so most batches mix tasks. The record gives each
task's main metric per precision, its gap to fp32 (x100, STS-B's Spearman included), the share of rows whose
label differs from fp32's, and how many rows the mixed stream answered differently from the single-task run in
the same precision (a label, or a regression score beyond 1e-3; rows are padded to other lengths there).

    python benchmarks/precision_agreement.py --adapter rte=outputs/precision/glue/rte/adapter ... \
        [--precisions fp32,bf16,int8] [--threads 1] [--batch-size 32] [--output docs/results/precision_glue]
"""

from __future__ import annotations

import dataclasses
import random
import shlex
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch
from report import machine

from pasta_cli import MultiTaskPasta
from pasta_cli.data import load_task
from pasta_cli.deploy.adapters import named, run_task
from pasta_cli.errors import Parser, PastaError, run_cli
from pasta_cli.eval.metrics import compute
from pasta_cli.files import write_atomic, write_json

SPLIT = "validation"


def parse(argv):
    p = Parser(prog="precision_agreement.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", action="append", required=True, metavar="NAME=PATH", help="repeat for every task")
    p.add_argument("--precisions", default="fp32,bf16,int8", help="comma list; fp32 first (the reference)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the mixed stream's shuffle")
    p.add_argument("--output", default="outputs/bench/precision_agreement", help="writes OUTPUT.json and OUTPUT.md")
    args = p.parse_args(argv)
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    if args.precisions[:1] != ["fp32"]:
        p.error("--precisions must start with fp32, the reference the others are compared with")
    return args


def dev_items(name: str, adapter: str) -> tuple[list[dict], list, object]:
    """The adapter's task, its whole dev split (the run's max_eval_samples lifted), as predict() items."""
    spec = run_task(adapter)
    if spec is None or not spec.data_dir:
        raise PastaError(f"adapter '{name}' ({adapter}) carries no task spec with a data_dir: "
                         "give an adapter pasta-train wrote")
    task = load_task(dataclasses.replace(spec, max_train_samples=1, max_eval_samples=None, test_splits=[]))
    rows = task.splits[SPLIT]
    pair = "text_b" in rows.column_names
    items = [{"task": name, "text": [a, b] if pair else a}
             for a, b in zip(rows["text_a"], rows["text_b"] if pair else rows["text_a"], strict=True)]
    return items, list(rows["label"]), task.spec


def answer(p: dict):
    """What a prediction says: the label, or the regression score."""
    return p["label"] if "label" in p else p["score"]


def same(a, b) -> bool:
    return abs(a - b) <= 1e-3 if isinstance(a, float) else a == b


def score(spec, preds: list, golds: list) -> dict:
    labels = spec.labels
    if labels:  # class names back to ids, as the runner scores them
        preds, golds = [labels.index(p) for p in preds], [g if isinstance(g, int) else labels.index(g) for g in golds]
    return compute(spec.metrics, np.asarray(preds), np.asarray(golds))


def measure(args, adapters: dict) -> dict:
    data = {name: dev_items(name, path) for name, path in adapters.items()}
    stream = [(name, i) for name, (items, _, _) in data.items() for i in range(len(items))]
    random.Random(args.seed).shuffle(stream)
    out = {"tasks": {}, "precisions": {}}
    answers: dict[str, dict[str, list]] = {}
    for precision in args.precisions:
        t0 = time.perf_counter()
        mt = MultiTaskPasta.from_adapters(adapters, precision=precision)
        single = {name: [answer(p) for p in mt.predict(items, batch_size=args.batch_size)]
                  for name, (items, _, _) in data.items()}
        mixed_preds = mt.predict([data[name][0][i] for name, i in stream], batch_size=args.batch_size)
        mixed = {name: [None] * len(items) for name, (items, _, _) in data.items()}
        for (name, i), p in zip(stream, mixed_preds, strict=True):
            mixed[name][i] = answer(p)
        answers[precision] = single
        out["precisions"][precision] = {
            "resolved": getattr(mt, "precision", precision), "wall_s": time.perf_counter() - t0,
            "mixed_unequal_to_single": {name: sum(not same(a, b) for a, b in zip(single[name], mixed[name]))
                                        for name in data}}
        for name, (items, golds, spec) in data.items():
            scores = score(spec, single[name], golds)
            row = out["tasks"].setdefault(name, {"metric": spec.main_metric, "examples": len(items), "scores": {}})
            row["scores"][precision] = 100 * scores[spec.main_metric]
    for name, row in out["tasks"].items():
        ref = answers["fp32"][name]
        row["gap_to_fp32"] = {p: row["scores"][p] - row["scores"]["fp32"] for p in args.precisions}
        row["answers_unequal_to_fp32"] = {p: sum(not same(a, b) for a, b in zip(answers[p][name], ref))
                                          for p in args.precisions}
    return out


def markdown(res: dict) -> str:
    precisions = list(res["precisions"])
    lines = [f"# Serving precision: dev scores per precision ({res['date']})", "", f"`{res['command']}`", "",
             f"{res['machine']['cpu']}, torch threads {res['machine']['torch_threads']}, "
             f"torch {res['machine']['torch']}",
             "", "| task | metric | dev examples | " + " | ".join(precisions) + " | " +
             " | ".join(f"{p} - fp32" for p in precisions[1:]) + " | answers unequal to fp32 |",
             "|---|---|---:|" + "---:|" * (2 * len(precisions) - 1) + "---|"]
    for name, row in res["tasks"].items():
        unequal = ", ".join(f"{p} {row['answers_unequal_to_fp32'][p]}" for p in precisions[1:])
        lines.append(f"| {name} | {row['metric']} | {row['examples']} | "
                     + " | ".join(f"{row['scores'][p]:.2f}" for p in precisions) + " | "
                     + " | ".join(f"{row['gap_to_fp32'][p]:+.2f}" for p in precisions[1:]) + f" | {unequal} |")
    lines += ["", "Mixed-task stream (all tasks' dev rows shuffled, batches of the same size) against each task alone, "
              "same precision: rows answered differently"]
    for p, r in res["precisions"].items():
        lines.append(f"- {p} (resolved {r['resolved']}): {r['mixed_unequal_to_single']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    torch.set_num_threads(args.threads)

    def go():
        adapters = named(args.adapter, "--adapter", "rte=outputs/.../adapter")
        res = {"command": "python benchmarks/precision_agreement.py " + shlex.join(argv),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **measure(args, adapters),
               "machine": machine("cpu")}
        write_json(f"{args.output}.json", res)
        write_atomic(f"{args.output}.md", markdown(res))
        print(markdown(res))
        return 0
    return run_cli("precision_agreement.py", go)


if __name__ == "__main__":
    sys.exit(main())
