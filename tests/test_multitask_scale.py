"""1,000 PASTA tasks on one tiny backbone (issue #24): every row of a batch mixing hundreds of tasks gets its own
task's answer, and tasks come and go (added, replaced, removed: the table grows and is compacted) while another
thread predicts, without a wrong answer in any batch in flight."""

from __future__ import annotations

import json
import random
import shutil
import threading

import pytest
import torch
from deploy_fixtures import make_adapter, reference_logits, save_backbone
from safetensors.torch import save_file

from pasta_cli import MultiTaskPasta
from pasta_cli.adapter import CONFIG_NAME, WEIGHTS_NAME, read_weights

TOL = 1e-5  # fp32, as test_multitask: padding and batch neighbours change the sums' order, nothing else
TASKS = 1000
WORDS = "the a man woman dog cat eats sees food park big small red blue is was and not hello world".split()


def synthetic(root, backbone, n: int, seed: int = 0) -> dict[str, object]:
    """n adapter folders: the config of a pair task or of a single-sentence task (alternately), each with its own
    random vectors and head (normal, large enough to change every logit)."""
    templates = [make_adapter(root / "pair", backbone, True, "classification", "full", ["x", "y"]),
                 make_adapter(root / "single", backbone, False, "classification", "shared", ["p", "q", "r"])]
    shapes = [{k: v.shape for k, v in read_weights(t).items()} for t in templates]
    gen = torch.Generator().manual_seed(seed)
    paths = {}
    for i in range(n):
        folder = root / f"t{i}"
        folder.mkdir()
        shutil.copy(templates[i % 2] / CONFIG_NAME, folder / CONFIG_NAME)
        save_file({k: torch.randn(s, generator=gen) for k, s in shapes[i % 2].items()}, str(folder / WEIGHTS_NAME))
        paths[f"t{i}"] = folder
    return paths


def item(task: str, rng: random.Random) -> dict:
    words = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9)))  # noqa: E731
    return {"task": task, "text": [words(), words()] if int(task[1:]) % 2 == 0 else words()}


@pytest.fixture(scope="module")
def thousand(tmp_path_factory):
    root = tmp_path_factory.mktemp("thousand")
    backbone = save_backbone(root / "backbone")
    paths = synthetic(root, backbone, TASKS)
    mt = MultiTaskPasta(backbone, precision="fp32")
    for name, path in paths.items():
        mt.add_adapter(name, path)
    return backbone, paths, mt


def max_diff(got, expected):
    return max(float((g - e).abs().max()) for g, e in zip(got, expected))


def test_a_batch_of_many_tasks_gives_each_row_its_own_tasks_answer(thousand):
    backbone, paths, mt = thousand
    assert len(mt.tasks) == TASKS
    # the table holds every task's vectors once, in a capacity under twice that (doubling growth)
    used = sum(t.vectors.shape[1] for t in mt.tasks.values())
    assert mt.injector.table.shape[1] == used and mt._table.shape[1] < 2 * used
    rng = random.Random(0)
    items = [item(f"t{rng.randrange(TASKS)}", rng) for _ in range(300)]
    assert len({i["task"] for i in items}) > 200
    mixed = mt.logits(items, batch_size=64)
    alone = [mt.logits([i])[0] for i in items]
    assert max_diff(mixed, alone) <= TOL
    sample = items[:12]  # against each task's own single-adapter model (load_adapter)
    assert max_diff(mixed[:12], reference_logits({i["task"]: paths[i["task"]] for i in sample}, sample)) <= TOL
    # and the answers really are per task: the same text under its neighbour task gives other logits
    other = [{**i, "task": f"t{(int(i['task'][1:]) + 2) % TASKS}"} for i in sample]
    assert min(float((a - b).abs().max()) for a, b in zip(mt.logits(other), mixed[:12])) > 1e-2


def test_adding_replacing_and_removing_hundreds_while_predicting(thousand, tmp_path):
    backbone, paths, mt = thousand
    rng = random.Random(1)
    kept = [f"t{i}" for i in range(100)]  # never touched: their rows must always get their own answers
    items = [item(rng.choice(kept), rng) for _ in range(48)]
    want = mt.logits(items)
    errors, batches, stop = [], [0], threading.Event()

    def predict_loop():
        while not stop.is_set():
            got = mt.logits(items, batch_size=16)
            batches[0] += 1
            if max_diff(got, want) > TOL:
                errors.append(got)

    others = synthetic(tmp_path, backbone, 4, seed=7)  # new weights for replaced tasks
    worker = threading.Thread(target=predict_loop)
    worker.start()
    try:
        for i in range(400, TASKS):  # over half the tasks go: the table is compacted on the way
            mt.remove_adapter(f"t{i}")
        compacted = mt._rows < TASKS
        for i in range(400, TASKS):
            mt.add_adapter(f"t{i}", paths[f"t{i}"])
        for i in range(200, 400):  # replaced (each by a folder of the same kind): holes, then compaction
            mt.add_adapter(f"t{i}", others[f"t{i % 2}"])
        for i in range(TASKS, TASKS + 100):
            mt.add_adapter(f"t{i}", paths[f"t{i % 2}"])
    finally:
        stop.set()
        worker.join()
    assert not errors and batches[0] > 0 and compacted
    assert len(mt.tasks) == TASKS + 100
    used = sum(t.vectors.shape[1] for t in mt.tasks.values())
    assert mt._used - mt._dead == used and 2 * mt._dead <= mt._used
    # after the churn: re-added, replaced and new tasks answer as their own models do
    probe = [item(name, rng) for name in ("t0", "t1", "t777", "t778", "t300", "t301", "t1042", "t1043")]
    expected = reference_logits({"t0": paths["t0"], "t1": paths["t1"], "t777": paths["t777"], "t778": paths["t778"],
                                 "t300": others["t0"], "t301": others["t1"], "t1042": paths["t0"],
                                 "t1043": paths["t1"]}, probe)
    assert max_diff(mt.logits(probe), expected) <= TOL
    assert json.loads(json.dumps([t.describe() for t in mt.tasks.values()]))[0]["task"] == "t0"
