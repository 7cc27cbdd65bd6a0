"""pasta-serve: many PASTA tasks on one frozen backbone over HTTP (FastAPI on uvicorn).

    pasta-serve --adapter rte=outputs/runs/rte/.../adapter --adapter sst2=... [--adapters-dir DIR]
                [--host 127.0.0.1] [--port 8000]

    POST /predict  {"items": [{"task": "rte", "text": ["A man is eating.", "Someone eats."]},
                              {"task": "sst2", "text": ["a gem of a film"]}]}
               ->  {"predictions": [{"task": "rte", "label": ..., "probabilities": {...}}, ...]}
    GET /tasks     every task: head, labels, pair, slot count, variant, max_length
    GET /health    {"status": "ok", ...}
    GET /metrics   Prometheus text: requests by status, items by task, batch sizes, latency (histogram
                   and p50/p99 of the last 1000 requests), queue depth

Items of requests arriving close together share one mixed-task forward pass (`batcher.py`). Faults stay
with the request that brought them: every item is validated and tokenized on its own before it joins a
batch (one that cannot be: a 4xx for its request alone), and a batch that fails is run again item by
item, so only the request whose item fails alone gets the 500. A bad request gets a 4xx JSON
`{"error": "..."}` naming the problem; a full queue a 503 with Retry-After; every answer is counted.
Tasks can be added and removed while it runs through `--adapters-dir`: every sub-folder holding an
adapter is a task named after the folder, polled every `--poll-seconds` (a new or changed folder is
loaded, a removed one dropped). The folder is the admin interface: nothing on the HTTP side changes tasks.
A replica holds no state beyond its adapters: scale out with more replicas behind any load balancer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from transformers.utils import logging as hf_logging

from pasta_cli.adapter import CONFIG_NAME, WEIGHTS_NAME, read_adapter_config
from pasta_cli.deploy import schema
from pasta_cli.deploy.adapters import load_tasks, named
from pasta_cli.deploy.batcher import Batcher, QueueFull
from pasta_cli.errors import Parser, PastaError, run_cli
from pasta_cli.items import TASK_NAME
from pasta_cli.multitask import MultiTaskPasta
from pasta_cli.precision import SERVING_PRECISIONS, resolve_serving

PROG = "pasta-serve"
log = logging.getLogger("pasta_cli.serve")

try:  # the `serve` extra: pip install 'pasta-cli[serve]'
    import prometheus_client as prom
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
except ImportError as e:  # pragma: no cover - the test environment has the extra
    _MISSING = e
else:
    _MISSING = None


@dataclass
class Limits:
    max_batch: int = 32          # items in one forward pass
    max_wait_ms: float = 5.0     # how long the first item waits for others to join its pass
    max_queue: int = 256         # items waiting; beyond it: 503
    max_items: int = 64          # items in one request; beyond it: 413
    max_body_bytes: int = 1 << 20
    max_text_chars: int = 10_000  # one text (or all of a token row's words); longer: 422
    poll_seconds: float = 2.0    # --adapters-dir


class BadRequest(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self, waiting, tasks):
        self.registry = r = prom.CollectorRegistry()
        self.requests = prom.Counter("pasta_requests", "HTTP requests to /predict by status", ["status"], registry=r)
        self.items = prom.Counter("pasta_items", "items predicted, by task", ["task"], registry=r)
        self.batch = prom.Histogram("pasta_batch_size", "items per forward pass", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.latency = prom.Histogram("pasta_request_latency_seconds", "time to answer /predict", registry=r,
                                      buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.recent: deque[float] = deque(maxlen=1000)
        for q in (50, 99):
            prom.Gauge(f"pasta_request_latency_p{q}_seconds", f"p{q} of the last 1000 /predict latencies",
                       registry=r).set_function(lambda q=q: self.percentile(q))
        prom.Gauge("pasta_queue_items", "items waiting for a forward pass", registry=r).set_function(waiting)
        prom.Gauge("pasta_tasks", "tasks served", registry=r).set_function(tasks)

    def percentile(self, q: float) -> float:
        values = sorted(self.recent)
        return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else 0.0

    def observe(self, status: int, seconds: float) -> None:
        self.requests.labels(str(status)).inc()
        if status == 200:
            self.latency.observe(seconds)
            self.recent.append(seconds)


def create_app(model: MultiTaskPasta, limits: Limits | None = None, adapters_dir: str | Path | None = None) -> FastAPI:
    """The HTTP app around a loaded MultiTaskPasta (its tasks may change while it serves)."""
    if _MISSING is not None:
        raise PastaError(f"pasta-serve needs the serve extra ({_MISSING.name} is missing): pip install "
                         "'pasta-cli[serve]'")
    limits = limits or Limits()
    batcher = Batcher(lambda items: _predict(model, items), limits.max_batch, limits.max_wait_ms / 1000,
                      limits.max_queue)
    metrics = Metrics(batcher.waiting, lambda: len(model.tasks))
    batcher.on_batch = metrics.batch.observe

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        watcher = asyncio.create_task(_watch(model, Path(adapters_dir), limits.poll_seconds, batcher)) \
            if adapters_dir else None
        yield
        if watcher:
            watcher.cancel()
        await batcher.stop()

    app = FastAPI(title="pasta-serve", lifespan=lifespan)
    app.state.model, app.state.batcher, app.state.metrics = model, batcher, metrics

    @app.post("/predict", responses=schema.PREDICT_RESPONSES)
    async def predict(request: Request):
        start = time.perf_counter()
        try:
            answer = JSONResponse(await _answer(request, model, batcher, limits, metrics))
        except BadRequest as e:
            answer = JSONResponse({"error": str(e)}, e.status, headers=e.headers)
        except PastaError as e:  # a task removed or replaced while its items waited
            answer = JSONResponse({"error": str(e)}, 409)
        except Exception as e:  # noqa: BLE001 - this request's failure alone: logged, answered, counted
            log.exception("unexpected error on /predict")
            answer = JSONResponse({"error": f"internal error ({type(e).__name__}); the server goes on"}, 500)
        metrics.observe(answer.status_code, time.perf_counter() - start)
        return answer

    @app.get("/tasks", response_model=schema.Tasks)
    async def tasks():
        return {"backbone": model.backbone, "tasks": [t.describe() for t in list(model.tasks.values())]}

    @app.get("/health", response_model=schema.Health)
    async def health():
        return {"status": "ok", "backbone": model.backbone, "precision": model.precision, "tasks": len(model.tasks),
                "queue": batcher.waiting()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return Response(prom.generate_latest(metrics.registry), media_type=prom.CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # never a crash, never a stack trace to the client
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server goes on"}, 500)

    schema.describe_requests(app, lambda: list(model.tasks.values()), limits.max_items, limits.max_text_chars)
    return app


async def _answer(request: Request, model: MultiTaskPasta, batcher: Batcher, limits: Limits, metrics) -> dict:
    """Every item checked and tokenized alone, then predicted in the shared batches."""
    parsed = _validate(await _body(request, limits.max_body_bytes), model, limits)
    rows = []
    for i, item in enumerate(parsed):
        try:
            rows.append(model.encode([item])[0])
        except Exception as e:  # noqa: BLE001 - whatever the tokenizer refuses is this item's fault alone
            raise BadRequest(422, f"item {i}: the tokenizer cannot encode its text ({type(e).__name__}): send "
                                  "plain Unicode text") from None
    try:
        results = await batcher.submit([(*item, row) for item, row in zip(parsed, rows)])
    except QueueFull as e:
        raise BadRequest(503, f"server busy: {e}; retry in a second", {"Retry-After": "1"}) from None
    for task, _ in parsed:
        metrics.items.labels(task.name).inc()
    return {"predictions": [{"task": task.name, **r} for (task, _), r in zip(parsed, results)]}


async def _body(request: Request, limit: int):
    """The JSON body, read no further than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"request body of {declared} bytes; the limit is {limit} (--max-body-bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body over {limit} bytes (--max-body-bytes)")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"the body is not valid JSON ({e}); expected {{\"items\": [...]}}") from None
    except RecursionError:
        raise BadRequest(400, "the body is JSON nested too deep; expected {\"items\": [...]}") from None


def _validate(payload, model: MultiTaskPasta, limits: Limits) -> list[tuple]:
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise BadRequest(422, "expected a JSON object {\"items\": [{\"task\": ..., \"text\": [...]}, ...]}")
    items = payload["items"]
    if not items:
        raise BadRequest(422, "\"items\" is empty: send at least one item")
    if len(items) > limits.max_items:
        raise BadRequest(413, f"{len(items)} items in one request; the limit is {limits.max_items} (--max-items)")
    try:
        parsed = model.parse(items)
    except PastaError as e:
        raise BadRequest(422, str(e)) from None
    for i, (_, texts) in enumerate(parsed):
        size = sum(len(t) for t in texts)
        if size > limits.max_text_chars:
            raise BadRequest(422, f"item {i}: {size} characters of text; the limit is {limits.max_text_chars} "
                                  "(--max-text-chars)")
        if not all(t.strip() for t in texts):
            raise BadRequest(422, f"item {i}: an empty or blank text: every text needs a character that is not "
                                  "whitespace")
    return parsed


def _predict(model: MultiTaskPasta, items: list[tuple]) -> list:
    """One forward pass for the batch of (task, texts, tokenized row). Should it fail (a task changed
    meanwhile, or anything unexpected), each item runs alone: only an item that fails alone fails, and
    only its own request gets the error."""
    try:
        return model.predict_encoded([item[:2] for item in items], [item[2] for item in items])
    except Exception as e:  # noqa: BLE001 - never the whole batch's failure
        if len(items) == 1:
            return [e]
        if not isinstance(e, PastaError):
            log.warning("a batch of %d items failed (%s); each item again alone", len(items), type(e).__name__)
    results = []
    for task, texts, row in items:
        try:
            results.append(model.predict_encoded([(task, texts)], [row])[0])
        except Exception as e:  # noqa: BLE001 - the guilty item's request gets it (a 409 or a 500)
            results.append(e)
    return results


async def _watch(model: MultiTaskPasta, folder: Path, every: float, batcher: Batcher) -> None:
    """Keep the tasks loaded from `folder` in step with its sub-folders (added, changed, removed)."""
    seen: dict[str, tuple] = {}
    while True:
        try:
            await sync_folder(model, folder, seen, batcher.call)
        except Exception:  # noqa: BLE001 - a watcher failure must not stop serving; it is logged, retried
            log.exception("watching %s", folder)
        await asyncio.sleep(every)


async def sync_folder(model, folder: Path, seen: dict[str, tuple], call) -> None:
    """One look at `folder`: load what is new or changed, drop what is gone (only tasks it loaded itself)."""
    found = {}
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        if (sub / CONFIG_NAME).is_file() and TASK_NAME.fullmatch(sub.name):
            found[sub.name] = tuple((sub / f).stat().st_mtime_ns for f in (CONFIG_NAME, WEIGHTS_NAME)
                                    if (sub / f).exists())
    for name in [n for n in seen if n not in found]:
        del seen[name]
        if name in model.tasks:
            await call(model.remove_adapter, name)
            log.warning("task %s removed (%s gone)", name, folder / name)
    for name, stamp in found.items():
        if seen.get(name) == stamp:
            continue
        seen[name] = stamp  # a failed load is retried only when the folder changes again
        try:
            await call(model.add_adapter, name, folder / name)  # max_length: the adapter's own
            log.warning("task %s loaded from %s", name, folder / name)
        except PastaError as e:
            log.warning("task %s not loaded: %s", name, e)


LIMIT_HELP = {
    "max_batch": "items in one forward pass", "max_wait_ms": "how long the first waiting item waits for others",
    "max_queue": "items waiting; beyond them: 503", "max_items": "items in one request; more: 413",
    "max_body_bytes": "request body size; larger: 413", "max_text_chars": "characters of one item's text; more: 422",
    "poll_seconds": "seconds between two looks at the adapters folder",
}


def parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="Example: pasta-serve --adapter rte=outputs/runs/rte/.../adapter --port 8000")
    p.add_argument("--adapter", action="append", metavar="NAME=PATH", help="a task's adapter folder; repeat")
    p.add_argument("--adapters-dir", type=Path, help="serve every adapter folder in DIR, watched for changes")
    p.add_argument("--backbone", help="hub id or folder (default: the first adapter's backbone)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="(default: %(default)s)")
    p.add_argument("--precision", default="auto", metavar="{" + ",".join(SERVING_PRECISIONS) + "}",
                   help="the frozen encoder's number format: auto (bf16 where this machine runs bf16 natively, else "
                        "fp32), fp32, bf16, int8 (CPU), fp16; GET /health says which (default: %(default)s)")
    defaults = Limits()
    for key, what in LIMIT_HELP.items():
        kind = float if key in ("max_wait_ms", "poll_seconds") else int
        p.add_argument("--" + key.replace("_", "-"), type=kind, default=getattr(defaults, key),
                       help=f"{what} (default: %(default)s)")
    return p


def build(argv: list[str] | None = None) -> tuple:
    """(app, host, port) from the command line, every task loaded."""
    args = parser().parse_args(argv)
    return load(args, check(args)), args.host, args.port


def check(args: argparse.Namespace) -> tuple:
    """(limits, adapters, folder, backbone) the command line asks for, checked before anything is loaded or bound."""
    limits = Limits(**{k: getattr(args, k) for k in Limits.__dataclass_fields__})
    if min(limits.max_batch, limits.max_queue, limits.max_items, limits.max_body_bytes, limits.max_text_chars) < 1:
        raise PastaError("--max-batch, --max-queue, --max-items, --max-body-bytes and --max-text-chars must be "
                         "at least 1")
    resolve_serving(args.precision, args.device)  # a bad --precision is one line before anything loads or binds
    adapters = named(args.adapter, "--adapter", "rte=outputs/runs/rte/.../adapter")
    folder = args.adapters_dir
    if folder is not None and not folder.is_dir():
        raise PastaError(f"--adapters-dir {folder}: not a folder")
    in_folder = [p for p in sorted(folder.iterdir()) if (p / CONFIG_NAME).is_file()] if folder else []
    if not adapters and not in_folder and not args.backbone:
        raise PastaError("nothing to serve: give --adapter NAME=PATH, or --adapters-dir DIR holding adapter "
                         "folders, or --backbone to start empty and add tasks to --adapters-dir later")
    backbone = args.backbone
    if not adapters and not backbone:
        backbone = read_adapter_config(in_folder[0])["backbone"]
    return limits, adapters, folder, backbone


def load(args: argparse.Namespace, checked: tuple):
    """The app, every task of the checked command line loaded."""
    limits, adapters, folder, backbone = checked
    model = load_tasks(adapters, backbone, device=args.device, precision=args.precision) if adapters else \
        MultiTaskPasta(backbone, device=args.device, precision=args.precision)
    return create_app(model, limits, folder)


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before any task loads or the banner prints: a busy port is one line."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a just-closed port is free
        sock.bind((host, port))
    except (OSError, OverflowError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise PastaError(f"cannot listen on {host}:{port} ({reason}): choose another --port (or --host)") from None
    return sock


def start(argv: list[str] | None) -> tuple:
    """(arguments, the bound socket, the app with every task loaded), or the first refusal."""
    args = parser().parse_args(argv)
    checked = check(args)  # a mistyped option is named before the port is taken
    sock = listen(args.host, args.port)
    return args, sock, load(args, checked)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    hf_logging.disable_progress_bar()  # "Loading weights" bars, once per task
    started: list = []
    code = run_cli(PROG, lambda: started.append(start(argv)))
    if code:
        sys.exit(code)
    args, sock, app = started[0]
    model = app.state.model
    print(f"{PROG}: {len(model.tasks)} task(s) on {model.backbone}, precision {model.precision}: "
          f"http://{args.host}:{args.port} (POST /predict, "
          "GET /tasks /health /metrics)", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    main()
