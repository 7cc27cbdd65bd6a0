"""pasta-serve under generated input (issue #21): schemathesis against its own OpenAPI schema, Hypothesis
over hostile items sent beside good ones, and many clients with one hostile among them. Every test is
bounded (a fixed number of derandomized examples) and marked `fuzz` (pytest -m fuzz runs them alone);
PASTA_FUZZ_EXAMPLES=1000 pytest -m fuzz searches longer, at random.

Each prints one line of figures (examples tried, answers by status), which docs/RELIABILITY.md records."""

import json
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import schemathesis
from deploy_fixtures import ITEMS, make_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_serve import Served, poison, same

from pasta_cli import MultiTaskPasta
from pasta_cli.deploy.server import Limits, create_app

pytestmark = pytest.mark.fuzz
LIMITS = Limits(max_batch=16, max_wait_ms=20, max_items=4, max_text_chars=200)
# PASTA_FUZZ_EXAMPLES=N: a longer search, N examples per fuzzer, random rather than derandomized (outside make test)
LONG = int(os.environ.get("PASTA_FUZZ_EXAMPLES", "0"))
BOUNDED = settings(deadline=None, database=None, derandomize=not LONG, suppress_health_check=list(HealthCheck))


def examples(n: int) -> int:
    return LONG or n
CONFORMS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
            response_schema_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on 127.0.0.1, every task of deploy_fixtures, and a second model that answers offline."""
    backbone, paths = make_all(tmp_path_factory.mktemp("fuzz"))
    server = Served(create_app(MultiTaskPasta.from_adapters(paths, precision="fp32"), LIMITS))
    yield server, MultiTaskPasta.from_adapters(paths, precision="fp32"), paths
    server.close()


def without_task(prediction: dict) -> dict:
    return {k: v for k, v in prediction.items() if k != "task"}


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_5xx_and_every_answer_matches_the_schema(served, mode):
    """Positive: every request the schema allows is answered 200 (positive_data_acceptance), as documented.
    Negative (bodies the schema forbids, on /predict): a documented status, never a 5xx (the schema cannot say
    that a pair's two texts share one length limit, so a body it forbids may still be a good request)."""
    server, _, _ = served
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    checks = CONFORMS + ([positive_data_acceptance] if mode == "positive" else [])
    statuses: Counter = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode == "negative" and operation.path != "/predict":
            continue  # the GET endpoints take no input to get wrong

        @settings(BOUNDED, max_examples=examples(100) if operation.path == "/predict" else 5)
        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        def call(case):
            statuses[case.call_and_validate(base_url=server.url, checks=checks).status_code] += 1

        call()
    print(f"\nschemathesis {mode}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert not [s for s in statuses if s >= 500]
    assert server.request("/health")[1]["status"] == "ok"


def spoiled(item: dict, text, which: int) -> dict:
    """A good item with one of its texts (or words) replaced."""
    key = "tokens" if "tokens" in item else "text"
    texts = [item[key]] if isinstance(item[key], str) else list(item[key])
    texts[which % len(texts)] = text
    return {**item, key: texts}


def hostile_items():
    """Items a hostile or careless client sends: good items with one text spoiled (lone surrogates, control
    characters, blank, huge or non-string text), and items of any shape (unknown or non-string tasks, values of
    any type). A spoiled text may still be good; then it must be answered exactly as offline."""
    surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
    text = st.one_of(st.text(surrogate, min_size=1, max_size=2).map(lambda s: f"a {s} b"),
                     st.text(st.one_of(surrogate, st.characters()), min_size=1, max_size=8), st.text(max_size=40),
                     st.sampled_from(["", " ", "\t\n", "\x00", "a" * 500, "[SEP] [CLS]", "\u200b", "\ufeff"]))
    value = st.one_of(text, st.lists(text, max_size=3), st.integers(), st.none(), st.booleans(),
                      st.dictionaries(st.text(max_size=3), text, max_size=2))
    task = st.one_of(st.sampled_from(["rte", "sst2", "ner", "stsb", "cola", "plain"]), st.text(max_size=5),
                     st.integers())
    any_shape = st.fixed_dictionaries({"task": task}, optional={"text": value, "tokens": value})
    return st.one_of(st.builds(spoiled, st.sampled_from(ITEMS), st.one_of(text, text, value), st.integers(0, 1)),
                     any_shape)


def test_a_hostile_request_never_touches_a_good_one_sent_beside_it(served):
    server, offline, _ = served
    good = {"items": [ITEMS[0], ITEMS[2], ITEMS[3]]}
    want = offline.predict(good["items"])
    statuses: Counter = Counter()

    @settings(BOUNDED, max_examples=examples(50))
    @given(bad=st.lists(hostile_items(), min_size=1, max_size=3))
    def hostile_beside_good(bad):
        with ThreadPoolExecutor(2) as pool:  # together, so that they may share a forward pass
            hostile = pool.submit(server.request, "/predict", {"items": bad})
            status, body, _ = server.request("/predict", good)
        assert status == 200 and all(same(without_task(g), w) for g, w in zip(body["predictions"], want))
        status, body, _ = hostile.result()
        statuses[status] += 1
        assert status in (200, 413, 422), body
        if status == 200:  # it was good after all: then it gets exactly the offline answer for what the server read
            sent = json.loads(json.dumps(bad))  # (JSON joins two lone surrogates in a row into one character)
            assert all(same(without_task(g), w) for g, w in zip(body["predictions"], offline.predict(sent)))
        else:
            assert isinstance(body["error"], str) and body["error"]

    hostile_beside_good()
    print(f"\nhostile beside good: {sum(statuses.values())} pairs, hostile statuses {dict(sorted(statuses.items()))}")


HOSTILE = [  # (what, raw body): a rotation of everything a hostile client tries, poison included
    ("lone surrogate", b'{"items": [{"task": "sst2", "text": "a \\ud83d b"}]}'),
    ("empty text", json.dumps({"items": [{"task": "rte", "text": ["", "x"]}]}).encode()),
    ("malformed JSON", b'{"items": [{"task": '),
    ("deep nesting", b"[" * 1500 + b"]" * 1500),
    ("unknown task", json.dumps({"items": [{"task": "\U0001f600", "text": "x"}]}).encode()),
    ("too many items", json.dumps({"items": [ITEMS[1]] * 5}).encode()),
    ("words that are numbers", json.dumps({"items": [{"task": "ner", "tokens": [1, 2]}]}).encode()),
    ("poison: an internal error inside the forward pass", json.dumps({"items": [{"task": "sst2", "text": "poison"}]}
                                                                      ).encode()),
]


def test_sixteen_clients_one_hostile_every_good_request_is_answered_as_offline(tmp_path):
    """15 good clients and 1 hostile one at once on one server (batches of up to 16 items mix their requests):
    every good request 200 and equal to the offline prediction, every hostile one a 4xx (the poison: a 500)."""
    backbone, paths = make_all(tmp_path)
    model = MultiTaskPasta.from_adapters(paths, precision="fp32")
    want = MultiTaskPasta.from_adapters(paths, precision="fp32").predict(ITEMS)
    poisoned_batches = poison(model)
    server = Served(create_app(model, Limits(max_batch=16, max_wait_ms=30, max_items=4)))
    good, bad, lock = Counter(), Counter(), threading.Lock()

    def client(n):
        for r in range(len(HOSTILE) * 2):
            if n == 0:
                what, raw = HOSTILE[r % len(HOSTILE)]
                status, body, _ = server.request("/predict", raw=raw)
                with lock:
                    bad[(what, status)] += 1
                continue
            picks = [(n + r + k) % len(ITEMS) for k in range(1 + (n + r) % 3)]
            status, body, _ = server.request("/predict", {"items": [ITEMS[i] for i in picks]})
            ok = status == 200 and all(same(without_task(p), want[i]) for i, p in zip(picks, body["predictions"]))
            with lock:
                good["answered as offline" if ok else f"failed: {status}"] += 1

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(client, range(16)))
        metrics = server.request("/metrics")[1]
    finally:
        server.close()
    print(f"\n16 clients, 1 hostile: good {dict(good)}; hostile {dict(bad)}; poisoned batches {poisoned_batches}")
    assert good == {"answered as offline": 15 * 2 * len(HOSTILE)}
    assert {s for (what, s) in bad if what.startswith("poison")} == {500}
    assert all(400 <= s < 500 for (what, s) in bad if not what.startswith("poison"))
    assert max(poisoned_batches) > 1  # the poison did share batches with good requests
    assert f'pasta_requests_total{{status="500"}} {2.0:.1f}' in metrics
