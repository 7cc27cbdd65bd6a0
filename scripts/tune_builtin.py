"""Tune/measure the built-in task: PASTA `full` vs `classifier_only` on the packaged MiniLM.

Standalone (no Hydra, no trainer): tokenizer(s1, s2, truncation, max_length=64,
return_special_tokens_mask=True), dynamic padding, AdamW on the trainable parameters only,
linear schedule with 6% warm-up, dev accuracy after every epoch, wall time per run.

    python scripts/tune_builtin.py                  # the lr grid below, 3 epochs each (~25 min)
    python scripts/tune_builtin.py --runs full:2e-2 classifier_only:2e-2
    python scripts/tune_builtin.py --probe --runs   # classifier_only's converged ceiling only

Measured (data seed 0, model seed 42, 2000/500/500, batch 32, max_length 64, 3 epochs = 189 steps,
dev accuracy after epoch 1/2/3; 2 shared cores at load average ~4-5, so wall times are inflated:
"cpu/2" is process CPU time / 2 threads, about the wall time on 2 idle cores):
    full             lr 2e-2   0.500 / 0.894 / 0.926   wall 360s (load 4), 544s (load 6-7)  cpu/2 144s
    full             lr 1e-2   0.510 / 0.878 / 0.900   wall 345s  cpu/2 135s
    full             lr 5e-3   0.496 / 0.628 / 0.798   wall 363s
    full             lr 5e-2   0.500 / 0.500 (2 epochs: diverges to one class)
    classifier_only  lr 5e-3   0.494 / 0.524 / 0.540
    classifier_only  lr 2e-2   0.526 / 0.536 / 0.548
    classifier_only  lr 1e-1   0.558 / 0.540 / 0.580   cpu/2 83s
    full lr 2e-2, model seed 1, data seed 1:  0.654 / 0.856 / 0.900   cpu/2 116s
    --probe (logistic regression to convergence on the frozen pooled [CLS], no step budget):
        dev 0.574 / 0.644 / 0.722 / 0.754 at C = 0.1 / 1 / 10 / 100
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup  # noqa: E402

from pasta_cli.backbones import load_model, load_tokenizer  # noqa: E402
from pasta_cli.data.builtin import LABELS, build_splits  # noqa: E402
from pasta_cli.modeling import parameter_counts  # noqa: E402
from pasta_cli.pasta import add_pasta  # noqa: E402


def encode(tokenizer, rows, max_length):
    enc = tokenizer([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], truncation=True,
                    max_length=max_length, return_special_tokens_mask=True)
    return [{**{k: enc[k][i] for k in enc}, "labels": r["label"]} for i, r in enumerate(rows)]


@torch.no_grad()
def accuracy(model, loader):
    model.eval()
    right = total = 0
    for batch in loader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        right += (logits.argmax(-1) == batch["labels"]).sum().item()
        total += len(batch["labels"])
    return right / total


def run(variant, lr, data, tokenizer, args):
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model = load_model("minilm", "classification", len(LABELS))
    add_pasta(model, tokenizer, variant=variant, pair=True)
    params = [p for p in model.parameters() if p.requires_grad]
    counts = parameter_counts(model)
    collate = DataCollatorWithPadding(tokenizer)
    g = torch.Generator().manual_seed(args.seed)
    train = DataLoader(data["train"], batch_size=args.batch, shuffle=True, collate_fn=collate, generator=g)
    dev = DataLoader(data["validation"], batch_size=128, collate_fn=collate)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=args.weight_decay)
    steps = len(train) * args.epochs
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    print(f"== {variant} lr={lr}: trainable {counts['trainable']} (pasta {counts['pasta']}), {steps} steps",
          flush=True)
    start, cpu0 = time.time(), time.process_time()
    best = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        loss_sum = 0.0
        for batch in train:
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.item()
        acc = accuracy(model, dev)
        best = max(best, acc)
        print(f"  epoch {epoch}: train loss {loss_sum / len(train):.4f}  dev acc {acc:.4f}  "
              f"wall {time.time() - start:.0f}s  cpu {time.process_time() - cpu0:.0f}s", flush=True)
    wall, cpu = time.time() - start, time.process_time() - cpu0
    print(f"  -> {variant} lr={lr}: final dev {acc:.4f}, best dev {best:.4f}, wall {wall:.0f}s, "
          f"cpu {cpu:.0f}s (~{cpu / args.threads:.0f}s wall on {args.threads} idle cores)", flush=True)
    return {"variant": variant, "lr": lr, "final": acc, "best": best, "wall": wall, "cpu": cpu}


@torch.no_grad()
def probe(data, tokenizer, args):
    """The classifier-only ceiling: logistic regression trained to convergence on the frozen
    pooled [CLS] (what classifier_only's linear head sees, without dropout or a step budget)."""
    from sklearn.linear_model import LogisticRegression

    model = load_model("minilm", "classification", len(LABELS)).eval()
    collate = DataCollatorWithPadding(tokenizer)
    feats = {}
    for split in ("train", "validation"):
        xs, ys = [], []
        for batch in DataLoader(data[split], batch_size=128, collate_fn=collate):
            batch.pop("special_tokens_mask")
            ys.append(batch.pop("labels"))
            xs.append(model.base_model(**batch).pooler_output)
        feats[split] = (torch.cat(xs).numpy(), torch.cat(ys).numpy())
    for c in (0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=5000).fit(*feats["train"])
        print(f"  probe C={c:<6g} train acc {clf.score(*feats['train']):.4f}  "
              f"dev acc {clf.score(*feats['validation']):.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=["full:2e-2", "full:5e-3", "classifier_only:5e-3",
                                                  "classifier_only:2e-2", "classifier_only:1e-1"],
                    help="variant:lr pairs")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--sizes", type=int, nargs=3, default=[2000, 500, 500], metavar=("TRAIN", "DEV", "TEST"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe", action="store_true", help="also fit a converged logistic-regression "
                    "probe on the frozen pooled [CLS] (classifier_only's ceiling)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = load_tokenizer("minilm")
    splits = build_splits(args.data_seed, *args.sizes)
    data = {k: encode(tokenizer, v, args.max_length) for k, v in splits.items()}
    lengths = [len(r["input_ids"]) for r in data["train"]]
    print(f"data: {', '.join(f'{k} {len(v)}' for k, v in data.items())}; pair tokens mean "
          f"{sum(lengths) / len(lengths):.1f} max {max(lengths)}; load avg {os.getloadavg()[0]:.2f}", flush=True)
    for r in splits["train"][:4]:
        print(f"  {r['sentence1']!r} / {r['sentence2']!r} -> {LABELS[r['label']]}")

    if args.probe:
        print("== logistic-regression probe on the frozen pooled [CLS]", flush=True)
        probe(data, tokenizer, args)
    results = []
    for spec in args.runs or []:
        variant, lr = spec.split(":")
        results.append(run(variant, float(lr), data, tokenizer, args))
    print("\nsummary (dev accuracy):")
    for r in results:
        print(f"  {r['variant']:16s} lr={r['lr']:<8g} final {r['final']:.4f}  best {r['best']:.4f}  "
              f"wall {r['wall']:.0f}s  cpu/threads {r['cpu'] / args.threads:.0f}s")
    print(f"load avg at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
