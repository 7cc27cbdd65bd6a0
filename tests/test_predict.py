"""pasta-predict on two trained runs (a pair task in CSV, a token task in CoNLL) on a tiny backbone:
its files equal what the runs themselves predicted (their dev and GLUE-format test files)."""

import csv
import json
import shutil
import time
from pathlib import Path

import pytest
from deploy_fixtures import ITEMS, make_all, save_backbone
from test_own_data import QUICK, pair_rows, task_yaml, write_conll

from pasta_cli import MultiTaskPasta
from pasta_cli.config import compose
from pasta_cli.deploy.predict import main, run
from pasta_cli.train import run_job


def train(root: Path, name: str, backbone: str, **task) -> Path:
    task_yaml(root / "conf", name, **task)
    cfg = compose([f"task={name}", f"model.name_or_path={backbone}", *QUICK, "trainer.max_steps=3",
                   "optim.lr=0.5"], config_dir=str(root / "conf"))
    run_job(cfg, root / name)
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    backbone = save_backbone(root / "backbone")
    data = root / "data"
    data.mkdir()
    rows = pair_rows(16)
    write = lambda f, part, label=True: (data / f).write_text(  # noqa: E731
        "id,q,s" + (",y" if label else "") + "\n"
        + "".join(f'{i},"{r["q"]}","{r["s"]}"' + (f',{r["y"]}' if label else "") + "\n" for i, r in enumerate(part)))
    write("train.csv", rows)
    write("dev.csv", rows[:8])
    write("test.csv", rows[5:12], label=False)
    pairs = train(root, "pairs", backbone, format="csv", data_dir=str(data), text=["q", "s"], label="y", index="id")
    conll = root / "conll"
    conll.mkdir()
    for f in ("train.txt", "validation.txt"):
        write_conll(conll / f)
    tags = train(root, "tags", backbone, kind="token_classification", format="conll", data_dir=str(conll),
                 files={"train": "train.txt", "validation": "validation.txt"}, metrics=["entity_f1"])
    return {"pairs": pairs, "tags": tags, "data": data, "conll": conll, "backbone": backbone}


def tsv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(), delimiter="\t", quoting=csv.QUOTE_NONE))


def test_two_tasks_in_one_call_equal_what_their_runs_predicted(runs, tmp_path):
    out = tmp_path / "preds"
    written = run(["--precision", "fp32", "--adapter", f"pairs={runs['pairs'] / 'adapter'}", "--adapter", f"tags={runs['tags'] / 'adapter'}",
                   "--input", f"pairs={runs['data'] / 'test.csv'}", "--input",
                   f"tags={runs['conll'] / 'validation.txt'}", "--output", str(out), "--batch-size", "3",
                   "--no-progress"])
    assert sorted(written) == ["pairs.jsonl", "pairs.tsv", "tags.jsonl"]  # the CoNLL input is labelled: no TSV
    # the unlabelled test file: the GLUE-format TSV is byte for byte the run's own test_predictions.tsv
    assert (out / "pairs.tsv").read_text() == (runs["pairs"] / "test_predictions.tsv").read_text()
    lines = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [p["label"] for p in lines] == [row[1] for row in tsv(runs["pairs"] / "test_predictions.tsv")[1:]]
    assert all(sum(p["probabilities"].values()) == pytest.approx(1) and set(p["probabilities"]) == {"no", "yes"}
               for p in lines)
    # the token task's validation file: one tag per word, as the run's dev predictions
    tags = [json.loads(line)["tags"] for line in (out / "tags.jsonl").read_text().splitlines()]
    assert [" ".join(t) for t in tags] == [row[1] for row in tsv(runs["tags"] / "dev_predictions.tsv")[1:]]


def test_a_labelled_input_gives_the_runs_dev_predictions(runs, tmp_path):
    run(["--precision", "fp32", "--adapter", f"pairs={runs['pairs'] / 'adapter'}", "--input", f"pairs={runs['data'] / 'dev.csv'}",
         "--output", str(tmp_path), "--no-progress"])
    labels = [json.loads(line)["label"] for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert labels == [row[1] for row in tsv(runs["pairs"] / "dev_predictions.tsv")[1:]]
    assert not (tmp_path / "pairs.tsv").exists()


@pytest.fixture
def cli(capsys):
    """pasta-predict's main() in this process: (exit code, stderr)."""
    def call(*args):
        with pytest.raises(SystemExit) as exit_:
            main(["--no-progress", *map(str, args)])
        return exit_.value.code, capsys.readouterr().err
    return call


def test_a_malformed_row_names_file_and_line_and_nothing_is_written(runs, tmp_path, cli):
    bad = tmp_path / "bad.csv"
    bad.write_text('q,s\n"is it red?","it is red."\n"only one field"\n')
    out = tmp_path / "preds"
    code, err = cli("--adapter", f"pairs={runs['pairs'] / 'adapter'}", "--adapter", f"tags={runs['tags'] / 'adapter'}",
                    "--input", f"tags={runs['conll'] / 'validation.txt'}", "--input", f"pairs={bad}", "--output", out)
    assert code == 2, err
    assert err.strip().splitlines() == [f"pasta-predict: error: '{bad}' line 3: expected 2 comma-separated "
                                              "fields as in the header (line 1), found 1"]
    assert not out.exists()


def test_an_adapter_saved_by_hand_reads_the_columns_it_is_given(tmp_path, cli):
    backbone, paths = make_all(tmp_path)
    rows = [item for item in ITEMS if item["task"] in ("rte", "sst2")]
    (tmp_path / "rte.jsonl").write_text("".join(json.dumps({"a": r["text"][0], "b": r["text"][1]}) + "\n"
                                                for r in rows if r["task"] == "rte"))
    (tmp_path / "sst2.tsv").write_text("sentence\n" + "".join(
        (r["text"] if isinstance(r["text"], str) else r["text"][0]) + "\n" for r in rows if r["task"] == "sst2"))
    args = ["--adapter", f"rte={paths['rte']}", "--adapter", f"sst2={paths['sst2']}", "--input",
            f"rte={tmp_path / 'rte.jsonl'}", "--input", f"sst2={tmp_path / 'sst2.tsv'}", "--output", tmp_path / "out"]
    code, err = cli(*args)
    assert code == 2 and "adapter 'rte' has no run folder to say which columns hold the text: name them, " \
        "--columns rte=COLUMN[,COLUMN2]" in err
    run([*map(str, args), "--columns", "rte=a,b", "--columns", "sst2=sentence", "--no-progress", "--precision", "fp32"])
    expected = MultiTaskPasta.from_adapters(paths, precision="fp32").predict([r for r in rows if r["task"] == "rte"])
    got = [json.loads(line) for line in (tmp_path / "out" / "rte.jsonl").read_text().splitlines()]
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert [g["probabilities"] for g in got] == [pytest.approx(e["probabilities"], abs=1e-6) for e in expected]


@pytest.mark.parametrize("args,message", [
    (["--adapter", "rte", "--input", "rte=x"], "--adapter 'rte': expected NAME=VALUE"),
    (["--adapter", "a=x", "--input", "b=y.tsv"], "task 'b' has an input or columns but no adapter"),
    (["--adapter", "a=x", "--adapter", "a=y", "--input", "a=z"], "--adapter names task 'a' twice"),
])
def test_bad_options_are_one_line(tmp_path, args, message, cli):
    code, err = cli(*args, "--output", tmp_path / "o")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def long_rows(path: Path, n: int = 6) -> Path:
    """Unlabelled pairs far longer than the runs' trainer.max_length (32), so where inputs are cut shows."""
    words = ["red", "door", "blue", "box", "is", "the", "a", "cup", "not", "lamp"]
    path.write_text("id,q,s\n" + "".join(
        f'{i},"{" ".join(words[(i + k) % 10] for k in range(40))}","{" ".join(words[(3 * i + k) % 7] for k in range(50))}"\n'
        for i in range(n)))
    return path


def test_a_copied_adapter_predicts_and_serves_as_its_run_does(runs, tmp_path):
    """issue #21: an adapter/ copied away from its run (into a serving folder) was served at the backbone's 512
    tokens instead of the run's 32; the adapter now carries max_length, the task spec and the tokenizer policy."""
    from test_serve import Served, same

    from pasta_cli import load_adapter
    from pasta_cli.adapter import inference_settings
    from pasta_cli.deploy.server import build

    data = long_rows(tmp_path / "long.csv")
    alone = tmp_path / "serving" / "pairs"
    shutil.copytree(runs["pairs"] / "adapter", alone)
    assert not (alone.parent / "config.yaml").exists()
    settings = inference_settings(alone)
    assert settings["max_length"] == 32 and settings["task_spec"]["text"] == ["q", "s"]
    assert settings["task_spec"]["labels"] == ["no", "yes"] and settings["tokenizer"]["truncation"] == "longest_first"
    out = {}
    for name, adapter in (("run", runs["pairs"] / "adapter"), ("copy", alone)):  # no --columns: the spec says
        run(["--precision", "fp32", "--adapter", f"pairs={adapter}", "--input", f"pairs={data}", "--output", str(tmp_path / name),
             "--no-progress"])
        out[name] = [(tmp_path / name / f).read_text() for f in ("pairs.jsonl", "pairs.tsv")]
    assert out["copy"] == out["run"]
    want = [json.loads(line) for line in out["run"][0].splitlines()]
    # the comparison can fail: at the backbone's 512 tokens the same rows get other probabilities
    items = [{"task": "pairs", "text": [r["q"], r["s"]]} for r in csv.DictReader(data.open())]
    uncut = MultiTaskPasta(runs["backbone"], precision="fp32")
    uncut.add_adapter("pairs", alone, max_length=512)
    assert not all(same(g, w) for g, w in zip(uncut.predict(items), want))
    # load_adapter's tokenizer cuts where the run did
    model, tok = load_adapter(alone)
    enc = tok(items[0]["text"][0], items[0]["text"][1], truncation=True, return_tensors="pt",
              return_special_tokens_mask=True)
    assert enc["input_ids"].shape[1] == 32
    assert model(**enc).logits.softmax(-1)[0].tolist() == pytest.approx(list(want[0]["probabilities"].values()),
                                                                         abs=1e-5)
    # pasta-serve on the copied folder: the same answers
    app, _, _ = build(["--precision", "fp32", "--adapters-dir", str(alone.parent)])
    server = Served(app)
    try:
        deadline = time.time() + 30
        while not (tasks := server.request("/tasks")[1]["tasks"]) and time.time() < deadline:
            time.sleep(0.05)  # the folder's first look
        status, body, _ = server.request("/predict", {"items": items})
    finally:
        server.close()
    assert status == 200 and tasks[0]["max_length"] == 32
    assert all(same({k: v for k, v in g.items() if k != "task"}, w) for g, w in zip(body["predictions"], want))


def test_an_adapter_saved_before_it_carried_its_task_reads_its_run_folder(runs, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(runs["pairs"], old)
    config = json.loads((old / "adapter" / "adapter_config.json").read_text())
    for key in ("max_length", "task_spec", "tokenizer"):
        del config[key]
    (old / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    data = long_rows(tmp_path / "long.csv")
    for name, adapter in (("new", runs["pairs"] / "adapter"), ("old", old / "adapter")):
        run(["--precision", "fp32", "--adapter", f"pairs={adapter}", "--input", f"pairs={data}", "--output", str(tmp_path / name),
             "--no-progress"])
    assert (tmp_path / "old" / "pairs.jsonl").read_text() == (tmp_path / "new" / "pairs.jsonl").read_text()
    assert MultiTaskPasta(runs["backbone"], precision="fp32").add_adapter("pairs", old / "adapter").max_length == 32


def test_wrong_columns_and_an_output_that_is_a_file_are_one_line(runs, tmp_path, cli):
    adapter = f"pairs={runs['pairs'] / 'adapter'}"
    data = runs["data"] / "test.csv"
    code, err = cli("--adapter", adapter, "--input", f"pairs={data}", "--columns", "pairs=question,s",
                    "--output", tmp_path / "o")
    assert code == 2 and err.splitlines() == [
        f"pasta-predict: error: '{data}' line 2: no column 'question' (--columns pairs=question,s); the file's columns "
        "are 'id', 'q', 's': name the text columns with --columns pairs=id,q"], err
    taken = tmp_path / "taken"
    taken.write_text("not a folder\n")
    for output in (taken, taken / "sub"):
        code, err = cli("--adapter", adapter, "--input", f"pairs={data}", "--output", output)
        assert code == 2 and err.splitlines() == [
            f"pasta-predict: error: --output {output}: '{taken}' is a file, not a folder: name a folder for the "
            "<task>.jsonl files (it is made if missing)"], err
        assert "resume" not in err


def test_a_lone_surrogate_in_an_input_file_is_one_line_naming_its_line(runs, tmp_path, cli):
    """The same check as pasta-serve's (items.parse_item): JSON lines may escape a lone surrogate, which the
    fast tokenizer would refuse with a TypeError traceback."""
    data = tmp_path / "rows.jsonl"
    data.write_text('{"q": "is it red?", "s": "it is."}\n{"q": "a \\ud83d b", "s": "x"}\n')
    code, err = cli("--adapter", f"pairs={runs['pairs'] / 'adapter'}", "--input", f"pairs={data}",
                    "--output", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "line 2: " in err and "\\ud83d" in err and "surrogate" in err, err
    assert not (tmp_path / "o").exists()
