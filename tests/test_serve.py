"""pasta-serve end to end over real HTTP on 127.0.0.1 with a tiny backbone: concurrent mixed requests
answer what pasta-predict (MultiTaskPasta offline) answers, each bad request gets its 4xx, a full queue 503."""

import json
import random
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvicorn
from deploy_fixtures import ADAPTERS, ITEMS, make_all

from pasta_cli import MultiTaskPasta
from pasta_cli.deploy.server import Limits, build, create_app, main


class Served:
    """A uvicorn server in a thread, on a port the kernel picked."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)

    def request(self, path, body=None, raw=None, headers=None):
        """(status, parsed JSON or text, headers)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json",
                                                                           **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, text, hdrs = r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            status, text, hdrs = e.code, e.read().decode(), e.headers
        try:
            return status, json.loads(text), hdrs
        except json.JSONDecodeError:
            return status, text, hdrs


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return make_all(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def served(adapters):
    backbone, paths = adapters
    model = MultiTaskPasta.from_adapters(paths, precision="fp32")
    limits = Limits(max_batch=8, max_wait_ms=20, max_queue=64, max_items=6, max_body_bytes=4000, max_text_chars=300)
    server = Served(create_app(model, limits))
    yield server, model.predict(ITEMS)  # what pasta-predict writes for every item (tests/test_predict.py)
    server.close()


def same(got: dict, want: dict) -> bool:
    """Equal labels and tags; probabilities and scores equal up to float noise (other batch neighbours)."""
    if set(got) != set(want):
        return False
    if "score" in want:
        return abs(got["score"] - want["score"]) <= 1e-5
    if "tags" in want:
        return got["tags"] == want["tags"]
    return got["label"] == want["label"] and all(abs(got["probabilities"][k] - v) <= 1e-5
                                                 for k, v in want["probabilities"].items())


def test_concurrent_mixed_requests_answer_what_offline_prediction_gives(served):
    server, expected = served
    rng = random.Random(0)
    requests = [rng.sample(range(len(ITEMS)), rng.randint(1, 5)) for _ in range(40)]

    def ask(picks):
        status, body, _ = server.request("/predict", {"items": [ITEMS[i] for i in picks]})
        return picks, status, body

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, requests))
    for picks, status, body in answers:
        assert status == 200, body
        assert [p["task"] for p in body["predictions"]] == [ITEMS[i]["task"] for i in picks]
        for i, p in zip(picks, body["predictions"]):
            assert same({k: v for k, v in p.items() if k != "task"}, expected[i]), (ITEMS[i], p, expected[i])
    metrics = server.request("/metrics")[1]
    batches = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("pasta_batch_size_count"))
    items = sum(len(p) for p in requests)
    assert batches < items  # requests arriving together shared forward passes
    assert 'pasta_requests_total{status="200"}' in metrics and "pasta_request_latency_p99_seconds" in metrics


BAD = [
    ("malformed JSON", None, b'{"items": [', 400, "not valid JSON"),
    ("not an object", ["rte"], None, 422, "expected a JSON object"),
    ("no items", {"items": []}, None, 422, "\"items\" is empty"),
    ("unknown task", {"items": [{"task": "mnli", "text": ["a", "b"]}]}, None, 422, "item 0: unknown task 'mnli'"),
    ("missing text", {"items": [ITEMS[0], {"task": "rte"}]}, None, 422, "item 1: task 'rte' takes \"text\": [first, second]"),
    ("one text for a pair task", {"items": [{"task": "rte", "text": ["alone"]}]}, None, 422, "(a sentence pair), got ['alone']"),
    ("two texts for a single task", {"items": [{"task": "sst2", "text": ["a", "b"]}]}, None, 422, "item 0: task 'sst2' takes"),
    ("over-long text", {"items": [{"task": "sst2", "text": "a " * 200}]}, None, 422, "item 0: 400 characters of text; the limit is 300"),
    ("too many items", {"items": [ITEMS[1]] * 7}, None, 413, "7 items in one request; the limit is 6"),
    ("body too large", {"items": [{"task": "sst2", "text": "x" * 5000}]}, None, 413, "the limit is 4000"),
    # issue #21: a lone surrogate made the tokenizer raise TypeError (a 500 that failed its whole batch)
    ("lone surrogate", None, b'{"items": [{"task": "sst2", "text": "a \\ud83d b"}]}', 422,
     "item 0: text holds a lone surrogate '\\ud83d'"),
    ("lone surrogate in a word", None, b'{"items": [{"task": "ner", "tokens": ["a", "\\udc00"]}]}', 422,
     "lone surrogate"),
    ("empty text", {"items": [ITEMS[1], {"task": "sst2", "text": ""}]}, None, 422, "item 1: an empty or blank text"),
    ("blank text of a pair", {"items": [{"task": "rte", "text": ["a", " \t\n"]}]}, None, 422, "an empty or blank text"),
    ("JSON nested too deep", None, b"[" * 1900 + b"]" * 1900, 400, "nested too deep"),
]


@pytest.mark.parametrize("case,body,raw,status,message", BAD, ids=[b[0] for b in BAD])
def test_each_bad_request_gets_its_4xx_naming_the_problem(served, case, body, raw, status, message):
    server, _ = served
    got, answer, _ = server.request("/predict", body, raw=raw)
    assert got == status and message in answer["error"], answer
    assert server.request("/health")[1]["status"] == "ok"


def test_tasks_health_and_metrics(served):
    server, _ = served
    status, body, _ = server.request("/tasks")
    tasks = {t["task"]: t for t in body["tasks"]}
    assert status == 200 and set(tasks) == set(ADAPTERS)
    assert tasks["rte"]["labels"] == ADAPTERS["rte"][3] and tasks["rte"]["num_slots"] == 3
    assert tasks["sst2"]["num_slots"] == 2 and tasks["stsb"]["labels"] is None and tasks["plain"]["pair"]
    assert server.request("/health")[1]["tasks"] == len(ADAPTERS)
    status, text, headers = server.request("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain") and "pasta_queue_items 0.0" in text


def test_a_full_queue_answers_503_with_a_retry_hint(adapters):
    backbone, paths = adapters
    model = MultiTaskPasta.from_adapters({"rte": paths["rte"]}, precision="fp32")
    entered, release = threading.Event(), threading.Event()
    offline = model.predict_encoded

    def slow_predict(*args, **kwargs):
        entered.set()
        release.wait(30)
        return offline(*args, **kwargs)

    model.predict_encoded = slow_predict
    server = Served(create_app(model, Limits(max_batch=1, max_wait_ms=0, max_queue=2)))
    try:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(server.request, "/predict", {"items": [ITEMS[0]]})
            assert entered.wait(30)  # the first item is in the forward pass, the queue is empty
            queued = [pool.submit(server.request, "/predict", {"items": [ITEMS[6]]}) for _ in range(2)]
            while server.request("/health")[1]["queue"] < 2:
                time.sleep(0.01)
            status, body, headers = server.request("/predict", {"items": [ITEMS[0]]})
            assert status == 503 and headers["Retry-After"] == "1" and "server busy" in body["error"]
            assert 'pasta_requests_total{status="503"} 1.0' in server.request("/metrics")[1]
            release.set()
            assert [f.result()[0] for f in [first, *queued]] == [200, 200, 200]
        assert server.request("/predict", {"items": [ITEMS[0]]})[0] == 200
    finally:
        release.set()
        server.close()


def test_tasks_come_and_go_with_the_adapters_folder(adapters, tmp_path):
    backbone, paths = adapters
    folder = tmp_path / "adapters"
    folder.mkdir()
    shutil.copytree(paths["sst2"], folder / "sst2")
    app, host, port = build(["--precision", "fp32", "--adapters-dir", str(folder), "--poll-seconds", "0.1"])
    assert (host, port) == ("127.0.0.1", 8000)  # loopback unless told otherwise
    server = Served(app)
    try:
        def tasks():
            return sorted(t["task"] for t in server.request("/tasks")[1]["tasks"])

        def wait_for(names):
            deadline = time.time() + 20
            while tasks() != names and time.time() < deadline:
                time.sleep(0.05)
            return tasks()

        assert wait_for(["sst2"]) == ["sst2"]
        shutil.copytree(paths["rte"], folder / "rte")
        assert wait_for(["rte", "sst2"]) == ["rte", "sst2"]
        assert server.request("/predict", {"items": [ITEMS[0], ITEMS[1]]})[0] == 200
        shutil.rmtree(folder / "sst2")
        assert wait_for(["rte"]) == ["rte"]
        status, body, _ = server.request("/predict", {"items": [ITEMS[1]]})
        assert status == 422 and "unknown task 'sst2'" in body["error"]
    finally:
        server.close()


def counted(metrics: str) -> dict[str, float]:
    """pasta_requests_total by status, from the Prometheus text."""
    return {m[1]: float(m[2]) for m in re.finditer(r'pasta_requests_total\{status="(\d+)"\} (\S+)', metrics)}


def poison(model: MultiTaskPasta) -> list[int]:
    """Make every forward pass holding a text with the word "poison" fail (an internal error, not the input's
    fault); returns the sizes of the batches that failed so."""
    offline, sizes = model.predict_encoded, []

    def poisoned(parsed, rows=None, **kwargs):
        if any("poison" in t for _, texts in parsed for t in texts):
            sizes.append(len(parsed))
            raise RuntimeError("a fault inside the forward pass")
        return offline(parsed, rows, **kwargs)

    model.predict_encoded = poisoned
    return sizes


def test_a_failed_batch_is_retried_item_by_item_so_only_the_guilty_request_fails(adapters):
    """An internal error in a shared forward pass (here: any batch holding the word "poison") used to fail every
    request in the batch; each item now runs again alone, and only the request whose item fails alone gets a 500,
    which /metrics counts."""
    backbone, paths = adapters
    model = MultiTaskPasta.from_adapters(paths, precision="fp32")
    expected = model.predict(ITEMS)
    poisoned_batches = poison(model)
    server = Served(create_app(model, Limits(max_batch=64, max_wait_ms=500)))
    try:
        with ThreadPoolExecutor(len(ITEMS) + 1) as pool:
            bad = pool.submit(server.request, "/predict", {"items": [ITEMS[1], {"task": "sst2", "text": "poison"}]})
            good = list(pool.map(lambda item: server.request("/predict", {"items": [item]}), ITEMS))
        status, body, _ = bad.result()
        assert status == 500 and body == {"error": "internal error (RuntimeError); the server goes on"}
        for item, want, (status, body, _) in zip(ITEMS, expected, good):
            assert status == 200 and same({k: v for k, v in body["predictions"][0].items() if k != "task"}, want), item
        assert max(poisoned_batches) > 2  # the poison shared its batch with other requests' items
        assert counted(server.request("/metrics")[1]) == {"200": len(ITEMS), "500": 1}
    finally:
        server.close()


def test_a_busy_port_is_one_line_before_any_banner(adapters, capsys):
    backbone, paths = adapters
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            main(["--adapter", f"rte={paths['rte']}", "--port", str(port)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.splitlines() == [
        f"pasta-serve: error: cannot listen on 127.0.0.1:{port} (Address already in use): choose another --port "
        "(or --host)"]


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    for option, default in [("--host", "127.0.0.1"), ("--port", 8000), ("--max-batch", 32), ("--max-wait-ms", 5.0),
                            ("--max-queue", 256), ("--max-items", 64), ("--max-body-bytes", 1 << 20),
                            ("--max-text-chars", 10000), ("--poll-seconds", 2.0), ("--device", "cpu")]:
        assert re.search(re.escape(option) + r"[^-]*\(default: " + re.escape(str(default)) + r"[,)]", out), option


def test_text_the_tokenizer_refuses_is_its_own_requests_422(adapters):
    """Whatever the tokenizer raises on one item (here a TypeError, as the fast tokenizer's on a lone surrogate)
    is that request's 422, raised while the item is tokenized alone, before it can join anyone's batch."""
    backbone, paths = adapters
    model = MultiTaskPasta.from_adapters(paths, precision="fp32")
    expected, encode = model.predict(ITEMS[:2]), model.encode

    def fussy(parsed):
        if any("unencodable" in t for _, texts in parsed for t in texts):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return encode(parsed)

    model.encode = fussy
    server = Served(create_app(model, Limits(max_wait_ms=200)))
    try:
        with ThreadPoolExecutor(2) as pool:
            bad = pool.submit(server.request, "/predict", {"items": [ITEMS[0], {"task": "sst2", "text": "unencodable"}]})
            status, body, _ = server.request("/predict", {"items": ITEMS[:2]})
        assert status == 200 and all(same({k: v for k, v in p.items() if k != "task"}, w)
                                     for p, w in zip(body["predictions"], expected))
        status, body, _ = bad.result()
        assert status == 422 and body["error"] == ("item 1: the tokenizer cannot encode its text (TypeError): send "
                                                   "plain Unicode text")
        assert counted(server.request("/metrics")[1]) == {"200": 1, "422": 1}
    finally:
        server.close()


def test_the_schemas_blank_characters_are_pythons():
    """The request schema's non-blank pattern spells out str.isspace's characters: with `\\S`, schemathesis once
    generated a text its regex dialect called non-blank and the server (str.strip) called blank: a 422 for a request
    the schema allowed."""
    from pasta_cli.deploy.schema import NON_BLANK, WHITESPACE

    assert set(WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert re.fullmatch(NON_BLANK, "a") and not any(re.fullmatch(NON_BLANK, c) for c in WHITESPACE)
