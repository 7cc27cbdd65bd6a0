#!/usr/bin/env python
"""The cost of PASTA next to the baselines and the floor: the runner's own training step, timed.

Every method's run is built by `pasta_cli.training.build.build` from the config that
`pasta-train method=...` would compose (`pasta_cli.config.compose`), so the model, the method on
it, the optimiser, the schedule and the precision are exactly the runner's. What is timed is
`pasta_cli.training.step.train_step`, the function the training loop calls once per optimiser
step, on the same batches for every method. Nothing here re-implements a step.

On a shared machine absolute times drift by tens of percent within minutes, so the methods are
timed in alternation: all runs are built first, then for R rounds each method takes k steps in
turn, the order rotated by one every round (its cyclic order never changes, so the methods that a
ratio compares stay next to each other). The JSON keeps each round's median, so a ratio can be read
round by round, and the fastest step, the least disturbed one.

Peak memory is measured apart, one fresh interpreter per method (`bench.py memory --method X`):
peak RSS on CPU (VmHWM: the peak of that process alone), `torch.cuda.max_memory_allocated` on CUDA.

No acceptance bound lives here: the results give ratios (PASTA/floor, PASTA/BitFit, PASTA/LoRA,
PASTA inference/plain forward, memory PASTA/full_ft); docs/PERFORMANCE.md says what they are
compared with.

    python benchmarks/bench.py run [--model minilm|random-bert-large|PATH] [--methods pasta,floor,...]
                                   [--batch-size 32] [--seq-len 128] [--rounds 5] [--output outputs/bench/bench.json]
    python benchmarks/bench.py memory --method pasta [same model and batch options]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import datasets
import floor  # noqa: F401 - importing it registers the floor method (pasta_cli.methods)
import torch
import transformers
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from report import machine, markdown, ratios
from roofline import count_flops, matmul_peak
from transformers import BertConfig, BertModel, BertTokenizer

from pasta_cli.backbones import load_model, load_tokenizer
from pasta_cli.config import check_config, compose, task_spec
from pasta_cli.data import load_task
from pasta_cli.errors import Parser, PastaError, run_cli
from pasta_cli.modeling import freeze, parameter_counts
from pasta_cli.precision import AMP_DTYPES
from pasta_cli.training.build import build
from pasta_cli.training.loop import epoch_batches
from pasta_cli.training.step import autocast, pad_batch, to_device, train_step

HERE = Path(__file__).resolve().parent
CONF = HERE / "conf"  # conf/method/floor.yaml, searched after the package's conf/

# Method name -> the overrides that select it. The order is the round-robin's: the pairs that a ratio
# compares (floor-pasta-bitfit-lora-full_ft) sit next to each other, so their steps share the machine's state.
METHODS = {
    "floor": ["method=floor"],
    "pasta": ["method=pasta", "method.variant=full"],
    # PASTA's two ways to bf16 on the same batches (the ratios pasta_bf16/pasta, pasta_bf16/pasta_autocast):
    # fp32 weights under bf16 autocast, and the frozen backbone stored in bf16 (model.dtype, precision.py)
    "pasta_autocast": ["method=pasta", "method.variant=full", "trainer.precision=bf16", "model.dtype=fp32"],
    "pasta_bf16": ["method=pasta", "method.variant=full", "model.dtype=bf16"],
    "bitfit": ["method=bitfit"],
    "lora": ["method=lora"],
    "full_ft": ["method=full_ft"],
    "prefix": ["method=prefix"],
    "pasta_cls_only": ["method=pasta", "method.variant=cls_only"],
    "pasta_sep_only": ["method=pasta", "method.variant=sep_only"],
    "pasta_shared": ["method=pasta", "method.variant=shared"],
    "classifier_only": ["method=classifier_only"],
    "adapter": ["method=adapter"],
    "diff_prune": ["method=diff_prune"],
}

# Random-init backbones, saved to a temporary folder so that the runner loads them like any checkpoint:
# BERT shapes with the uncased BERT vocabulary (30522), which MiniLM's tokenizer shares. Speed and memory
# do not depend on the weights' values, and no download is needed (GPU machines are offline).
SHAPES = {
    "random-tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
    "random-bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "intermediate_size": 3072},
    "random-bert-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                          "intermediate_size": 4096},
}

NUM_BATCHES = 4     # distinct batches, cycled through by every method
MEMORY_STEPS = 3    # training steps of each memory child


# ----------------------------------------------------------------------------------------------- CLI


def parser() -> Parser:
    common = Parser(add_help=False)
    common.add_argument("--model", default="minilm",
                        help=f"minilm (packaged), a local folder or hub id, or a random-init shape: "
                             f"{', '.join(SHAPES)}")
    common.add_argument("--batch-size", type=int, default=32)
    common.add_argument("--seq-len", type=int, default=128,
                        help="length of the synthetic batches; with --task, the truncation length")
    common.add_argument("--task", help="real batches of this task (conf/task/<name>.yaml) instead of synthetic ones")
    common.add_argument("--data-dir", help="the task's local folder, e.g. ../shared/data/glue/RTE (needed with --task)")
    common.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    common.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="the runner's trainer.precision (autocast; fp16 needs CUDA)")
    common.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "auto"),
                        help="the runner's model.dtype, the frozen weights' storage (default fp32, as before it "
                             "existed; pasta_autocast and pasta_bf16 set their own)")
    common.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p = Parser(prog="bench.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="time every method; write JSON + markdown")
    run.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    run.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    run.add_argument("--steps", type=int, help="timed steps per method per round (default 1 on CPU, 10 on CUDA)")
    run.add_argument("--warmup", type=int, help="untimed steps per method first (default 1 on CPU, 5 on CUDA)")
    run.add_argument("--epoch", type=int, nargs="?", const=0, metavar="N",
                     help="also time one epoch of PASTA under three batchings (needs --task); N: a random subset "
                          "of N batches")
    run.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory children")
    run.add_argument("--output", default="outputs/bench/bench.json", help="JSON path; the .md goes beside it")
    mem = sub.add_parser("memory", parents=[common], help="peak memory of one method, in this process; prints JSON")
    mem.add_argument("--method", required=True, choices=list(METHODS))
    return p


def parse(argv) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    for key in ("batch_size", "seq_len", "rounds", "steps", "threads"):
        if getattr(args, key, None) is not None and getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if getattr(args, "warmup", None) is not None and args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.seq_len < 5:
        p.error("--seq-len must leave room for the pair template's special tokens and text (>= 5)")
    if args.task and not args.data_dir:
        p.error("--task needs --data-dir (the machine is offline), e.g. --task rte --data-dir ../shared/data/glue/RTE")
    if args.data_dir and not Path(args.data_dir).is_dir():
        p.error(f"--data-dir {args.data_dir} is not a folder")
    if args.command == "run":
        args.methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
        unknown = [m for m in args.methods if m not in METHODS]
        if unknown or not args.methods:
            p.error(f"unknown method(s) {unknown}: choose among {', '.join(METHODS)}")
        if args.epoch is not None and not args.task:
            p.error("--epoch needs real data: add --task rte --data-dir ../shared/data/glue/RTE")
    try:  # the runner's own checks: device, precision
        check_config(config(args, "pasta", "minilm"), torch.cuda.is_available())
    except (PastaError, HydraException, OmegaConfBaseException) as e:
        p.error(str(e).splitlines()[0])
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.device = "cuda" if cuda else "cpu"
    if args.command == "run":
        args.steps = args.steps or (10 if cuda else 1)
        args.warmup = (5 if cuda else 1) if args.warmup is None else args.warmup
    return args


# ----------------------------------------------------------------------------------- runs and batches


def config(args, method: str, model: str):
    """The config `pasta-train` would run `method` with, at the benchmark's batch shape and device."""
    if args.task:
        task = [f"task={args.task}", f"task.data_dir={Path(args.data_dir).resolve()}",
                "task.test_splits=[]", "task.max_eval_samples=8"]  # build encodes every split: keep the others small
    else:  # the built-in task's few rows only give the run its head (2 classes, pairs): batches are synthetic
        task = ["task=builtin", "task.builtin.train_size=64", "task.builtin.dev_size=8", "task.builtin.test_size=8"]
    model_keys = ["model=minilm"] if model == "minilm" else [f"model.name_or_path={model}"]
    trainer = [f"trainer.batch_size={args.batch_size}", f"trainer.max_length={args.seq_len}",
               f"trainer.device={args.device}", "trainer.progress=false"]
    chosen = {o.split("=", 1)[0] for o in METHODS[method]}  # a method entry's own precision or dtype wins
    formats = [f"{key}={value}" for key, value in (("trainer.precision", args.precision), ("model.dtype", args.dtype))
               if key not in chosen]
    return compose([*task, *model_keys, *METHODS[method], *trainer, *formats], config_dir=str(CONF))


def build_run(args, method: str, model: str, task):
    """The runner's Run for `method`, on the task loaded once (`load_task` is not repeated per method)."""
    run = build(config(args, method, model), task)
    run.model.train()
    return run


def prepare_model(name: str, folder: str) -> str:
    """A random-init shape saved to `folder` (backbone without head, and tokenizer); else `name` as is."""
    if name not in SHAPES:
        return name
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, max_position_embeddings=512, **SHAPES[name])).save_pretrained(folder)
    try:
        tokenizer = load_tokenizer("minilm")
    except PastaError:  # a bare GPU machine without the MiniLM package
        tokenizer = standin_tokenizer()
    tokenizer.save_pretrained(folder)
    return folder


def standin_tokenizer():
    """A BERT tokenizer with bert-base-uncased's special ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102,
    [MASK] 103) and size: all that synthetic batches need."""
    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1000: "a", 1001: "b"}
    words = [special.get(i, f"[unused{i}]" if i < 999 else f"w{i}") for i in range(30522)]
    return BertTokenizer(vocab={w: i for i, w in enumerate(words)})


def synthetic_batches(tokenizer, batch_size: int, seq_len: int, n: int, seed: int = 0) -> list[dict]:
    """n batches of exactly (batch_size, seq_len), no padding, in the tokenizer's pair template as a
    real encoding of ("a", "b") shows it (BERT: [CLS] A [SEP] B [SEP]); segment A takes a random share
    of the text, so the middle separator moves; special_tokens_mask marks the template's tokens."""
    enc = tokenizer("a", "b", return_special_tokens_mask=True, return_token_type_ids=True)
    types = enc.get("token_type_ids") or [0] * len(enc["input_ids"])
    # one position per token: "a" and "b" are one token each
    template = list(zip(enc["input_ids"], enc["special_tokens_mask"], types, strict=True))
    text = seq_len - sum(s for _, s, _ in template)
    if text < 2:
        raise PastaError(f"--seq-len {seq_len} leaves no room for text beside the template's special tokens")
    g = torch.Generator().manual_seed(seed)
    low = min(1000, len(tokenizer) // 2)  # past [unused*] and control ids
    banned = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    batches = []
    for _ in range(n):
        ids = torch.randint(low, len(tokenizer), (batch_size, seq_len), generator=g)
        ids[torch.isin(ids, banned)] = low
        special, segment = torch.zeros_like(ids), torch.zeros_like(ids)
        for row in range(batch_size):
            a = int(torch.randint(1, text, (1,), generator=g))
            widths = iter((a, text - a))
            pos = 0
            for token, is_special, token_type in template:
                width = 1 if is_special else next(widths)
                if is_special:
                    ids[row, pos], special[row, pos] = token, 1
                segment[row, pos:pos + width] = token_type
                pos += width
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "special_tokens_mask": special,
                 "labels": torch.randint(0, 2, (batch_size,), generator=g)}
        if "token_type_ids" in tokenizer.model_input_names:
            batch["token_type_ids"] = segment
        batches.append(batch)
    return batches


def real_batches(run, n: int) -> list[dict]:
    """n full batches spread evenly over the runner's first epoch order (length-grouped where the task
    asks for it), collated as the runner does (padded to their longest row)."""
    order = epoch_batches(run.lengths, run.cfg.trainer.batch_size, run.cfg.seed, 0, run.cfg.trainer.group_by_length)
    full = [b for b in order if len(b) == run.cfg.trainer.batch_size] or order
    return [run.collate([run.train_rows[i] for i in b]) for b in full[::max(1, len(full) // n)][:n]]


def batches_for(args, run) -> list[dict]:
    if args.task:
        return real_batches(run, NUM_BATCHES)
    return synthetic_batches(run.tokenizer, args.batch_size, args.seq_len, NUM_BATCHES)


def train(run, batch) -> float:
    run.model.train()  # the PASTA model also serves inference.pasta, in eval mode
    return train_step(run, [to_device(run, batch)])


def infer(run, model, batch, mask: bool):
    """A forward in eval mode under inference_mode, with the runner's autocast; no labels."""
    model.eval()
    batch = {k: v for k, v in to_device(run, batch).items() if k != "labels" and (mask or k != "special_tokens_mask")}
    with torch.inference_mode(), autocast(run):
        return model(**batch).logits


def dtype_name(amp_dtype) -> str:
    """The precision name (fp32 | bf16 | fp16) of what a run's matmuls compute in: its autocast dtype's."""
    return {dtype: name for name, dtype in AMP_DTYPES.items()}[amp_dtype]


def peak_shape(run, batch) -> tuple[int, int, int]:
    """The roofline's matmul: the batch's tokens x hidden @ hidden x intermediate, the model's own FFN product."""
    config = run.model.config
    return batch["input_ids"].numel(), config.hidden_size, config.intermediate_size


def plain_model(run):
    """The backbone and head the runner loads, frozen, with no method and no hook at all."""
    torch.manual_seed(run.cfg.seed)
    model = load_model(run.cfg.model.name_or_path, run.head, run.task.num_labels, run.task.id2label or None,
                       dropout=run.cfg.model.dropout)
    freeze(model, lambda name: False)
    return model.to(run.device).eval()


# ------------------------------------------------------------------------------------------- timing


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def alternate(steps: dict, batches: list[dict], args) -> dict:
    """Warm every step up, then R rounds of k timed steps of each in turn, the first one rotated per
    round; returns name -> (wall times per round, CPU times of this process per round)."""
    names = list(steps)
    for name in names:
        for i in range(args.warmup):
            steps[name](batches[i % len(batches)])
    times = {name: ([], []) for name in names}
    for rnd in range(args.rounds):
        t_round = time.perf_counter()
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            walls, cpus = [], []
            for s in range(args.steps):
                batch = batches[(rnd * args.steps + s) % len(batches)]
                sync(args.device)
                c0, t0 = time.process_time(), time.perf_counter()
                steps[name](batch)
                sync(args.device)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            times[name][0].append(walls)
            times[name][1].append(cpus)
        log(f"round {rnd + 1}/{args.rounds}: {time.perf_counter() - t_round:.1f} s")
    return times


def summarise(walls: list[list[float]], cpus: list[list[float]], batch_size: int) -> dict:
    flat = [t for rnd in walls for t in rnd]
    step = statistics.median(flat)
    return {"step_s": step, "step_s_min": min(flat), "examples_per_s": batch_size / step,
            "cpu_step_s": statistics.median(c for rnd in cpus for c in rnd),
            "round_medians_s": [statistics.median(rnd) for rnd in walls], "timed_steps": len(flat)}


def epoch_compare(args, run) -> dict:
    """One epoch of PASTA training on the task under three batchings, interleaved batch by batch on one
    model: `grouped` (length-grouped order, padded to the longest row: the runner's default), `dynamic`
    (random order, same padding), `pad_max` (the same random order, every batch padded to --seq-len, as
    the official code does). Each wall time sums collation and the train step."""
    rows, size, seed = run.train_rows, args.batch_size, run.cfg.seed
    if args.epoch:  # the same random subset of examples for every batching
        keep = random.Random(seed).sample(range(len(rows)), min(len(rows), args.epoch * size))
        rows = [rows[i] for i in sorted(keep)]
    lengths = [len(r["input_ids"]) for r in rows]
    shuffled = epoch_batches(lengths, size, seed, 0, False)
    plans = {"grouped": (epoch_batches(lengths, size, seed, 0, True), False), "dynamic": (shuffled, False),
             "pad_max": (shuffled, True)}

    def step(name, i) -> int:
        order, pad = plans[name]
        batch = run.collate([rows[j] for j in order[i]])
        if pad:
            batch = pad_batch(batch, args.seq_len, run.tokenizer.pad_token_id)
        train(run, batch)
        return batch["input_ids"].numel()

    for name in plans:  # warm-up
        step(name, 0)
    walls, tokens = dict.fromkeys(plans, 0.0), dict.fromkeys(plans, 0)
    for i in range(len(shuffled)):
        names = list(plans)
        for name in names[i % 3:] + names[:i % 3]:
            sync(args.device)
            t0 = time.perf_counter()
            tokens[name] += step(name, i)
            sync(args.device)
            walls[name] += time.perf_counter() - t0
    out = {"task": args.task, "examples": len(rows), "batches": len(shuffled), "subset": bool(args.epoch)}
    for name in plans:
        out[name] = {"wall_s": walls[name], "examples_per_s": len(rows) / walls[name], "padded_tokens": tokens[name],
                     "padding_share": 1 - sum(lengths) / tokens[name]}
    return out


# ------------------------------------------------------------------------------------------- memory


def rss_mb() -> float:
    """Resident memory now (Linux), else the peak."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()[0]


def peak_rss_mb() -> tuple[float, str]:
    """Peak resident memory of this process: VmHWM on Linux (ru_maxrss would carry, through exec, the
    peak of the process that started us), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "VmHWM"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 2**20 if sys.platform == "darwin" else peak / 1024), "ru_maxrss"


def memory(args, model: str) -> dict:
    """`bench.py memory`: build one method and run MEMORY_STEPS train steps in this fresh process."""
    runtime = rss_mb()  # the interpreter with torch, transformers, peft and pasta_cli imported
    task = load_task(task_spec(config(args, args.method, model)))
    run = build_run(args, args.method, model, task)
    batches = batches_for(args, run)
    if args.device == "cuda":
        torch.cuda.synchronize()
        loaded = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        loaded = rss_mb()
    for i in range(MEMORY_STEPS):
        train(run, batches[i % len(batches)])
    if args.device == "cuda":
        torch.cuda.synchronize()
        peak, runtime, measure = torch.cuda.max_memory_allocated() / 2**20, 0.0, "torch.cuda.max_memory_allocated"
    else:
        peak, measure = peak_rss_mb()
    return {"method": args.method, "peak_mem_mb": peak, "mem_runtime_mb": runtime, "mem_loaded_mb": loaded,
            "peak_over_runtime_mb": peak - runtime, "mem_measure": measure, "mem_steps": MEMORY_STEPS}


def measure_memory(args, method: str, model: str) -> dict:
    """`bench.py memory --method <method>` in a new interpreter, with this run's model and batch options."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "memory", "--method", method, "--model", model,
           "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--device", args.device,
           "--precision", args.precision, "--dtype", args.dtype]
    for flag, value in (("--threads", args.threads), ("--task", args.task), ("--data-dir", args.data_dir)):
        if value:
            cmd += [flag, str(value)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise PastaError(f"memory child for {method} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------- reporting


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- main


def run_all(args, argv, model: str) -> dict:
    res = {"command": "python benchmarks/bench.py " + shlex.join(argv), "date": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "config": {"model": args.model, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "device": args.device, "precision": args.precision, "dtype": args.dtype, "rounds": args.rounds,
        "steps": args.steps, "warmup": args.warmup,
        "batches": f"{args.task} (real)" if args.task else "synthetic pairs"}}
    mem = {}
    if args.memory:  # first, while this process holds no model (on CUDA: no GPU memory)
        for method in args.methods:
            log(f"memory: {method}")
            mem[method] = measure_memory(args, method, model)
    task = load_task(task_spec(config(args, args.methods[0], model)))
    runs = {}
    for method in args.methods:
        log(f"building {method}")
        runs[method] = build_run(args, method, model, task)
    first = runs[args.methods[0]]
    batches = batches_for(args, first)
    steps = {m: (lambda b, run=run: train(run, b)) for m, run in runs.items()}
    if "pasta" in runs:  # PASTA's forward next to the plain frozen model's, in the same alternation
        plain = plain_model(runs["pasta"])
        steps["inference.pasta"] = lambda b: infer(runs["pasta"], runs["pasta"].model, b, mask=True)
        steps["inference.plain"] = lambda b: infer(runs["pasta"], plain, b, mask=False)
    flops = {name: count_flops(lambda step=step: step(batches[0])) for name, step in steps.items()}
    # the inference rows run under the pasta run's autocast
    computes = {name: dtype_name(runs["pasta" if name.startswith("inference.") else name].amp_dtype) for name in steps}
    shape = peak_shape(first, batches[0])
    peaks = {dtype: [matmul_peak(dtype, *shape, device=args.device)] for dtype in sorted(set(computes.values()))}
    times = alternate(steps, batches, args)
    for dtype in peaks:  # after the timed rounds too: the peak the same minutes allowed
        peaks[dtype].append(matmul_peak(dtype, *shape, device=args.device))
    res["roofline"] = {"matmul": f"({shape[0]} x {shape[1]}) @ ({shape[1]} x {shape[2]})",
                       "peak_gflops": {d: max(p) for d, p in peaks.items()},
                       "peak_gflops_each": peaks, "threads": torch.get_num_threads()}
    res["methods"], res["inference"] = {}, {}
    for name, (walls, cpus) in times.items():
        r = summarise(walls, cpus, len(batches[0]["input_ids"]))
        achieved = flops[name] / r["step_s"] / 1e9
        r.update(gflop_per_step=flops[name] / 1e9, gflops=achieved, compute_dtype=computes[name],
                 peak_share=achieved / res["roofline"]["peak_gflops"][computes[name]])
        if name.startswith("inference."):
            res["inference"][name.split(".", 1)[1]] = r
            continue
        counts = parameter_counts(runs[name].model)
        res["methods"][name] = {**r, "trainable": counts["trainable"], "params": counts,
                                "peak_mem_mb": None, **{k: v for k, v in mem.get(name, {}).items() if k != "method"}}
    if args.epoch is not None:
        log("whole-epoch comparison")
        res["epoch"] = epoch_compare(args, runs.get("pasta") or build_run(args, "pasta", model, task))
    res["machine"] = machine(args.device)
    res["ratios"] = ratios(res)
    return res


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    datasets.disable_progress_bars()  # tokenizing and weight loading, once per method: noise in the log
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_cli("bench.py", lambda: bench(args, argv))


def bench(args, argv: list[str]) -> int:
    """Time every method (or measure memory) and write the record (JSON and markdown)."""
    with tempfile.TemporaryDirectory(prefix="pasta-bench-") as folder:
        model = prepare_model(args.model, folder)
        if args.command == "memory":
            print(json.dumps(memory(args, model)), flush=True)
            return 0
        t0 = time.perf_counter()
        res = run_all(args, argv, model)
        res["wall_s"] = time.perf_counter() - t0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
