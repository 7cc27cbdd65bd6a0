"""pasta-bench: training-step time, throughput, peak memory and trainable counts of PASTA and the baselines.

Every method is built once, in one process, then timed in alternation (round-robin: for R rounds, k
steps of each method in turn, the order rotated every round), so that on a noisy machine the ratios
between methods hold even when absolute times drift. A train step is what the runner does per batch:
zero_grad, forward (autocast when asked), backward, gradient clipping and the AdamW step. The floor
(baselines.apply_floor: nothing trains, gradients still flow down to encoder layer 0's input) has no
optimiser, so its step is forward + backward only: the cost floor of any method that adapts inside
the first layer.

Peak memory is measured apart from the timing, one fresh subprocess per method (a few steps of that
method alone):

* CPU: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the steps, as is (``peak_mem_mb``), next to
  the resident memory after the imports (``mem_runtime_mb``: Python + torch + transformers, no model)
  and after the model is loaded and the method applied (``mem_loaded_mb``);
  ``peak_over_runtime_mb`` = peak - runtime is the analogue of a CUDA allocator peak (weights,
  gradients, optimiser state, activations).
* CUDA: ``torch.cuda.max_memory_allocated`` over the steps (weights included; reset after loading),
  ``mem_loaded_mb`` = ``torch.cuda.memory_allocated`` after loading; ``mem_runtime_mb`` is 0.

Inputs are synthetic batches of the requested shape (random ids, the tokenizer's pair template
[CLS] A [SEP] B [SEP] with the [SEP] between the segments at a random place, special_tokens_mask set),
or real batches of a task (``--task rte --data-dir ../shared/data/glue/RTE``). ``--epoch`` adds a
whole-epoch comparison of the runner's batching on real data (length-grouped + dynamic padding vs
dynamic padding alone vs padding every batch to ``--seq-len``).

Results: JSON (``--output``) and a markdown table beside it (``.md``, also printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

from pasta_cli.errors import PastaError

PASTA_VARIANTS = {"pasta": "full", "pasta_cls_only": "cls_only", "pasta_sep_only": "sep_only",
                  "pasta_shared": "shared"}
TRAIN_METHODS = (*PASTA_VARIANTS, "classifier_only", "full_ft", "bitfit", "lora", "prefix", "floor")
# The order of the round-robin (rotated each round, so cyclically fixed): the methods a target compares
# sit next to each other (pasta-floor, pasta-bitfit, ...), their steps close in time, their noise shared.
TIMING_ORDER = ("floor", "pasta", "bitfit", "lora", "full_ft", "prefix", "pasta_cls_only", "pasta_sep_only",
                "pasta_shared", "classifier_only")
INFER_METHODS = ("pasta", "plain")

# Random-init backbones (no download): BERT shapes with the uncased BERT vocabulary (30522), which the
# packaged MiniLM's tokenizer shares.
MODEL_CONFIGS = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}

# The paper's RTE run, for the wall-time projection: GLUE RTE train/dev sizes, 150 epochs (Table 6).
RTE_TRAIN, RTE_DEV = 2490, 277
DEFAULT_RTE_DIR = "../shared/data/glue/RTE"
PROBE_MARK = "PASTA_BENCH_PROBE "

# The targets the issue sets; (what, numerator, denominator, kind, bound)
TARGETS = (
    ("PASTA train step <= 1.03 x floor", "pasta", "floor", "step", 1.03),
    ("PASTA train step <= 1.02 x BitFit", "pasta", "bitfit", "step", 1.02),
    ("PASTA train step < LoRA", "pasta", "lora", "step", 1.0),
    ("PASTA inference <= 1.03 x plain frozen forward", "pasta", "plain", "infer", 1.03),
    ("PASTA peak training memory <= 0.7 x full_ft", "pasta", "full_ft", "mem", 0.7),
    ("PASTA peak training memory (over runtime) <= 0.7 x full_ft", "pasta", "full_ft", "mem_over", 0.7),
    ("Whole-epoch RTE, default batching >= 1.5 x faster than pad-to-max", "grouped", "pad_max", "epoch", 1.5),
)


# ----------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pasta-bench",
        description="Time PASTA against the baselines and the floor (round-robin, one process); "
                    "write JSON + a markdown table.")
    p.add_argument("--model", default="minilm",
                   help="backbone: minilm (packaged), a hub id or a local folder (default: minilm)")
    p.add_argument("--model-config", default=None,
                   help=f"random-init backbone instead of --model: one of {', '.join(MODEL_CONFIGS)}, or a "
                        "config.json / model folder (no weights needed)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer (default: --model's; minilm's uncased BERT vocabulary with --model-config)")
    p.add_argument("--methods", default=",".join(TRAIN_METHODS),
                   help=f"comma list of training methods (default: all: {','.join(TRAIN_METHODS)})")
    p.add_argument("--no-inference", dest="inference", action="store_false",
                   help="skip the inference comparison (PASTA forward vs the plain frozen forward)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128, help="sequence length of synthetic batches; "
                   "max_length (truncation) of real ones")
    p.add_argument("--single", action="store_true",
                   help="single-sentence template ([CLS] A [SEP]) instead of the pair template")
    p.add_argument("--task", default=None, help="real batches of this task (e.g. rte) instead of synthetic ones")
    p.add_argument("--data-dir", default=None, help="the task's local data folder (e.g. ../shared/data/glue/RTE)")
    p.add_argument("--num-batches", type=int, default=4,
                   help="distinct batches cycled through by every method (default 4)")
    p.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps of each method per round (default: 1 on CPU, 10 on CUDA)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps of each method first (default: 1 on CPU, 5 on CUDA)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="autocast dtype (fp16 adds a GradScaler and needs CUDA)")
    p.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"), help="attention implementation")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (does not affect timing)")
    p.add_argument("--max-grad-norm", type=float, default=1.0,
                   help="gradient clipping in the step, as the runner does (0: off)")
    p.add_argument("--memory", default="auto", choices=("auto", "fork", "spawn", "off"),
                   help="peak memory, one fresh process per method: fork (children of a clean interpreter that "
                        "only imported the libraries), spawn (a new interpreter per method, slower), off; auto "
                        "(default): fork on CPU, spawn on CUDA (a CUDA driver does not survive a fork)")
    p.add_argument("--memory-steps", type=int, default=3, help="steps run by each memory subprocess")
    p.add_argument("--epoch", action="store_true",
                   help="also compare one epoch of PASTA on real data (default RTE): length-grouped + "
                        "dynamic padding vs dynamic padding vs pad-to-max")
    p.add_argument("--epoch-batches", type=int, default=None,
                   help="limit the epoch comparison to a random subset of N x batch-size examples (the same "
                        "examples in every variant); default: the whole epoch")
    p.add_argument("--profile", default="",
                   help="comma list of methods to profile with torch.profiler (top ops into JSON and .md); "
                        "inference.pasta / inference.plain profile the forward-only comparison")
    p.add_argument("--project-epochs", type=int, default=150,
                   help="epochs of the projected RTE run (2490 train + 277 dev examples per epoch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="outputs/bench/bench.json", help="JSON path; the table goes beside it (.md)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="measure nothing: re-evaluate the targets of a result JSON, rewrite its .md (and targets)")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: METHOD:MODE memory child
    p.add_argument("--probe-config", default=None, help=argparse.SUPPRESS)
    p.add_argument("--probe-server", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.probe is None and not args.probe_server and not args.render:
        check_args(args)
    return args


def check_args(args) -> None:
    import torch

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in TRAIN_METHODS]
    if unknown:
        raise PastaError(f"unknown method(s) {unknown}: choose among {', '.join(TRAIN_METHODS)}")
    if not methods and not args.inference and not args.epoch:
        raise PastaError("nothing to measure: --methods is empty, --no-inference and no --epoch")
    args.method_list = list(dict.fromkeys(methods))
    args.profile_list = [m.strip() for m in args.profile.split(",") if m.strip()]
    known = (*TRAIN_METHODS, *(f"inference.{m}" for m in INFER_METHODS))
    bad = [m for m in args.profile_list if m not in known]
    if bad:
        raise PastaError(f"cannot profile {bad}: choose among {', '.join(known)}")
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        raise PastaError("--device cuda but no CUDA GPU is visible: use --device cpu (or auto)")
    args.device = "cuda" if args.device == "cuda" or (args.device == "auto" and cuda) else "cpu"
    if args.steps is None:
        args.steps = 10 if args.device == "cuda" else 1
    if args.warmup is None:
        args.warmup = 5 if args.device == "cuda" else 1
    for key in ("batch_size", "seq_len", "num_batches", "rounds", "steps", "memory_steps"):
        if getattr(args, key) < 1:
            raise PastaError(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        raise PastaError("--warmup must be >= 0")
    if args.seq_len < 5:
        raise PastaError("--seq-len must leave room for the template's special tokens and text (>= 5)")
    if args.precision == "fp16" and args.device != "cuda":
        raise PastaError("--precision fp16 needs CUDA: use fp32 or bf16 on CPU")
    if args.memory == "auto":
        args.memory = "fork" if args.device == "cpu" and hasattr(os, "fork") else "spawn"
    if args.memory == "fork" and not hasattr(os, "fork"):
        raise PastaError("--memory fork needs os.fork (POSIX): use --memory spawn")
    if args.task and not args.data_dir:
        raise PastaError("--task needs --data-dir (the machine is offline): e.g. --task rte "
                         f"--data-dir {DEFAULT_RTE_DIR}")


def log(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- models, batches


def build_tokenizer(args):
    """The backbone's tokenizer. With --model-config and no --tokenizer: the packaged MiniLM's (uncased BERT
    vocabulary), or, where that package is not installed (a bare GPU machine), a stand-in BERT tokenizer
    with the same special-token ids and vocabulary size (synthetic batches need nothing more)."""
    from pasta_cli.backbones import load_tokenizer

    if args.tokenizer or not args.model_config:
        return load_tokenizer(args.tokenizer or args.model)
    try:
        return load_tokenizer("minilm")
    except PastaError as e:
        log(args, f"{e}: using a stand-in BERT tokenizer (uncased BERT special ids, 30522 tokens)")
        return standin_bert_tokenizer()


def standin_bert_tokenizer(vocab_size: int = 30522):
    """A BertTokenizer whose [PAD]/[UNK]/[CLS]/[SEP]/[MASK] ids are bert-base-uncased's (0/100/101/102/103)."""
    from transformers import BertTokenizer

    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    words = [special.get(i, f"[unused{i}]" if i < 999 else f"w{i}") for i in range(vocab_size)]
    words[1000:1002] = ["a", "b"]  # pair_template encodes "a" / "b"
    return BertTokenizer(vocab={w: i for i, w in enumerate(words)}, split_special_tokens=True)


def _random_backbone(args, num_labels: int):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

    spec = args.model_config
    if spec in MODEL_CONFIGS:
        config = BertConfig(vocab_size=30522, max_position_embeddings=max(512, args.seq_len),
                            num_labels=num_labels, **MODEL_CONFIGS[spec])
    elif os.path.exists(spec):
        config = AutoConfig.from_pretrained(spec, num_labels=num_labels)
    else:
        raise PastaError(f"unknown --model-config '{spec}': one of {', '.join(MODEL_CONFIGS)} or a config path")
    config._attn_implementation = args.attn
    with torch.device(args.device):  # initialise where it will run (fast for bert-large on a GPU)
        return AutoModelForSequenceClassification.from_config(config, attn_implementation=args.attn)


def load_backbone(args, num_labels: int = 2, seed: int = 0):
    """A fresh backbone with a classification head (same weights for every method: seeded)."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    if args.model_config:
        return _random_backbone(args, num_labels)
    from pasta_cli.backbones import load_model

    hf_logging.disable_progress_bar()
    return load_model(args.model, "classification", num_labels, attn_implementation=args.attn)


def build_method(args, method: str, tokenizer, pair: bool, seed: int = 0):
    """(model, optimizer or None, trainable count) for a training method, on args.device, in train mode."""
    import torch

    from pasta_cli import baselines
    from pasta_cli.methods import apply_method, counts

    model = load_backbone(args, seed=seed)
    if method in PASTA_VARIANTS:
        model = apply_method(model, tokenizer, {"name": "pasta", "variant": PASTA_VARIANTS[method]}, pair)
    elif method == "floor":
        model = baselines.apply_floor(model)
    else:
        cfg = {"name": method}
        if method == "lora":
            cfg.update(r=8, alpha=16, dropout=0.1)
        elif method == "prefix":
            cfg.update(length=20, dropout=0.1)
        model = apply_method(model, tokenizer, cfg, pair)
    model = model.to(args.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr) if params else None
    trainable = counts(model)["trainable"] if method != "floor" else sum(p.numel() for p in params)
    return model, optimizer, trainable


def build_inference(args, which: str, tokenizer, pair: bool, seed: int = 0):
    """(model in eval mode, trainable count): PASTA (full) or the plain frozen backbone (no hook at all)."""
    from pasta_cli.pasta import add_pasta, parameter_counts

    model = load_backbone(args, seed=seed)
    if which == "pasta":
        add_pasta(model, tokenizer, "full", pair=pair)
        trainable = parameter_counts(model)["trainable"]
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        trainable = 0
    return model.to(args.device).eval(), trainable


def pair_template(tokenizer, pair: bool):
    """The tokenizer's template as a list of ('special', id, type) / ('A'|'B', None, type) items,
    read off a real encoding of "a" ("b") (works for BERT's [CLS] A [SEP] B [SEP] and RoBERTa's <s> A </s></s> B </s>)."""
    texts = ("a", "b") if pair else ("a",)
    enc = tokenizer(*texts, return_special_tokens_mask=True, return_token_type_ids=True)
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    types = enc.get("token_type_ids") or [0] * len(ids)
    template, segment = [], 0
    for i, s, t in zip(ids, special, types):
        if s:
            template.append(("special", i, t))
        elif not template or template[-1][0] == "special":  # a text token after a special: a new segment
            template.append(("AB"[segment], None, t))
            segment += 1
    return template


def synthetic_batches(tokenizer, batch_size: int, seq_len: int, pair: bool, n: int, seed: int):
    """n random batches of exactly (batch_size, seq_len), no padding, in the tokenizer's template;
    with a pair, segment A takes a random share of the text (so the middle separator moves)."""
    import torch

    template = pair_template(tokenizer, pair)
    n_special = sum(1 for kind, _, _ in template if kind == "special")
    text = seq_len - n_special
    if text < (2 if pair else 1):
        raise PastaError(f"--seq-len {seq_len} leaves no room for text beside {n_special} special tokens")
    g = torch.Generator().manual_seed(seed)
    banned = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    low = min(1000, len(tokenizer) // 2)  # skip [unused*] / control ids at the start of the vocabulary
    batches = []
    for _ in range(n):
        ids = torch.randint(low, len(tokenizer), (batch_size, seq_len), generator=g)
        ids[torch.isin(ids, banned)] = low
        types = torch.zeros(batch_size, seq_len, dtype=torch.long)
        special = torch.zeros(batch_size, seq_len, dtype=torch.long)
        for r in range(batch_size):
            a = int(torch.randint(1, text, (1,), generator=g)) if pair else text
            lens = {"A": a, "B": text - a}
            pos = 0
            for kind, tok_id, t in template:
                width = 1 if kind == "special" else lens[kind]
                if kind == "special":
                    ids[r, pos] = tok_id
                    special[r, pos] = 1
                types[r, pos:pos + width] = t
                pos += width
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "special_tokens_mask": special,
                 "labels": torch.randint(0, 2, (batch_size,), generator=g)}
        if "token_type_ids" in tokenizer.model_input_names:
            batch["token_type_ids"] = types
        batches.append(batch)
    return batches


def load_task_data(args, task_name: str, data_dir: str, tokenizer, max_length: int):
    """(task, encoded splits, collate) of a local task folder."""
    from pasta_cli.config import compose
    from pasta_cli.tasks import encode, load_task, make_collator

    if not Path(data_dir).is_dir():
        raise PastaError(f"data folder {data_dir} is absent")
    cfg = compose([f"task={task_name}", f"task.data_dir={Path(data_dir).resolve()}"]).task
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    task = load_task(cfg)
    return task, encode(task, tokenizer, max_length), make_collator(task, tokenizer)


def task_batches(args, tokenizer):
    """(--num-batches batches spread evenly over the runner's default (length-grouped) epoch order, pair)."""
    from pasta_cli.trainer import epoch_batches

    task, data, collate = load_task_data(args, args.task, args.data_dir, tokenizer, args.seq_len)
    if task.kind != "classification":
        raise PastaError(f"--task {args.task}: the benchmark's models have a classification head")
    rows = data["train"].to_list()
    order = epoch_batches([len(r["input_ids"]) for r in rows], args.batch_size, args.seed, 0, True)
    full = [b for b in order if len(b) == args.batch_size] or order
    step = max(1, len(full) // args.num_batches)
    picked = full[::step][:args.num_batches]
    return [collate([rows[i] for i in b]) for b in picked], task.pair


# ----------------------------------------------------------------------------------------- the steps


class Runner:
    """One method's model with what a train (or inference) step needs."""

    def __init__(self, name, model, optimizer, trainable, args, infer=False):
        import torch

        self.name, self.model, self.optimizer, self.trainable, self.infer = name, model, optimizer, trainable, infer
        self.device = args.device
        self.wants_mask = hasattr(model, "pasta")  # as the runner: only PASTA models get special_tokens_mask
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.max_grad_norm = args.max_grad_norm
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
        self.autocast = (lambda: torch.autocast(self.device, dtype=dtype)) if dtype else nullcontext
        self.scaler = torch.amp.GradScaler("cuda") if args.precision == "fp16" and optimizer else None
        self.times: list[list[float]] = []  # per round: step wall times (s)
        self.cpu_times: list[list[float]] = []  # per round: step CPU times of this process (s)

    def inputs(self, batch):
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if not self.wants_mask:
            batch.pop("special_tokens_mask", None)
        if self.infer:
            batch.pop("labels", None)
        return batch

    def step(self, batch):
        import torch

        inputs = self.inputs(batch)
        if self.infer:
            with torch.inference_mode(), self.autocast():
                return self.model(**inputs).logits
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.model(**inputs).loss
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.optimizer is None:  # the floor: no weight to update
            return loss
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return loss


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(runner, batch) -> tuple[float, float]:
    """(wall, CPU time of this process) of one step."""
    _sync(runner.device)
    c0, t0 = time.process_time(), time.perf_counter()
    runner.step(batch)
    _sync(runner.device)
    return time.perf_counter() - t0, time.process_time() - c0


def round_robin(runners: list[Runner], batches, args) -> None:
    """Warm up every runner, then R rounds of k timed steps each, the starting method rotated per round."""
    for r in runners:
        for i in range(args.warmup):
            r.step(batches[i % len(batches)])
    _sync(args.device)
    n = len(runners)
    for rnd in range(args.rounds):
        t_round = time.perf_counter()
        for j in range(n):
            r = runners[(rnd + j) % n]
            pairs = [timed(r, batches[(rnd * args.steps + s) % len(batches)]) for s in range(args.steps)]
            r.times.append([w for w, _ in pairs])
            r.cpu_times.append([c for _, c in pairs])
        log(args, f"  round {rnd + 1}/{args.rounds}: {time.perf_counter() - t_round:.1f}s")


def summary(runner: Runner, batch_size: int) -> dict:
    flat = [t for rnd in runner.times for t in rnd]
    med = statistics.median(flat)
    q = statistics.quantiles(flat, n=4) if len(flat) >= 2 else [med, med, med]
    return {
        "step_s": med,
        "examples_per_s": batch_size / med,
        "peak_mem_mb": None,
        "trainable": runner.trainable,
        "step_s_iqr": [q[0], q[2]],
        "step_s_min": min(flat),
        "round_medians_s": [statistics.median(rnd) for rnd in runner.times],
        "timed_steps": len(flat),
        # CPU time of the process per step: on a shared CPU it does not count the time others took
        "cpu_step_s": statistics.median(c for rnd in runner.cpu_times for c in rnd),
        "cpu_step_s_min": min(c for rnd in runner.cpu_times for c in rnd),
        "round_cpu_medians_s": [statistics.median(rnd) for rnd in runner.cpu_times],
    }


# -------------------------------------------------------------------------------------------- memory


def _rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _maxrss_mb()


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _vmhwm_mb() -> float | None:
    """Linux's peak RSS of this address space alone (VmHWM). Unlike ru_maxrss it does not inherit, through
    exec, the peak of the process that spawned us (Linux keeps the pre-exec peak in ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def probe_child(args) -> dict:
    """Run in a fresh process: build one method and run a few steps; report its memory."""
    import torch

    import pasta_cli.baselines  # noqa: F401  (everything imported before the runtime baseline)
    import pasta_cli.methods  # noqa: F401
    import peft  # noqa: F401

    method, mode = args.probe.split(":")
    runtime = _rss_mb()
    cuda = args.device == "cuda"
    tokenizer = build_tokenizer(args)
    batches, pair = get_batches(args, tokenizer)
    if mode == "infer":
        model, trainable = build_inference(args, method, tokenizer, pair, args.seed)
        runner = Runner(method, model, None, trainable, args, infer=True)
    else:
        model, optimizer, trainable = build_method(args, method, tokenizer, pair, args.seed)
        runner = Runner(method, model, optimizer, trainable, args)
    if cuda:
        torch.cuda.synchronize()
        loaded = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        loaded = _rss_mb()
    load_peak = _maxrss_mb()
    for i in range(args.memory_steps):
        runner.step(batches[i % len(batches)])
    measure = "torch.cuda.max_memory_allocated" if cuda else "getrusage ru_maxrss"
    if cuda:
        torch.cuda.synchronize()
        peak, runtime = torch.cuda.max_memory_allocated() / 2**20, 0.0
    else:
        peak, hwm = _maxrss_mb(), _vmhwm_mb()
        if hwm is not None and peak > hwm + 1:  # a spawned child: ru_maxrss holds the spawner's peak
            peak, measure = hwm, "VmHWM (ru_maxrss inherited the spawning process's peak through exec)"
    return {"method": method, "mode": mode, "peak_mem_mb": peak, "mem_loaded_mb": loaded,
            "mem_runtime_mb": runtime, "peak_over_runtime_mb": peak - runtime,
            "maxrss_after_load_mb": load_peak, "measure": measure}


def _probe_config(args) -> str:
    return json.dumps({k: v for k, v in vars(args).items() if k not in ("probe", "probe_config", "probe_server")})


def _probe_result(lines) -> dict | None:
    for line in reversed(lines):
        if line.startswith(PROBE_MARK):
            return json.loads(line[len(PROBE_MARK):])
    return None


def probe_memory_spawn(args, method: str, mode: str) -> dict:
    """Memory of one method, measured in a fresh interpreter (imports included in its start-up)."""
    cmd = [sys.executable, "-m", "pasta_cli.bench", "--probe", f"{method}:{mode}", "--probe-config", _probe_config(args)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    res = _probe_result(proc.stdout.splitlines())
    if res is None or "error" in res:
        tail = (res or {}).get("error") or (proc.stderr or proc.stdout)[-2000:]
        raise PastaError(f"memory probe for {method} ({mode}) failed (exit {proc.returncode}):\n{tail}")
    return res


class ProbeServer:
    """A fresh interpreter that only imports torch/transformers/peft/pasta_cli (no tensor op, no CUDA
    initialisation), then forks one child per request: each method is measured in a new process
    whose memory starts at the bare runtime, without paying the imports again."""

    def __init__(self, args):
        import tempfile

        self.stderr = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, "-m", "pasta_cli.bench", "--probe-server", "--probe-config", _probe_config(args)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env, bufsize=1)

    def probe(self, method: str, mode: str) -> dict:
        self.proc.stdin.write(f"{method}:{mode}\n")
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith(PROBE_MARK):
                break
        res = _probe_result(lines)
        if res is None or "error" in res:
            self.stderr.seek(0)
            tail = (res or {}).get("error") or self.stderr.read()[-2000:]
            raise PastaError(f"memory probe for {method} ({mode}) failed:\n{tail}")
        return res

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.stderr.close()


def serve_probes(args) -> None:
    """--probe-server: read METHOD:MODE lines, fork a child per line, the child prints one result line."""
    import pasta_cli.baselines  # noqa: F401  (all imports now: the children inherit them)
    import pasta_cli.methods  # noqa: F401
    import pasta_cli.pasta  # noqa: F401
    import pasta_cli.tasks  # noqa: F401
    import pasta_cli.trainer  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModelForSequenceClassification, BertConfig  # noqa: F401

    for line in sys.stdin:
        request = line.strip()
        if not request:
            continue
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the child: measure, print, leave without running the parent's clean-up
            code = 0
            try:
                args.probe = request
                if args.threads:
                    torch.set_num_threads(args.threads)
                out = probe_child(args)
            except BaseException as e:  # noqa: BLE001  (reported to the parent)
                import traceback

                out, code = {"error": "".join(traceback.format_exception(e))[-3000:]}, 1
            sys.stdout.write(PROBE_MARK + json.dumps(out) + "\n")
            sys.stdout.flush()
            os._exit(code)
        os.waitpid(pid, 0)


# -------------------------------------------------------------------------------------- side studies


def injection_cost(args, runner: Runner, batch, repeats: int = 20) -> dict:
    """The cost of PASTA's own work, isolated, on a hidden state of the batch's shape: one `locate`
    (torch.nonzero) per forward, and the injection at every layer, forward + backward, as pasta.py does
    it (out-of-place index_put, accumulate=True) next to alternative formulations, for comparison:

    * index_put_inplace: the same, in place (no copy of the hidden state per layer);
    * index_add: a flat out-of-place index_add over (row * length + col);
    * dense: no index list at all (no torch.nonzero, so no host-device sync on a GPU): a (batch, length)
      map of vector ids, `hidden + table[layer][map]` with a zero row for non-slot tokens.

    Each figure is the median of `repeats`, minus the scaffold (a copy + sum + backward of the hidden
    state) that every variant shares."""
    import torch

    inj = runner.model.pasta
    inputs = runner.inputs(batch)
    ids, mask, special = inputs["input_ids"], inputs.get("attention_mask"), inputs.get("special_tokens_mask")
    layers, hidden_size, length = inj.num_layers, inj.vectors.shape[-1], ids.shape[1]
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16 if args.precision == "fp16" else torch.float32
    hidden = torch.randn(*ids.shape, hidden_size, device=args.device, dtype=dtype, requires_grad=True)
    was_training = runner.model.training
    runner.model.train()
    inj.locate(ids, mask, special)
    rows, cols, vec = inj._where
    dense_map = torch.full(ids.shape, inj.num_vectors, dtype=torch.long, device=ids.device)
    dense_map[rows, cols] = vec

    def locate():
        inj.locate(ids, mask, special)

    def start():  # a non-leaf copy, so that in-place variants are allowed
        return hidden * 1

    def index_put():
        h = start()
        for layer in range(layers):
            h = inj.inject(layer, h)
        h.sum().backward()

    def index_put_inplace():
        h = start()
        for layer in range(layers):
            added = inj.dropout(inj.vectors[layer, vec]).to(h.dtype)
            h = h.index_put_((rows, cols), added, accumulate=True)
        h.sum().backward()

    def index_add():
        flat = rows * length + cols
        h = start()
        for layer in range(layers):
            added = inj.dropout(inj.vectors[layer, vec]).to(h.dtype)
            h = h.reshape(-1, hidden_size).index_add(0, flat, added).view_as(hidden)
        h.sum().backward()

    def dense():
        h = start()
        table = torch.cat([inj.vectors, inj.vectors.new_zeros(layers, 1, hidden_size)], dim=1)
        for layer in range(layers):
            h = h + inj.dropout(table[layer]).to(h.dtype)[dense_map]
        h.sum().backward()

    def scaffold():
        start().sum().backward()

    def measure(fn):
        fn()
        out = []
        for _ in range(repeats):
            _sync(args.device)
            t0 = time.perf_counter()
            fn()
            _sync(args.device)
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    variants = (("locate", locate), ("index_put", index_put), ("index_put_inplace", index_put_inplace),
                ("index_add", index_add), ("dense", dense), ("scaffold", scaffold))
    times = {}
    for _ in range(2):  # alternate the variants; keep the lower median of two passes
        for name, fn in variants:
            t = measure(fn)
            times[name] = min(times.get(name, t), t)
    inj.vectors.grad = None
    runner.model.train(was_training)
    base = times["scaffold"]
    return {
        "locate_ms": 1000 * times["locate"],
        "inject_all_layers_fwd_bwd_ms": 1000 * (times["index_put"] - base),
        "alternatives_fwd_bwd_ms": {k: 1000 * (times[k] - base) for k in ("index_put_inplace", "index_add", "dense")},
        "scaffold_ms": 1000 * base,
        "layers": layers,
        "slots_per_batch": int(rows.numel()),
        # index_put is out of place: one new hidden state per layer, kept until the backward
        "inject_extra_alloc_mb": layers * hidden.numel() * hidden.element_size() / 2**20,
        "note": f"median of {repeats} repeats minus the shared scaffold (copy + sum + backward of the hidden state)",
    }


def profile_method(args, runner: Runner, batches, steps: int, top: int = 15) -> list[dict]:
    """torch.profiler over `steps` train steps: the top ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    runner.step(batches[0])
    with profile(activities=activities, profile_memory=True) as prof:
        for i in range(steps):
            runner.step(batches[i % len(batches)])
        _sync(args.device)
    cuda = args.device == "cuda"
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    mem = "self_device_memory_usage" if cuda else "self_cpu_memory_usage"
    events = prof.key_averages()
    total = sum(getattr(e, key, 0) for e in events) or 1

    def row(e):
        return {"op": e.key, "self_ms_per_step": getattr(e, key, 0) / 1000 / steps,
                "self_share": getattr(e, key, 0) / total, "calls_per_step": e.count / steps,
                "self_alloc_mb_per_step": getattr(e, mem, 0) / 2**20 / steps}

    by_time = [row(e) for e in sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:top]]
    by_mem = [row(e) for e in sorted(events, key=lambda e: getattr(e, mem, 0), reverse=True)[:top // 2]]
    return {"by_time": by_time, "by_memory": by_mem}


def epoch_compare(args, tokenizer) -> dict:
    """One epoch of PASTA training on real data, three batchings, interleaved batch by batch:
    grouped (the runner's default: length-grouped order + dynamic padding), dynamic (random order +
    dynamic padding), pad_max (random order, every batch padded to --seq-len: the official code)."""
    import random

    import torch

    from pasta_cli.trainer import epoch_batches, pad_batch

    task_name = args.task or "rte"
    data_dir = args.data_dir or DEFAULT_RTE_DIR
    if not Path(data_dir).is_dir():
        msg = f"epoch comparison skipped: data folder {data_dir} is absent (give --data-dir)"
        print(msg, file=sys.stderr)
        return {"skipped": msg}
    task, data, collate = load_task_data(args, task_name, data_dir, tokenizer, args.seq_len)
    rows = data["train"].to_list()
    if args.epoch_batches:  # the same random subset of examples for every batching
        keep = sorted(random.Random(args.seed).sample(range(len(rows)),
                                                      min(len(rows), args.epoch_batches * args.batch_size)))
        rows = [rows[i] for i in keep]
    lengths = [len(r["input_ids"]) for r in rows]
    grouped = epoch_batches(lengths, args.batch_size, args.seed, 0, True)
    shuffled = epoch_batches(lengths, args.batch_size, args.seed, 0, False)
    pad_id = tokenizer.pad_token_id
    model, optimizer, trainable = build_method(args, "pasta", tokenizer, task.pair, args.seed)
    runner = Runner("pasta", model, optimizer, trainable, args)
    plans = {
        "grouped": (grouped, lambda b: collate(b)),
        "dynamic": (shuffled, lambda b: collate(b)),
        "pad_max": (shuffled, lambda b: pad_batch(collate(b), args.seq_len, pad_id)),
    }
    walls = {k: 0.0 for k in plans}
    tokens = {k: 0 for k in plans}
    real = sum(lengths)
    for name, (order, make) in plans.items():  # warm-up: one batch of each
        runner.step(make([rows[i] for i in order[0]]))
    log(args, f"epoch comparison: {len(rows)} examples, {len(grouped)} batches per variant")
    t_all = time.perf_counter()
    for b in range(len(grouped)):
        names = list(plans)
        names = names[b % 3:] + names[:b % 3]  # rotate which variant goes first
        for name in names:
            order, make = plans[name]
            _sync(args.device)
            t0 = time.perf_counter()
            batch = make([rows[i] for i in order[b]])
            runner.step(batch)
            _sync(args.device)
            walls[name] += time.perf_counter() - t0
            tokens[name] += batch["input_ids"].numel()
        if (b + 1) % 10 == 0:
            log(args, f"  epoch batches {b + 1}/{len(grouped)}: {time.perf_counter() - t_all:.0f}s")
    out = {"task": task_name, "data_dir": str(data_dir), "examples": len(rows), "batches": len(grouped),
           "batch_size": args.batch_size, "max_length": args.seq_len,
           "subset": bool(args.epoch_batches), "real_tokens": real}
    for name in plans:
        out[name] = {"wall_s": walls[name], "examples_per_s": len(rows) / walls[name],
                     "padded_tokens": tokens[name], "padding_share": 1 - real / tokens[name]}
    out["speedup_grouped_vs_pad_max"] = walls["pad_max"] / walls["grouped"]
    out["speedup_grouped_vs_dynamic"] = walls["dynamic"] / walls["grouped"]
    out["speedup_dynamic_vs_pad_max"] = walls["pad_max"] / walls["dynamic"]
    out["note"] = ("wall_s sums per-batch collate + train step, the three variants interleaved batch by batch "
                   "on one PASTA model; same examples in each")
    return out


# ---------------------------------------------------------------------------------------- reporting


def machine_info(args) -> dict:
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": args.device}
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    try:
        info["load_avg_at_end"] = list(os.getloadavg())
    except OSError:
        pass
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _ratio(a, b):
    return a / b if a is not None and b else None


def _round_ratios(res, a: str, b: str, section="methods", key="round_medians_s"):
    ra, rb = res[section].get(a, {}).get(key), res[section].get(b, {}).get(key)
    if not ra or not rb:
        return None
    return [x / y for x, y in zip(ra, rb)]


def evaluate_targets(res: dict) -> list[dict]:
    m, inf, ep = res.get("methods", {}), res.get("inference", {}), res.get("epoch") or {}
    out = []
    for what, num, den, kind, bound in TARGETS:
        value, spread, cpu, fastest, cpu_fastest = None, None, None, None, None
        section = {"step": m, "infer": inf}.get(kind)
        if section is not None and num in section and den in section:
            a, b = section[num], section[den]
            value = a["step_s"] / b["step_s"]
            spread = _round_ratios(res, num, den, "methods" if kind == "step" else "inference")
            fastest = _ratio(a.get("step_s_min"), b.get("step_s_min"))
            cpu = _ratio(a.get("cpu_step_s"), b.get("cpu_step_s"))
            cpu_fastest = _ratio(_cpu_min(a), _cpu_min(b))
        elif kind == "mem" and num in m and den in m:
            value = _ratio(m[num].get("peak_mem_mb"), m[den].get("peak_mem_mb"))
        elif kind == "mem_over" and num in m and den in m:
            value = _ratio(m[num].get("peak_over_runtime_mb"), m[den].get("peak_over_runtime_mb"))
        elif kind == "epoch" and "grouped" in ep:
            value = ep["pad_max"]["wall_s"] / ep["grouped"]["wall_s"]
        if value is None:
            out.append({"target": what, "value": None, "bound": bound, "status": "n/a"})
            continue
        if kind == "epoch":  # a speed-up: higher is better
            ok, margin = value >= bound, value - bound
        elif bound == 1.0 and kind == "step":  # strictly faster
            ok, margin = value < 1.0, bound - value
        else:
            ok, margin = value <= bound, bound - value
        row = {"target": what, "value": value, "bound": bound, "status": "pass" if ok else "miss",
               "margin": margin}
        strict = bound == 1.0 and kind == "step"
        for key, v in (("min", fastest), ("cpu", cpu), ("cpu_min", cpu_fastest)):
            if v is not None:
                row[f"{key}_value"] = v
                row[f"{key}_status"] = "pass" if (v < 1.0 if strict else v <= bound) else "miss"
        if spread:
            row["per_round_range"] = [min(spread), max(spread)]
            row["per_round_median"] = statistics.median(spread)
        out.append(row)
    return out


def _cpu_min(r: dict):
    if r.get("cpu_step_s_min") is not None:
        return r["cpu_step_s_min"]
    per_round = r.get("round_cpu_medians_s")  # runs from before cpu_step_s_min was recorded (1 step per round)
    return min(per_round) if per_round else None


def _fmt(x, spec="{:.3f}"):
    return "–" if x is None else spec.format(x)


def render_markdown(res: dict) -> str:
    cfg, mach = res["config"], res["machine"]
    m, inf = res.get("methods", {}), res.get("inference", {})
    lines = [f"# pasta-bench ({res['date']})", "",
             f"`{res['command']}`", "",
             f"Backbone **{cfg['backbone']}**, batch {cfg['batch_size']} x length {cfg['seq_len']} "
             f"({cfg['inputs']}), {cfg['precision']}, attention {cfg['attn']}, device {mach['device']}"
             + (f" ({mach.get('gpu')})" if mach.get("gpu") else "")
             + f"; {cfg['rounds']} rounds x {cfg['steps']} steps per method, round-robin, {cfg['warmup']} warm-up steps.",
             f"Machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']} "
             f"({mach['torch_threads']} threads), transformers {mach['transformers']}.", ""]
    full, floor = m.get("full_ft", {}).get("step_s"), m.get("floor", {}).get("step_s")
    full_mem = m.get("full_ft", {}).get("peak_mem_mb")
    full_over = m.get("full_ft", {}).get("peak_over_runtime_mb")
    if m:
        lines += ["## Training step (forward + backward + optimiser step)", "",
                  "| method | trainable | step ms (median) | IQR ms | examples/s | x full_ft | x floor "
                  "| CPU ms | CPU x floor | peak MB | peak x full_ft | peak−runtime MB | (peak−runtime) x full_ft |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        cpu_floor = m.get("floor", {}).get("cpu_step_s")
        for name, r in m.items():
            iqr = r.get("step_s_iqr") or [None, None]
            lines.append(
                f"| {name} | {r['trainable']:,} | {_fmt(1000 * r['step_s'], '{:.1f}')} | "
                f"{_fmt(iqr[0] and 1000 * iqr[0], '{:.0f}')}–{_fmt(iqr[1] and 1000 * iqr[1], '{:.0f}')} | "
                f"{_fmt(r['examples_per_s'], '{:.1f}')} | {_fmt(_ratio(r['step_s'], full))} | "
                f"{_fmt(_ratio(r['step_s'], floor))} | {_fmt(r.get('cpu_step_s') and 1000 * r['cpu_step_s'], '{:.0f}')} | "
                f"{_fmt(_ratio(r.get('cpu_step_s'), cpu_floor))} | {_fmt(r.get('peak_mem_mb'), '{:.0f}')} | "
                f"{_fmt(_ratio(r.get('peak_mem_mb'), full_mem))} | {_fmt(r.get('peak_over_runtime_mb'), '{:.0f}')} | "
                f"{_fmt(_ratio(r.get('peak_over_runtime_mb'), full_over))} |")
        lines.append("")
        some = next(iter(m.values()))
        if some.get("mem_measure"):
            lines += [f"Memory: {some['mem_measure']} ({cfg['memory_steps']} steps of that method alone); "
                      f"'peak−runtime' subtracts the resident memory of the bare runtime (imports, no model: "
                      f"{_fmt(some.get('mem_runtime_mb'), '{:.0f}')} MB); after loading the model: "
                      f"{_fmt(some.get('mem_loaded_mb'), '{:.0f}')} MB.", ""]
    if inf:
        plain = inf.get("plain", {}).get("step_s")
        cpu_plain = inf.get("plain", {}).get("cpu_step_s")
        lines += ["## Inference (forward only, eval mode, inference_mode)", "",
                  "| model | step ms (median) | examples/s | x plain | CPU ms | CPU x plain | peak MB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in inf.items():
            lines.append(f"| {name} | {_fmt(1000 * r['step_s'], '{:.1f}')} | {_fmt(r['examples_per_s'], '{:.1f}')} | "
                         f"{_fmt(_ratio(r['step_s'], plain))} | "
                         f"{_fmt(r.get('cpu_step_s') and 1000 * r['cpu_step_s'], '{:.0f}')} | "
                         f"{_fmt(_ratio(r.get('cpu_step_s'), cpu_plain))} | {_fmt(r.get('peak_mem_mb'), '{:.0f}')} |")
        lines.append("")
    if res.get("targets"):
        cpu_col = mach["device"] == "cpu"
        lines += ["## Targets", "",
                  "| target | measured (medians) | bound | status | margin | per-round median | per-round range "
                  "| fastest steps | status (fastest)" + (" | CPU time (medians) | CPU time (fastest) |" if cpu_col else " |"),
                  "|---|---:|---:|---|---:|---:|---|---:|---|" + ("---:|---:|" if cpu_col else "")]
        for t in res["targets"]:
            rng = t.get("per_round_range")
            line = (f"| {t['target']} | {_fmt(t['value'])} | {t['bound']} | {t['status']} | "
                    f"{_fmt(t.get('margin'), '{:+.3f}')} | {_fmt(t.get('per_round_median'))} | "
                    f"{'–' if not rng else f'{rng[0]:.3f}–{rng[1]:.3f}'} | {_fmt(t.get('min_value'))} | "
                    f"{t.get('min_status', '–')} |")
            if cpu_col:
                line += f" {_fmt(t.get('cpu_value'))} | {_fmt(t.get('cpu_min_value'))} |"
            lines.append(line)
        lines += ["", "measured: ratio of the wall-time medians (memory: of the peaks), the status the targets are "
                      "judged by; per-round: the ratio of the two methods' wall-time medians within each round (they "
                      "ran next to each other); fastest steps: ratio of the minimum step times, the least disturbed "
                      "steps (the usual estimator on a shared machine)"
                  + ("; CPU time: of this process's CPU time per step (time.process_time), which leaves out the time "
                     "other processes held the cores (not their contention for caches and memory bandwidth)."
                     if cpu_col else "."), ""]
        lines.append("")
    if res.get("injection"):
        i = res["injection"]
        lines += ["## PASTA's own work, isolated", "",
                  f"locate (once per forward): {i['locate_ms']:.3f} ms; injection at all {i['layers']} layers, "
                  f"forward + backward: {i['inject_all_layers_fwd_bwd_ms']:.3f} ms as pasta.py does it (out-of-place "
                  f"index_put, accumulate=True; {i['slots_per_batch']} slots per batch); it allocates "
                  f"{i['inject_extra_alloc_mb']:.1f} MB of new hidden states per forward. Alternatives: "
                  + ", ".join(f"{k} {v:.3f} ms" for k, v in i["alternatives_fwd_bwd_ms"].items()) + "."
                  + (f" PASTA step - floor step: {1000 * (m['pasta']['step_s'] - floor):.1f} ms (medians), "
                     f"{1000 * (m['pasta']['step_s_min'] - m['floor']['step_s_min']):.1f} ms (fastest steps)."
                     if "pasta" in m and floor and m["pasta"].get("step_s_min") else ""), ""]
    if res.get("projection"):
        p = res["projection"]
        lines += [f"## Projected wall time of the paper's RTE run ({p['epochs']} epochs)", "",
                  f"{p['train_examples']} train examples x {p['epochs']} epochs at the measured examples/s "
                  f"(every batch {cfg['seq_len']} tokens long), plus {p['eval_examples']} dev examples per epoch at "
                  "the inference rate.", "", "| method | examples/s | train | eval | total |", "|---|---:|---:|---:|---:|"]
        for name, r in p["methods"].items():
            lines.append(f"| {name} | {r['examples_per_s']:.1f} | {_hms(r['train_s'])} | {_hms(r['eval_s'])} | "
                         f"{_hms(r['total_s'])} |")
        lines.append("")
    ep = res.get("epoch")
    if ep:
        lines += ["## Whole epoch on real data (PASTA)", ""]
        if "skipped" in ep:
            lines += [ep["skipped"], ""]
        else:
            lines += [f"{ep['task']}: {ep['examples']} examples, {ep['batches']} batches of {ep['batch_size']}, "
                      f"max length {ep['max_length']}" + (" (random subset of the epoch)" if ep["subset"] else "")
                      + f". {ep['note']}.", "",
                      "| batching | wall s | examples/s | padded tokens | padding share | speed-up vs pad_max |",
                      "|---|---:|---:|---:|---:|---:|"]
            for name in ("grouped", "dynamic", "pad_max"):
                r = ep[name]
                lines.append(f"| {name} | {r['wall_s']:.1f} | {r['examples_per_s']:.1f} | {r['padded_tokens']:,} | "
                             f"{100 * r['padding_share']:.1f}% | {ep['pad_max']['wall_s'] / r['wall_s']:.2f}x |")
            lines.append("")
    for name, prof in (res.get("profile") or {}).items():
        lines += [f"## Profile: {name} (top ops by self time, then by memory kept, per step)", "",
                  "| op | self ms/step | share | calls/step | net alloc MB/step |", "|---|---:|---:|---:|---:|"]
        for r in prof["by_time"]:
            lines.append(f"| `{r['op']}` | {r['self_ms_per_step']:.2f} | {100 * r['self_share']:.1f}% | "
                         f"{r['calls_per_step']:.0f} | {r['self_alloc_mb_per_step']:.1f} |")
        lines.append("| **by memory:** | | | | |")
        for r in prof["by_memory"]:
            lines.append(f"| `{r['op']}` | {r['self_ms_per_step']:.2f} | {100 * r['self_share']:.1f}% | "
                         f"{r['calls_per_step']:.0f} | {r['self_alloc_mb_per_step']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def _hms(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def projection(res: dict, epochs: int) -> dict:
    inf = res.get("inference", {})
    out = {"epochs": epochs, "train_examples": RTE_TRAIN, "eval_examples": RTE_DEV, "methods": {}}
    for name, r in res.get("methods", {}).items():
        if name == "floor":
            continue
        ref = inf.get("pasta" if name.startswith("pasta") else "plain") or inf.get("plain")
        train_s = RTE_TRAIN * epochs / r["examples_per_s"]
        eval_s = RTE_DEV * epochs / ref["examples_per_s"] if ref else None
        out["methods"][name] = {"examples_per_s": r["examples_per_s"], "train_s": train_s, "eval_s": eval_s,
                                "total_s": train_s + (eval_s or 0.0)}
    return out


# -------------------------------------------------------------------------------------------- main


def get_batches(args, tokenizer):
    if args.task:
        return task_batches(args, tokenizer)
    pair = not args.single
    return synthetic_batches(tokenizer, args.batch_size, args.seq_len, pair, args.num_batches, args.seed), pair


def run(args, argv) -> dict:
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    tokenizer = build_tokenizer(args)
    batches, pair = get_batches(args, tokenizer)
    backbone = f"random-init {args.model_config}" if args.model_config else args.model
    res = {
        "command": "pasta-bench " + " ".join(shlex.quote(a) for a in argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"backbone": backbone, "model": args.model, "model_config": args.model_config,
                   "batch_size": args.batch_size, "seq_len": args.seq_len, "pair": pair,
                   "inputs": f"task {args.task} ({args.data_dir})" if args.task else "synthetic",
                   "num_batches": len(batches), "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
                   "precision": args.precision, "attn": args.attn, "device": args.device,
                   "max_grad_norm": args.max_grad_norm, "memory": args.memory, "memory_steps": args.memory_steps,
                   "methods": args.method_list, "inference": args.inference, "seed": args.seed,
                   "lora": {"r": 8, "alpha": 16, "targets": "query,value"}, "prefix": {"length": 20}},
        "methods": {}, "inference": {},
    }

    runners = []
    for name in args.method_list:
        log(args, f"building {name}")
        model, optimizer, trainable = build_method(args, name, tokenizer, pair, args.seed)
        runners.append(Runner(name, model, optimizer, trainable, args))
    infer = []
    if args.inference:
        for name in INFER_METHODS:
            log(args, f"building inference:{name}")
            model, trainable = build_inference(args, name, tokenizer, pair, args.seed)
            infer.append(Runner(name, model, None, trainable, args, infer=True))
    if runners or infer:
        log(args, f"timing {len(runners) + len(infer)} runners: {args.rounds} rounds x {args.steps} steps")
        # training and inference runners share the rounds (each ratio compares steps of the same rounds)
        ordered = sorted(runners, key=lambda r: TIMING_ORDER.index(r.name))
        round_robin(ordered + infer, batches, args)
    for r in runners:
        res["methods"][r.name] = summary(r, args.batch_size)
    for r in infer:
        res["inference"][r.name] = summary(r, args.batch_size)
    for section in ("methods", "inference"):
        for name, r in res[section].items():
            log(args, f"  {section[:5]} {name:16s} {1000 * r['step_s']:9.1f} ms/step  {r['examples_per_s']:8.1f} ex/s")
    if res["methods"]:
        for name, r in projection(res, args.project_epochs)["methods"].items():
            log(args, f"  projected RTE x {args.project_epochs} epochs, {name:16s}: {_hms(r['total_s'])} "
                      f"(train {_hms(r['train_s'])} + eval {_hms(r['eval_s'])})")

    pasta = next((r for r in runners if r.name == "pasta"), None) or next((r for r in infer if r.name == "pasta"), None)
    if pasta is not None:
        res["injection"] = injection_cost(args, pasta, batches[0])
    if args.profile_list:
        res["profile"] = {}
        by_name = {r.name: r for r in runners} | {f"inference.{r.name}": r for r in infer}
        for name in args.profile_list:
            r = by_name.get(name)
            if r is None and name.startswith("inference."):
                model, trainable = build_inference(args, name.split(".", 1)[1], tokenizer, pair, args.seed)
                r = Runner(name, model, None, trainable, args, infer=True)
            elif r is None:
                model, optimizer, trainable = build_method(args, name, tokenizer, pair, args.seed)
                r = Runner(name, model, optimizer, trainable, args)
            log(args, f"profiling {name}")
            res["profile"][name] = profile_method(args, r, batches, args.steps)
    del runners, infer, pasta
    if args.device == "cuda":
        torch.cuda.empty_cache()

    if args.memory != "off":
        server = ProbeServer(args) if args.memory == "fork" else None
        try:
            for section, mode in (("methods", "train"), ("inference", "infer")):
                for name, r in res[section].items():
                    log(args, f"memory probe: {name} ({mode}, {args.memory})")
                    probe = server.probe(name, mode) if server else probe_memory_spawn(args, name, mode)
                    r.update({k: probe[k] for k in ("peak_mem_mb", "mem_loaded_mb", "mem_runtime_mb",
                                                    "peak_over_runtime_mb", "maxrss_after_load_mb")})
                    r["mem_measure"] = probe["measure"] + (
                        ", one process per method forked from an import-only interpreter" if server
                        else ", one fresh interpreter per method")
        finally:
            if server:
                server.close()
    if args.epoch:
        res["epoch"] = epoch_compare(args, tokenizer)
    if res["methods"]:
        res["projection"] = projection(res, args.project_epochs)
    res["targets"] = evaluate_targets(res)
    res["machine"] = machine_info(args)
    res["wall_s"] = time.time() - started
    return res


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = parse_args(argv)
        if args.probe_server:
            serve_probes(argparse.Namespace(**{**json.loads(args.probe_config), "quiet": True}))
            return 0
        if args.render:
            path = Path(args.render)
            res = json.loads(path.read_text())
            res["targets"] = evaluate_targets(res)
            path.write_text(json.dumps(res, indent=2, default=float) + "\n")
            md = render_markdown(res)
            path.with_suffix(".md").write_text(md + "\n")
            print(md)
            return 0
        if args.probe:
            child = argparse.Namespace(**{**json.loads(args.probe_config), "probe": args.probe, "quiet": True})
            if child.threads:
                import torch

                torch.set_num_threads(child.threads)
            print(PROBE_MARK + json.dumps(probe_child(child)), flush=True)
            return 0
        res = run(args, argv)
    except PastaError as e:
        print(f"pasta-bench: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    md = render_markdown(res)
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"\nwrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
