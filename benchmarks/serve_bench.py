#!/usr/bin/env python
"""Serving many PASTA tasks on one frozen backbone: what a mixed-task batch costs, measured.

Eight adapters on one MiniLM (random vectors and heads: serving cost does not depend on what they
learned; all are sentence-pair classifiers of the same shape, so that every way of serving does the
same work on the same tokens, and the swapping server can copy any adapter into its one model) serve a
stream of items whose tasks are drawn uniformly. Four ways to serve it, on the same stream in chunks of
`--batch-size` items in arrival order, timed in alternation over `--rounds` rounds (median kept):

    mixed      MultiTaskPasta with the 8 tasks: one forward pass per chunk, whatever its tasks
    single     one task's own model (`load_adapter`) on the same chunks, all rows as its task: the ceiling
    separate   8 models (`load_adapter` each): a chunk is split by task, each part on its own model
    swap       one model; each run of consecutive same-task items copies that task's tensors in, then runs

Then, each in a fresh interpreter: resident memory (peak RSS) of mixed with 8 tasks, mixed with 1,
single and separate; and over HTTP on 127.0.0.1 (`pasta-serve` in its own process): p50/p99 latency at
a fixed offered load (`--rate` requests/s of one item, open loop) with 8 tasks and with 1, and a load
test (`--load-seconds` of `--clients` concurrent clients, 1-4 items each) whose every answer is compared
with the offline prediction of its item. No bound is asserted here; docs/PERFORMANCE.md reads the ratios.

    python benchmarks/serve_bench.py run [--rounds 3] [--items 512] [--batch-size 32] [--threads 1]
                                         [--rate 20] [--latency-seconds 30] [--load-seconds 120] [--clients 16]
                                         [--output docs/results/serve_cpu.json]
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import torch
from report import machine

from pasta_cli import MultiTaskPasta, add_pasta, load_adapter, save_adapter
from pasta_cli.adapter import read_weights
from pasta_cli.backbones import load_model, load_tokenizer
from pasta_cli.data.builtin import build_splits
from pasta_cli.errors import Parser, run_cli
from pasta_cli.files import write_atomic, write_json
from pasta_cli.methods import get_method

BACKBONE = "minilm"
TASKS = [f"task{i}" for i in range(8)]
MODES = ("mixed", "single", "separate", "swap")


def make_adapters(folder: Path) -> dict[str, Path]:
    tok = load_tokenizer(BACKBONE)
    paths = {}
    for i, name in enumerate(TASKS):
        torch.manual_seed(i)
        model = load_model(BACKBONE, "classification", 2, {0: "no", 1: "yes"})
        injector = add_pasta(model, tok, "full", pair=True)
        with torch.no_grad():
            injector.vectors.normal_(std=0.5)
        paths[name] = save_adapter(model, folder / name, backbone=BACKBONE, head="classification", pair=True,
                                   task=name)
    return paths


def stream(n: int, seed: int = 0) -> list[dict]:
    rows = build_splits(seed=seed, train_size=n, dev_size=1, test_size=1)["train"]
    rng = random.Random(seed)
    return [{"task": rng.choice(TASKS), "text": [r["sentence1"], r["sentence2"]]} for r in rows]


class Plain:
    """One task's own model, the way a user of load_adapter runs it."""

    def __init__(self, path):
        self.model, self.tok = load_adapter(path)

    def __call__(self, items):
        enc = self.tok([i["text"][0] for i in items], [i["text"][1] for i in items], padding=True,
                       truncation=True, return_tensors="pt", return_special_tokens_mask=True)
        with torch.inference_mode():
            return self.model(**enc).logits.softmax(-1)


def servers(paths: dict[str, Path]) -> dict:
    """mode -> a function of one chunk of items."""
    mixed = MultiTaskPasta.from_adapters(paths)
    single = Plain(paths[TASKS[0]])
    separate = {name: Plain(p) for name, p in paths.items()}
    swap = Plain(paths[TASKS[0]])
    weights = {name: read_weights(p) for name, p in paths.items()}
    pasta = get_method("pasta")
    current = [TASKS[0]]

    def run_separate(items):
        for name in {i["task"] for i in items}:
            separate[name]([i for i in items if i["task"] == name])

    def run_swap(items):
        start = 0
        while start < len(items):
            end = start
            while end < len(items) and items[end]["task"] == items[start]["task"]:
                end += 1
            if current[0] != items[start]["task"]:
                pasta.load_state(swap.model, weights[items[start]["task"]], "bench")
                current[0] = items[start]["task"]
            swap(items[start:end])
            start = end

    return {"mixed": mixed.predict, "single": single, "separate": run_separate, "swap": run_swap}


def throughput(paths, items, batch_size, rounds) -> dict:
    run = servers(paths)
    chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    for fn in run.values():  # warm-up
        fn(chunks[0])
    times = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
            start = time.perf_counter()
            for chunk in chunks:
                run[mode](chunk)
            times[mode].append(time.perf_counter() - start)
    return {m: {"examples_per_s": len(items) / statistics.median(t), "round_s": t} for m, t in times.items()}


def memory(adapters_dir: Path, mode: str, batch_size: int) -> dict:
    """Peak and current RSS of one way of serving, after it served one chunk (fresh interpreter)."""
    paths = {name: adapters_dir / name for name in TASKS}
    items = stream(batch_size)
    if mode == "mixed1":
        MultiTaskPasta.from_adapters({TASKS[0]: paths[TASKS[0]]}).predict(
            [{**i, "task": TASKS[0]} for i in items])
    elif mode == "mixed":
        MultiTaskPasta.from_adapters(paths).predict(items)
    elif mode == "single":
        Plain(paths[TASKS[0]])(items)
    else:
        models = {name: Plain(p) for name, p in paths.items()}
        for name in models:
            models[name](items)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(status[key].split()[0]) / 1024 for k, key in (("peak_rss_mib", "VmHWM"), ("rss_mib", "VmRSS"))}


# ------------------------------------------------------------------------------------------ over HTTP

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """pasta-serve in its own process."""

    def __init__(self, paths: dict[str, Path], threads: int, max_queue: int = 256):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "pasta_cli.deploy.server", "--port", str(self.port), "--max-queue",
                str(max_queue), *[a for n, p in paths.items() for a in ("--adapter", f"{n}={p}")]]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        self.log = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would stall the server
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if post(self.url + "/health", None)[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"pasta-serve exited: {self.log.read()[-2000:]}")
        raise RuntimeError("pasta-serve did not start in 300 s")

    def close(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)


def post(url: str, body) -> tuple[int, dict | None]:
    """(status, parsed JSON answer) of a GET (body None) or a POST of `body` (an object, or raw bytes as sent)."""
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def latency(paths, items, threads, rate, seconds) -> dict:
    """Open loop: one request of one item every 1/rate s, whether or not earlier ones were answered."""
    server = Server(paths, threads)
    try:
        n = int(rate * seconds)
        done: list[float] = []
        statuses: dict[int, int] = {}

        def one(i):
            item = items[i % len(items)]
            start = time.perf_counter()
            status, _ = post(server.url + "/predict", {"items": [item]})
            done.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1

        with ThreadPoolExecutor(64) as pool:
            t0 = time.perf_counter()
            for i in range(n):
                time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                pool.submit(one, i)
        done.sort()
        return {"requests": n, "rate_per_s": rate, "statuses": statuses,
                "p50_ms": 1000 * done[len(done) // 2], "p99_ms": 1000 * done[min(len(done) - 1, int(0.99 * len(done)))]}
    finally:
        server.close()


def unequal(got: dict, want: dict) -> bool:
    """A served prediction differs from the offline one: another label, or a probability off by more than 1e-4."""
    return got["label"] != want["label"] or any(abs(got["probabilities"][k] - v) > 1e-4
                                                for k, v in want["probabilities"].items())


def load_test(paths, pool_items, expected, threads, clients, seconds) -> dict:
    """Closed loop: `clients` threads, each sending 1-4 items at a time for `seconds`; every 200 answer
    compared with the offline prediction of its items (label exactly, probabilities within 1e-4)."""
    server = Server(paths, threads)
    counts = {"requests": 0, "items": 0, "statuses": {}, "mismatches": 0, "errors": 0}
    lock = threading.Lock()
    stop = time.time() + seconds

    def client(seed):
        rng = random.Random(seed)
        while time.time() < stop:
            picks = [rng.randrange(len(pool_items)) for _ in range(rng.randint(1, 4))]
            try:
                status, body = post(server.url + "/predict", {"items": [pool_items[i] for i in picks]})
            except OSError:
                with lock:
                    counts["errors"] += 1
                continue
            bad = sum(unequal(p, expected[i]) for i, p in zip(picks, body["predictions"], strict=True)) \
                if status == 200 else 0
            with lock:
                counts["requests"] += 1
                counts["items"] += len(picks) if status == 200 else 0
                counts["statuses"][status] = counts["statuses"].get(status, 0) + 1
                counts["mismatches"] += bad

    try:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        counts["seconds"] = seconds
        counts["clients"] = clients
        counts["examples_per_s"] = counts["items"] / seconds
        return counts
    finally:
        server.close()


# ------------------------------------------------------------------------------------------ report

def markdown(res: dict) -> str:
    t = res["throughput"]
    lines = [f"Serving benchmark ({res['date']}, {res['machine']['cpu']}, {res['machine']['torch_threads']} torch "
             f"thread(s)): `{res['command']}`", "",
             "| mode | examples/s | vs single |", "|---|---|---|"]
    lines += [f"| {m} | {t[m]['examples_per_s']:.1f} | {t[m]['examples_per_s'] / t['single']['examples_per_s']:.2f}x |"
              for m in MODES]
    mem = res["memory"]
    lines += ["", "| memory | peak RSS MiB |", "|---|---|"] + [f"| {k} | {v['peak_rss_mib']:.0f} |"
                                                                for k, v in mem.items()]
    lines += ["", "| over HTTP | requests | p50 ms | p99 ms | statuses |", "|---|---|---|---|---|"]
    lines += [f"| {k} at {v['rate_per_s']}/s | {v['requests']} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | "
              f"{v['statuses']} |" for k, v in res["latency"].items()]
    load = res["load_test"]
    lines += ["", f"Load test: {load['clients']} clients for {load['seconds']} s: {load['requests']} requests, "
                  f"statuses {load['statuses']}, {load['mismatches']} answers unequal to the offline prediction, "
                  f"{load['errors']} connection errors, {load['examples_per_s']:.1f} examples/s.", "",
              "Ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in res["ratios"].items())]
    return "\n".join(lines) + "\n"


def parser() -> Parser:
    p = Parser(prog="serve_bench.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--items", type=int, default=512)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--rate", type=float, default=20.0)
    run.add_argument("--latency-seconds", type=float, default=30.0)
    run.add_argument("--load-seconds", type=float, default=120.0)
    run.add_argument("--clients", type=int, default=16)
    run.add_argument("--output", type=Path, default=Path("outputs/bench/serve.json"))
    mem = sub.add_parser("memory")
    mem.add_argument("--adapters", type=Path, required=True)
    mem.add_argument("--mode", choices=("mixed", "mixed1", "single", "separate"), required=True)
    mem.add_argument("--batch-size", type=int, default=32)
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.cmd == "memory":
        torch.set_num_threads(1)
        print(json.dumps(memory(args.adapters, args.mode, args.batch_size)))
        return
    torch.set_num_threads(args.threads)
    command = "python benchmarks/serve_bench.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_adapters(Path(tmp))
        items = stream(args.items)
        print("throughput ...", file=sys.stderr, flush=True)
        res = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "throughput": throughput(paths, items, args.batch_size, args.rounds)}
        print("memory ...", file=sys.stderr, flush=True)
        res["memory"] = {}
        for mode in ("single", "mixed1", "mixed", "separate"):
            out = subprocess.run([sys.executable, __file__, "memory", "--adapters", tmp, "--mode", mode,
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
            res["memory"][mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print("latency ...", file=sys.stderr, flush=True)
        one = {TASKS[0]: paths[TASKS[0]]}
        res["latency"] = {"mixed_8_tasks": latency(paths, items, args.threads, args.rate, args.latency_seconds),
                          "single_task": latency(one, [{**i, "task": TASKS[0]} for i in items], args.threads,
                                                 args.rate, args.latency_seconds)}
        print("load test ...", file=sys.stderr, flush=True)
        pool_items = items[:256]
        expected = MultiTaskPasta.from_adapters(paths).predict(pool_items)
        res["load_test"] = load_test(paths, pool_items, expected, args.threads, args.clients, args.load_seconds)
    t, m = res["throughput"], res["memory"]
    res["ratios"] = {
        "throughput_mixed_over_single": t["mixed"]["examples_per_s"] / t["single"]["examples_per_s"],
        "throughput_separate_over_single": t["separate"]["examples_per_s"] / t["single"]["examples_per_s"],
        "throughput_swap_over_single": t["swap"]["examples_per_s"] / t["single"]["examples_per_s"],
        "memory_mixed8_over_single": m["mixed"]["peak_rss_mib"] / m["single"]["peak_rss_mib"],
        "memory_mixed8_over_mixed1": m["mixed"]["peak_rss_mib"] / m["mixed1"]["peak_rss_mib"],
        "memory_separate_over_single": m["separate"]["peak_rss_mib"] / m["single"]["peak_rss_mib"],
    }
    res["machine"] = machine("cpu")
    write_json(args.output, res)
    write_atomic(args.output.with_suffix(".md"), markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    sys.exit(run_cli("serve_bench.py", main))
