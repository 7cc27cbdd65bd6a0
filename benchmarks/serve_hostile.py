#!/usr/bin/env python
"""One hostile client among 16 against a real pasta-serve (issue #21): does one bad request ever fail another?

serve_bench.py's eight adapters on one MiniLM and its stream of built-in sentence pairs; `pasta-serve` in
its own process on 127.0.0.1 (loopback only); for `--seconds`, 15 clients each send 1-4 good items at a
time in a closed loop, while one client sends a rotation of hostile requests (a lone surrogate, an empty
or blank text, malformed or too deeply nested JSON, an unknown task, a wrong number of texts, words that
are not strings, too many items, a text over the limit, a body over the limit). Every good answer is
compared with what `pasta-predict` (run as its own command on the same items first) wrote for its items:
the label exactly, the probabilities within 1e-4. Recorded: each client's answers by status, good answers
unequal to pasta-predict's, hostile answers that were not a 4xx, and /metrics' own count by status.

    python benchmarks/serve_hostile.py [--seconds 120] [--clients 16] [--threads 1]
                                       [--output docs/results/serve_hostile_cpu.json]
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from report import machine
from serve_bench import TASKS, Server, make_adapters, post, stream, unequal

from pasta_cli.errors import Parser, run_cli
from pasta_cli.files import write_atomic, write_json

MAX_REQUESTS = 1_000_000  # per client: the loops end at the deadline, and in any case here

HOSTILE = [  # (what, raw body); every one must get a 4xx
    ("lone surrogate", b'{"items": [{"task": "task0", "text": ["a \\ud83d b", "c"]}]}'),
    ("empty text", json.dumps({"items": [{"task": "task1", "text": ["", "x"]}]}).encode()),
    ("blank text", json.dumps({"items": [{"task": "task2", "text": ["x", " \t\n"]}]}).encode()),
    ("malformed JSON", b'{"items": [{"task": '),
    ("JSON nested too deep", b"[" * 100_000 + b"]" * 100_000),
    ("unknown task", json.dumps({"items": [{"task": "nope", "text": ["a", "b"]}]}).encode()),
    ("one text for a pair task", json.dumps({"items": [{"task": "task3", "text": ["alone"]}]}).encode()),
    ("words that are not strings", json.dumps({"items": [{"task": "task4", "text": [1, None]}]}).encode()),
    ("too many items", json.dumps({"items": [{"task": "task5", "text": ["a", "b"]}] * 65}).encode()),
    ("text over the limit", json.dumps({"items": [{"task": "task6", "text": ["a " * 6000, "b"]}]}).encode()),
    ("body over the limit", None),  # declared in Content-Length: refused before a byte of it is read
]
OVER_LIMIT = (1 << 20) + 1  # pasta-serve's default --max-body-bytes, plus one


def declared_only(url: str, size: int) -> tuple[int, dict]:
    """POST headers declaring a `size`-byte body, then read the answer without sending it: the server must
    refuse by the declared length alone (a client that sent a MiB only to be cut off would see a reset)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()


def pasta_predict(paths: dict[str, Path], items: list[dict], folder: Path, threads: int) -> list[dict]:
    """What `pasta-predict` writes for each item (one input file per task, its columns named), in item order."""
    args = [sys.executable, "-m", "pasta_cli.deploy.predict", "--output", str(folder / "preds"), "--no-progress"]
    for name in TASKS:
        rows = [i for i in items if i["task"] == name]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"a": r["text"][0], "b": r["text"][1]}) + "\n"
                                                      for r in rows))
        args += ["--adapter", f"{name}={paths[name]}", "--input", f"{name}={folder / f'{name}.jsonl'}",
                 "--columns", f"{name}=a,b"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    subprocess.run(args, env=env, check=True, capture_output=True)
    answers = {name: iter(json.loads(line) for line in (folder / "preds" / f"{name}.jsonl").read_text().splitlines())
               for name in TASKS}
    return [next(answers[i["task"]]) for i in items]


def run_clients(url: str, items: list[dict], expected: list[dict], clients: int, seconds: float) -> dict:
    """Client 0 is hostile, the others good; every answer counted, every good one compared."""
    assert url.startswith("http://127.0.0.1:"), url  # loopback only
    good, hostile, lock = Counter(), Counter(), threading.Lock()
    unequal_answers = [0]
    stop = time.time() + seconds

    def ask(body) -> tuple[int | str, dict | None]:
        try:
            return declared_only(url, OVER_LIMIT) if body is None else post(url + "/predict", body)
        except OSError as e:  # recorded as its own status, never a crashed client
            return f"connection error ({type(e).__name__})", None

    def client(n):
        rng = random.Random(n)
        for r in range(MAX_REQUESTS):
            if time.time() >= stop:
                return
            if n == 0:
                what, raw = HOSTILE[r % len(HOSTILE)]
                status, _ = ask(raw)
                with lock:
                    hostile[f"{what}: {status}"] += 1
                continue
            picks = [rng.randrange(len(items)) for _ in range(rng.randint(1, 4))]
            status, body = ask({"items": [items[i] for i in picks]})
            bad = sum(unequal(p, expected[i]) for i, p in zip(picks, body["predictions"], strict=True)) \
                if status == 200 else 0
            with lock:
                good[str(status)] += 1
                good["items"] += len(picks)
                unequal_answers[0] += bad

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    with urllib.request.urlopen(url + "/metrics", timeout=60) as r:
        metrics = r.read().decode()
    counted = {m[1]: int(float(m[2])) for m in re.finditer(r'pasta_requests_total\{status="(\d+)"\} (\S+)', metrics)}
    not_4xx = sum(n for k, n in hostile.items() if not re.search(r": 4\d\d$", k))
    return {"seconds": seconds, "clients": clients, "good_clients": clients - 1, "good": dict(good),
            "good_not_200": sum(n for k, n in good.items() if k not in ("200", "items")),
            "good_unequal_to_pasta_predict": unequal_answers[0], "hostile": dict(sorted(hostile.items())),
            "hostile_not_4xx": not_4xx, "metrics_requests_by_status": counted}


def markdown(res: dict) -> str:
    r = res["result"]
    lines = [f"Hostile load test ({res['date']}, {res['machine']['cpu']}, {res['threads']} torch thread(s)): "
             f"`{res['command']}`", "",
             f"{r['clients']} clients for {r['seconds']:.0f} s on 127.0.0.1, one of them hostile.", "",
             f"* good requests ({r['good_clients']} clients): {r['good']} (statuses, and items answered); "
             f"**{r['good_not_200']}** not 200; **{r['good_unequal_to_pasta_predict']}** items unequal to "
             "pasta-predict's answer",
             f"* hostile requests: **{r['hostile_not_4xx']}** not a 4xx", "", "| hostile request: status | count |",
             "|---|---|"] + [f"| {k} | {v} |" for k, v in r["hostile"].items()]
    lines += ["", f"/metrics `pasta_requests_total` by status: {r['metrics_requests_by_status']}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = Parser(prog="serve_hostile.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--items", type=int, default=256, help="the pool good clients draw from")
    p.add_argument("--output", type=Path, default=Path("outputs/bench/serve_hostile.json"))
    args = p.parse_args(argv)
    command = "python benchmarks/serve_hostile.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_adapters(Path(tmp) / "adapters")
        items = stream(args.items)
        print("pasta-predict ...", file=sys.stderr, flush=True)
        expected = pasta_predict(paths, items, Path(tmp), args.threads)
        print(f"load: {args.clients} clients, 1 hostile, {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
        server = Server(paths, args.threads)
        try:
            result = run_clients(server.url, items, expected, args.clients, args.seconds)
        finally:
            server.close()
    res = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "threads": args.threads, "result": result, "machine": machine("cpu")}
    write_json(args.output, res)
    write_atomic(args.output.with_suffix(".md"), markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    sys.exit(run_cli("serve_hostile.py", main))
