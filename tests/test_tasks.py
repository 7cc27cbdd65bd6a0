"""Task loaders on small files in the original GLUE / CoNLL-2003 layouts, tokenization,
batching, metrics glue, submissions, and the real data in ../shared/data when present."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pasta_cli import tasks
from pasta_cli.errors import PastaError
from pasta_cli.tasks import compute_metrics, encode, load_task, make_collator, predictions, test_prediction_rows

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"
ALL_TASKS = ["rte", "mrpc", "cola", "stsb", "sst2", "qnli", "mnli", "qqp", "conll2003", "builtin"]


def conf(name: str, **over) -> dict:
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    cfg.update(over)
    return cfg


def write(path: Path, lines: list[str], trailing_newline: bool = True, bom: bool = False) -> None:
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))


def tsv(*rows) -> list[str]:
    return ["\t".join(map(str, r)) for r in rows]


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_TASKS)
def test_config_schema(name):
    cfg = conf(name)
    for key in ("name", "kind", "pair", "hub", "glue_folder", "data_dir", "labels", "metrics", "main_metric",
                "eval_splits", "max_train_samples", "max_eval_samples"):
        assert key in cfg, f"{name}.yaml lacks {key}"
    assert cfg["name"] == name
    assert cfg["main_metric"] in cfg["metrics"]
    assert cfg["data_dir"] is None
    expected_main = {"mrpc": "f1", "qqp": "f1", "stsb": "spearman", "cola": "matthews", "conll2003": "entity_f1"}
    assert cfg["main_metric"] == expected_main.get(name, "accuracy")
    if name == "builtin":
        assert {"seed", "train_size", "dev_size", "test_size"} <= set(cfg)
    elif name == "conll2003":
        assert cfg["hub"]["path"] == "eriktks/conll2003"
    else:
        assert cfg["hub"] == {"path": "nyu-mll/glue", "name": name}
    if name == "mnli":
        assert cfg["eval_splits"] == ["validation_matched", "validation_mismatched"]


def test_hydra_group_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="rte", overrides=["data_dir=/somewhere", "max_train_samples=10"])
    assert cfg.data_dir == "/somewhere" and cfg.labels == ["entailment", "not_entailment"]


# --------------------------------------------------------------------------------------------
# local GLUE layouts
# --------------------------------------------------------------------------------------------


def test_rte_local(tmp_path):
    head = ("index", "sentence1", "sentence2", "label")
    write(tmp_path / "train.tsv", tsv(head, (0, 'He said "no" twice.', "He spoke.", "entailment"),
                                      (1, 'A "quoted', "lone quote", "not_entailment"),
                                      (2, "Third.", "x", "entailment")))
    write(tmp_path / "dev.tsv", tsv(head, (0, "Dev one.", "d", "not_entailment"), (1, "Dev two.", "e", "entailment")),
          trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("index", "sentence1", "sentence2"), (7, "T0", "u"), (8, "T1", 'v "w"')))
    td = load_task(conf("rte", data_dir=str(tmp_path)))
    assert td.text_columns == ("sentence1", "sentence2") and td.pair and td.kind == "classification"
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 3, "validation": 2, "test": 2}
    tr = td.splits["train"]
    assert tr[0] == {"sentence1": 'He said "no" twice.', "sentence2": "He spoke.", "label": 0, "idx": 0}
    assert tr[1]["sentence1"] == 'A "quoted' and tr[1]["label"] == 1
    assert td.splits["validation"]["label"] == [1, 0]  # last line without newline is read
    assert td.splits["test"]["label"] == [-1, -1] and td.splits["test"]["idx"] == [7, 8]
    assert td.splits["test"][1]["sentence2"] == 'v "w"'
    assert td.eval_splits == ["validation"] and td.test_splits == ["test"]
    assert td.num_labels == 2 and td.id2label == {0: "entailment", 1: "not_entailment"}


def test_parent_glue_folder_is_accepted(tmp_path):
    d = tmp_path / "RTE"
    d.mkdir()
    head = ("index", "sentence1", "sentence2", "label")
    write(d / "train.tsv", tsv(head, (0, "a", "b", "entailment")))
    write(d / "dev.tsv", tsv(head, (0, "a", "b", "entailment")))
    td = load_task(conf("rte", data_dir=str(tmp_path)))  # glue_data/ rather than glue_data/RTE
    assert len(td.splits["train"]) == 1 and "test" not in td.splits and td.test_splits == []


def test_qnli_local(tmp_path):
    head = ("index", "question", "sentence", "label")
    write(tmp_path / "train.tsv", tsv(head, (0, 'What is "it"?', "It is.", "entailment"), (1, "Q?", "S.", "not_entailment")))
    write(tmp_path / "dev.tsv", tsv(head, (0, "Q2?", "S2.", "not_entailment")), trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("index", "question", "sentence"), (0, "Q3?", "S3.")))
    td = load_task(conf("qnli", data_dir=str(tmp_path)))
    assert td.splits["train"][0] == {"sentence1": 'What is "it"?', "sentence2": "It is.", "label": 0, "idx": 0}
    assert td.splits["validation"]["label"] == [1]
    assert td.splits["test"]["label"] == [-1]


def test_mrpc_local_with_bom_header(tmp_path):
    head = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    write(tmp_path / "train.tsv", tsv(head, (1, 702876, 702977, 'Amrozi said "x".', "Referring to him."),
                                      (0, 2108705, 2108831, "Yucaipa owned.", "Yucaipa bought.")), bom=True)
    write(tmp_path / "dev.tsv", tsv(head, (1, 1, 2, "Dev a.", "Dev b.")), bom=True, trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("index", "#1 ID", "#2 ID", "#1 String", "#2 String"), (0, 5, 6, "T a.", "T b."),
                                     (1, 7, 8, "T c.", "T d.")))
    td = load_task(conf("mrpc", data_dir=str(tmp_path)))
    assert td.splits["train"][0] == {"sentence1": 'Amrozi said "x".', "sentence2": "Referring to him.", "label": 1, "idx": 0}
    assert td.splits["train"]["label"] == [1, 0] and td.splits["train"]["idx"] == [0, 1]
    assert td.splits["validation"]["label"] == [1]
    assert td.splits["test"]["idx"] == [0, 1] and td.splits["test"]["label"] == [-1, -1]
    assert td.labels == ["not_equivalent", "equivalent"] and td.main_metric == "f1"


def test_stsb_local(tmp_path):
    head = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score")
    write(tmp_path / "train.tsv", tsv(head, (0, "main-captions", "MSRvid", "2012test", 1, "none", "none",
                                             'A "plane" is taking off.', "An air plane is taking off.", "5.000"),
                                      (1, "main-news", "headlines", "2013", 2, "none", "none", "a", "b", "0.800")))
    write(tmp_path / "dev.tsv", tsv(head, (0, "g", "f", "y", 0, "n", "n", "c", "d", "2.5")), trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(head[:-1], (0, "g", "f", "y", 0, "n", "n", "e", "f")))
    td = load_task(conf("stsb", data_dir=str(tmp_path)))
    assert td.kind == "regression" and td.labels is None and td.num_labels == 1
    tr = td.splits["train"]
    assert tr[0]["sentence1"] == 'A "plane" is taking off.'
    assert tr["label"] == pytest.approx([5.0, 0.8])
    assert td.splits["validation"]["label"] == pytest.approx([2.5])
    assert td.splits["test"]["label"] == [-1.0]


def test_qqp_local(tmp_path):
    head = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
    write(tmp_path / "train.tsv", tsv(head, (133273, 213221, 213222, 'How is "life"?', "How's life?", 1),
                                      (402555, 536040, 536041, "A?", "B?", 0)))
    write(tmp_path / "dev.tsv", tsv(head, (201359, 303345, 303346, "C?", "D?", 0)), trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("id", "question1", "question2"), (0, "E?", "F?")))
    td = load_task(conf("qqp", data_dir=str(tmp_path)))
    assert td.splits["train"][0] == {"sentence1": 'How is "life"?', "sentence2": "How's life?", "label": 1, "idx": 133273}
    assert td.splits["validation"]["idx"] == [201359]
    assert td.splits["test"]["label"] == [-1]


MNLI_TRAIN = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")
MNLI_DEV = MNLI_TRAIN[:11] + ("label2", "label3", "label4", "label5", "gold_label")
MNLI_TEST = MNLI_TRAIN[:10]


def _mnli_row(i, s1, s2, *labels):
    return (i, 100 + i, f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", s1, s2, *labels)


def test_mnli_local_matched_and_mismatched(tmp_path):
    write(tmp_path / "train.tsv", tsv(MNLI_TRAIN, _mnli_row(0, 'He said "go".', "He spoke.", "neutral", "neutral"),
                                      _mnli_row(1, "P", "H", "contradiction", "contradiction")))
    write(tmp_path / "dev_matched.tsv", tsv(MNLI_DEV, _mnli_row(0, "m0", "h", *["entailment"] * 6),
                                            _mnli_row(1, "m1", "h", *["neutral"] * 6)))
    write(tmp_path / "dev_mismatched.tsv", tsv(MNLI_DEV, _mnli_row(0, "mm0", "h", *["contradiction"] * 6)),
          trailing_newline=False)
    write(tmp_path / "test_matched.tsv", tsv(MNLI_TEST, _mnli_row(0, "t0", "h")))
    write(tmp_path / "test_mismatched.tsv", tsv(MNLI_TEST, _mnli_row(0, "tm0", "h"), _mnli_row(1, "tm1", "h")))
    td = load_task(conf("mnli", data_dir=str(tmp_path)))
    assert td.eval_splits == ["validation_matched", "validation_mismatched"]
    assert td.test_splits == ["test_matched", "test_mismatched"]
    assert {k: len(v) for k, v in td.splits.items()} == {
        "train": 2, "validation_matched": 2, "validation_mismatched": 1, "test_matched": 1, "test_mismatched": 2}
    assert td.splits["train"][0]["sentence1"] == 'He said "go".'
    assert td.splits["train"]["label"] == [1, 2]
    assert td.splits["validation_matched"]["label"] == [0, 1]
    assert td.splits["validation_mismatched"]["sentence1"] == ["mm0"] and td.splits["validation_mismatched"]["label"] == [2]
    assert td.splits["test_mismatched"]["label"] == [-1, -1]
    # compute_metrics works per eval split name
    for split in td.eval_splits:
        y = np.array(td.splits[split]["label"])
        assert compute_metrics(td, y, y) == {"accuracy": 1.0}


def test_cola_local_headerless(tmp_path):
    write(tmp_path / "train.tsv", tsv(("gj04", 1, "", "Our friends won't buy this."),
                                      ("gj04", 0, "*", "They drank the pub."),
                                      ("l-93", 1, "", 'Susan whispered "Shut up".')))
    write(tmp_path / "dev.tsv", tsv(("gj04", 1, "", "The sailors rode."), ("w_80", 0, "*", "John himself.")),
          trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("index", "sentence"), (0, "Bill whistled."), (1, 'A "b" c.')))
    td = load_task(conf("cola", data_dir=str(tmp_path)))
    assert td.text_columns == ("sentence",) and not td.pair
    assert td.splits["train"]["label"] == [1, 0, 1]
    assert td.splits["train"][2] == {"sentence": 'Susan whispered "Shut up".', "label": 1, "idx": 2}
    assert td.splits["validation"]["label"] == [1, 0]
    assert td.splits["test"][1] == {"sentence": 'A "b" c.', "label": -1, "idx": 1}
    assert td.main_metric == "matthews"


def test_sst2_local_keeps_text(tmp_path):
    write(tmp_path / "train.tsv", tsv(("sentence", "label"), ("hide new secretions ", 0), ("a gem ", 1)))
    write(tmp_path / "dev.tsv", tsv(("sentence", "label"), ("it 's charming . ", 1)), trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("index", "sentence"), (0, "uneasy mishmash ."), (1, "x")))
    td = load_task(conf("sst2", data_dir=str(tmp_path)))
    assert td.splits["train"][0] == {"sentence": "hide new secretions ", "label": 0, "idx": 0}
    assert td.splits["validation"]["label"] == [1]
    assert td.splits["test"]["idx"] == [0, 1]


CONLL = [
    "-DOCSTART- -X- -X- O",
    "",
    "EU NNP B-NP B-ORG",
    "rejects VBZ B-VP O",
    "German JJ B-NP B-MISC",
    "call NN I-NP O",
    "",
    "Peter NNP B-NP B-PER",
    "Blackburn NNP I-NP I-PER",
    "",
    "",
    "-DOCSTART- -X- -X- O",
    "",
    'He PRP B-NP O',
    '" " O O',
]


def test_conll_local(tmp_path):
    for split in ("train", "validation", "test"):
        write(tmp_path / f"{split}.txt", CONLL, trailing_newline=(split != "test"))
    td = load_task(conf("conll2003", data_dir=str(tmp_path)))
    assert td.kind == "token_classification" and td.text_columns == ("tokens",)
    tr = td.splits["train"]
    assert len(tr) == 3 and len(td.splits["test"]) == 3
    lab = td.labels
    assert tr[0] == {"tokens": ["EU", "rejects", "German", "call"],
                     "label": [lab.index("B-ORG"), 0, lab.index("B-MISC"), 0], "idx": 0}
    assert tr[1]["label"] == [lab.index("B-PER"), lab.index("I-PER")]
    assert tr[2]["tokens"] == ["He", '"']
    assert td.main_metric == "entity_f1" and td.num_labels == 9


def test_conll_alternative_validation_name(tmp_path):
    write(tmp_path / "train.txt", CONLL)
    write(tmp_path / "valid.txt", CONLL[:6])
    td = load_task(conf("conll2003", data_dir=str(tmp_path)))
    assert len(td.splits["validation"]) == 1 and "test" not in td.splits


def test_subsets_are_seeded_and_in_file_order(tmp_path):
    head = ("index", "sentence1", "sentence2", "label")
    rows = [(i, f"s{i}", "h", "entailment") for i in range(50)]
    write(tmp_path / "train.tsv", tsv(head, *rows))
    write(tmp_path / "dev.tsv", tsv(head, *rows[:20]))
    a = load_task(conf("rte", data_dir=str(tmp_path), max_train_samples=10, max_eval_samples=5))
    b = load_task(conf("rte", data_dir=str(tmp_path), max_train_samples=10, max_eval_samples=5))
    c = load_task(conf("rte", data_dir=str(tmp_path), max_train_samples=10, sample_seed=1))
    assert len(a.splits["train"]) == 10 and len(a.splits["validation"]) == 5
    assert a.splits["train"]["idx"] == b.splits["train"]["idx"] == sorted(a.splits["train"]["idx"])
    assert a.splits["train"]["idx"] != list(range(10))  # a shuffle, not the head of the file
    assert c.splits["train"]["idx"] != a.splits["train"]["idx"]
    assert len(c.splits["validation"]) == 20


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_missing_file_names_file_and_layout(tmp_path):
    write(tmp_path / "dev.tsv", tsv(("index", "sentence1", "sentence2", "label")))
    with pytest.raises(PastaError) as e:
        load_task(conf("rte", data_dir=str(tmp_path)))
    msg = str(e.value)
    assert f"'{tmp_path / 'train.tsv'}' not found" in msg
    assert "train.tsv/dev.tsv/test.tsv" in msg and "task.data_dir" in msg


def test_missing_mnli_dev_names_mnli_layout(tmp_path):
    write(tmp_path / "train.tsv", tsv(MNLI_TRAIN, _mnli_row(0, "a", "b", "neutral", "neutral")))
    with pytest.raises(PastaError, match="dev_matched.tsv' not found.*dev_mismatched.tsv"):
        load_task(conf("mnli", data_dir=str(tmp_path)))


def test_missing_data_dir(tmp_path):
    with pytest.raises(PastaError, match="is not a folder"):
        load_task(conf("sst2", data_dir=str(tmp_path / "nope")))


def test_wrong_column_count_names_file_and_line(tmp_path):
    head = ("index", "sentence1", "sentence2", "label")
    write(tmp_path / "train.tsv", tsv(head, (0, "a", "b", "entailment")) + ["1\tonly two"])
    write(tmp_path / "dev.tsv", tsv(head))
    with pytest.raises(PastaError) as e:
        load_task(conf("rte", data_dir=str(tmp_path)))
    assert f"'{tmp_path / 'train.tsv'}' line 3" in str(e.value) and "expected 4" in str(e.value) and "found 2" in str(e.value)


def test_wrong_header_names_file_and_expected_columns(tmp_path):
    write(tmp_path / "train.tsv", tsv(("sentence", "label"), ("x", 1)))  # an SST-2 file given to RTE
    write(tmp_path / "dev.tsv", tsv(("sentence", "label"), ("x", 1)))
    with pytest.raises(PastaError) as e:
        load_task(conf("rte", data_dir=str(tmp_path)))
    msg = str(e.value)
    assert f"'{tmp_path / 'train.tsv'}' line 1" in msg and "'sentence1'" in msg and "'label'" in msg


def test_cola_with_header_is_malformed(tmp_path):
    write(tmp_path / "train.tsv", tsv(("index", "sentence"), (0, "x")))
    write(tmp_path / "dev.tsv", tsv(("gj04", 1, "", "x")))
    with pytest.raises(PastaError, match=r"train.tsv' line 1: expected 4 tab-separated columns \(no header\), found 2"):
        load_task(conf("cola", data_dir=str(tmp_path)))


def test_unknown_label(tmp_path):
    head = ("index", "sentence1", "sentence2", "label")
    write(tmp_path / "train.tsv", tsv(head, (0, "a", "b", "entailment"), (1, "a", "b", "neutral")))
    write(tmp_path / "dev.tsv", tsv(head))
    with pytest.raises(PastaError, match=r"train.tsv' line 3: unknown label 'neutral'"):
        load_task(conf("rte", data_dir=str(tmp_path)))
    write(tmp_path / "train.tsv", tsv(("sentence", "label"), ("a", 2)))
    write(tmp_path / "dev.tsv", tsv(("sentence", "label"), ("a", 1)))
    with pytest.raises(PastaError, match="unknown label '2'"):
        load_task(conf("sst2", data_dir=str(tmp_path)))


def test_conll_errors(tmp_path):
    write(tmp_path / "train.txt", CONLL[:4] + ["call NN O"])
    write(tmp_path / "validation.txt", CONLL)
    with pytest.raises(PastaError, match=r"train.txt' line 5: expected 4 space-separated columns"):
        load_task(conf("conll2003", data_dir=str(tmp_path)))
    write(tmp_path / "train.txt", CONLL[:4] + ["call NN I-NP B-FOO"])
    with pytest.raises(PastaError, match=r"train.txt' line 5: unknown NER tag 'B-FOO'"):
        load_task(conf("conll2003", data_dir=str(tmp_path)))


def test_config_errors(tmp_path):
    with pytest.raises(PastaError, match="unknown task 'nope'"):
        load_task({"name": "nope"})
    with pytest.raises(PastaError, match="eval_splits names 'validation_matched'"):
        load_task(conf("rte", data_dir=str(tmp_path), eval_splits=["validation_matched"]))
    with pytest.raises(PastaError, match="main_metric='f1' is not in task.metrics"):
        load_task(conf("rte", data_dir=str(tmp_path), main_metric="f1"))


# --------------------------------------------------------------------------------------------
# hub and builtin sources (no network: datasets.load_dataset / the generator are faked)
# --------------------------------------------------------------------------------------------


def test_hub_failure_is_one_line_with_offline_options(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\n(ConnectError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(PastaError) as e:
        load_task(conf("rte"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "task.data_dir=/path/to/RTE" in msg and "task=builtin" in msg and "nyu-mll/glue" in msg


def test_hub_mnli_columns_are_mapped(monkeypatch):
    import datasets
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    names = ["entailment", "neutral", "contradiction"]
    feats = Features({"premise": Value("string"), "hypothesis": Value("string"),
                      "label": ClassLabel(names=names), "idx": Value("int32")})

    def split(n, label):
        return Dataset.from_dict({"premise": [f"p{i}" for i in range(n)], "hypothesis": ["h"] * n,
                                  "label": [label] * n, "idx": list(range(10, 10 + n))}, features=feats)

    raw = DatasetDict({"train": split(3, 2), "validation_matched": split(2, 1), "validation_mismatched": split(1, 0),
                       "test_matched": split(2, -1), "test_mismatched": split(1, -1)})
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return raw

    monkeypatch.setattr(datasets, "load_dataset", fake)
    td = load_task(conf("mnli"))
    assert seen == {"path": "nyu-mll/glue", "name": "mnli"}
    assert td.splits["train"][0] == {"sentence1": "p0", "sentence2": "h", "label": 2, "idx": 10}
    assert td.splits["validation_matched"]["label"] == [1, 1]
    assert td.splits["test_mismatched"]["label"] == [-1]


def test_hub_conll_tags_mapped_by_name(monkeypatch):
    import datasets
    from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

    hub_names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"][::-1]
    feats = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=hub_names))})
    ds = Dataset.from_dict({"tokens": [["EU", "x"]], "ner_tags": [[hub_names.index("B-ORG"), hub_names.index("O")]]},
                           features=feats)
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return DatasetDict({"train": ds, "validation": ds, "test": ds})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    td = load_task(conf("conll2003"))
    assert seen["revision"] == "refs/convert/parquet"
    assert td.splits["train"][0]["label"] == [td.labels.index("B-ORG"), td.labels.index("O")]


def test_builtin_uses_generator_contract(monkeypatch):
    calls = {}

    def build_splits(seed, train_size, dev_size, test_size):
        calls.update(seed=seed, sizes=(train_size, dev_size, test_size))

        def rows(n, tag):
            return [{"sentence1": f"{tag}{i}", "sentence2": "b", "label": i % 3} for i in range(n)]

        return {"train": rows(train_size, "tr"), "validation": rows(dev_size, "va"), "test": rows(test_size, "te")}

    fake = types.ModuleType("pasta_cli.synthetic")
    fake.LABELS = ["x", "y", "z"]
    fake.build_splits = build_splits
    monkeypatch.setitem(sys.modules, "pasta_cli.synthetic", fake)
    td = load_task(conf("builtin", train_size=6, dev_size=4, test_size=2, seed=3))
    assert calls == {"seed": 3, "sizes": (6, 4, 2)}
    assert td.labels == ["x", "y", "z"] and td.num_labels == 3 and td.pair
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 6, "validation": 4, "test": 2}
    assert td.splits["train"][4] == {"sentence1": "tr4", "sentence2": "b", "label": 1, "idx": 4}


# --------------------------------------------------------------------------------------------
# encode / collator / predictions / submissions
# --------------------------------------------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "eu", "rejects", "german", "call", "he", "said",
         "un", "##believ", "##able", "peter", "black", "##burn", "a", "b", "c", '"', "."]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)})


def _ids(*tokens):
    return [VOCAB.index(t) for t in tokens]


def _pair_task(tmp_path):
    head = ("index", "sentence1", "sentence2", "label")
    write(tmp_path / "train.tsv", tsv(head, (0, 'He said "a".', "b c", "not_entailment"),
                                      (1, "a", "b", "entailment"),
                                      (2, "a b c a b c a b c", "a b c a b c", "entailment")))
    write(tmp_path / "dev.tsv", tsv(head, (5, "c", "a", "entailment")))
    return load_task(conf("rte", data_dir=str(tmp_path)))


def test_encode_pair(tmp_path, tokenizer):
    enc = encode(_pair_task(tmp_path), tokenizer, max_length=12)
    tr = enc["train"]
    assert set(tr.column_names) == {"input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "labels", "idx"}
    r0 = tr[0]
    assert r0["input_ids"] == _ids("[CLS]", "he", "said", '"', "a", '"', ".", "[SEP]", "b", "c", "[SEP]")
    assert r0["special_tokens_mask"] == [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1]
    assert r0["token_type_ids"] == [0] * 8 + [1] * 3
    assert r0["attention_mask"] == [1] * 11
    assert r0["labels"] == 1 and r0["idx"] == 0
    assert len(tr[1]["input_ids"]) == 5  # no padding here
    long = tr[2]
    assert len(long["input_ids"]) == 12  # truncated to max_length, both [SEP]s kept
    assert long["special_tokens_mask"][0] == 1 and long["special_tokens_mask"][-1] == 1
    assert sum(long["special_tokens_mask"]) == 3
    assert enc["validation"][0]["idx"] == 5


def _ner_task(tmp_path):
    lines = ["-DOCSTART- -X- -X- O", "", "EU NNP B-NP B-ORG", "unbelievable JJ I-NP O", "German JJ B-NP B-MISC", "",
             "Peter NNP B-NP B-PER", "Blackburn NNP I-NP I-PER", ""]
    write(tmp_path / "train.txt", lines)
    write(tmp_path / "validation.txt", lines)
    return load_task(conf("conll2003", data_dir=str(tmp_path)))


def test_encode_ner_labels_first_subword(tmp_path, tokenizer):
    td = _ner_task(tmp_path)
    L = td.labels.index
    enc = encode(td, tokenizer, max_length=16)
    r0 = enc["train"][0]
    assert r0["input_ids"] == _ids("[CLS]", "eu", "un", "##believ", "##able", "german", "[SEP]")
    assert r0["labels"] == [-100, L("B-ORG"), L("O"), -100, -100, L("B-MISC"), -100]
    assert r0["special_tokens_mask"] == [1, 0, 0, 0, 0, 0, 1]
    r1 = enc["train"][1]
    assert r1["input_ids"] == _ids("[CLS]", "peter", "black", "##burn", "[SEP]")
    assert r1["labels"] == [-100, L("B-PER"), L("I-PER"), -100, -100]
    short = encode(td, tokenizer, max_length=4)["train"][0]
    assert short["input_ids"] == _ids("[CLS]", "eu", "un", "[SEP]")
    assert short["labels"] == [-100, L("B-ORG"), L("O"), -100]


def test_collator_pads_classification(tmp_path, tokenizer):
    td = _pair_task(tmp_path)
    enc = encode(td, tokenizer, max_length=12)
    collate = make_collator(td, tokenizer)
    batch = collate([enc["train"][0], enc["train"][1]])
    assert "idx" not in batch
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "labels"}
    assert batch["input_ids"].shape == (2, 11)
    assert batch["input_ids"][1].tolist() == _ids("[CLS]", "a", "[SEP]", "b", "[SEP]") + [0] * 6
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 6
    assert batch["special_tokens_mask"][1].tolist() == [1, 0, 1, 0, 1] + [1] * 6
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    # a torch DataLoader over the encoded split works with it
    loader = torch.utils.data.DataLoader(enc["train"], batch_size=3, collate_fn=collate)
    assert next(iter(loader))["input_ids"].shape == (3, 12)


def test_collator_regression_labels_are_float(tmp_path, tokenizer):
    head = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score")
    write(tmp_path / "train.tsv", tsv(head, (0, "g", "f", "y", 0, "n", "n", "a b", "c", "3.2"), (1, "g", "f", "y", 0, "n", "n", "a", "c", "1")))
    write(tmp_path / "dev.tsv", tsv(head))
    td = load_task(conf("stsb", data_dir=str(tmp_path)))
    enc = encode(td, tokenizer)
    batch = make_collator(td, tokenizer)(list(enc["train"]))
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == pytest.approx([3.2, 1.0])


def test_collator_pads_ner_labels(tmp_path, tokenizer):
    td = _ner_task(tmp_path)
    enc = encode(td, tokenizer)
    batch = make_collator(td, tokenizer)([enc["train"][0], enc["train"][1]])
    assert "idx" not in batch
    assert batch["labels"].shape == batch["input_ids"].shape == (2, 7)
    assert batch["labels"][1].tolist()[-2:] == [-100, -100]
    assert batch["special_tokens_mask"][1].tolist() == [1, 0, 0, 0, 1, 1, 1]
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0, 0]


def test_ner_prediction_rows_from_token_predictions(tmp_path, tokenizer):
    td = _ner_task(tmp_path)
    L = td.labels.index
    enc = encode(td, tokenizer)
    # per-token predictions as the trainer makes them: (N, T) padded; word starts are at
    # positions 1, 2, 5 ("EU", "un##believ##able", "German") and 1, 2 ("Peter", "Black##burn")
    preds = np.full((2, 8), L("I-MISC"))
    preds[0, [1, 2, 5]] = [L("B-ORG"), L("O"), L("B-MISC")]
    preds[1, [1, 2]] = [L("B-PER"), L("I-PER")]
    expected = [(0, "B-ORG O B-MISC"), (1, "B-PER I-PER")]
    assert test_prediction_rows(td, enc["validation"]["idx"], preds, split="validation") == expected
    assert test_prediction_rows(td, enc["train"]["idx"], preds, split="train") == expected
    labels = np.array([r + [-100] * (8 - len(r)) for r in enc["train"]["labels"]])
    assert test_prediction_rows(td, [0, 1], preds, labels=labels) == expected
    # idx alone finds the split when it is unambiguous
    td.word_starts.pop("validation")
    assert test_prediction_rows(td, enc["train"]["idx"], preds) == expected


def test_builtin_with_the_real_generator():
    synthetic = pytest.importorskip("pasta_cli.synthetic", reason="pasta_cli/synthetic.py is not written yet")
    td = load_task(conf("builtin", train_size=20, dev_size=10, test_size=10))
    assert td.labels == list(synthetic.LABELS)
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 20, "validation": 10, "test": 10}
    assert set(td.splits["train"]["label"]) <= set(range(len(td.labels)))


def test_predictions_and_metrics():
    cls = tasks.TaskData("mrpc", "classification", True, ["not_equivalent", "equivalent"], ["accuracy", "f1"], "f1",
                         {}, ["validation"], ("sentence1", "sentence2"), submission_labels="ids")
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0], [1.0, 0.0]])
    preds = predictions(cls, logits)
    assert preds.tolist() == [1, 0, 1, 0]
    # gold 1 1 1 0: TP=2 FN=1 FP=0 TN=1 -> acc 3/4, F1 = 4/5
    assert compute_metrics(cls, preds, np.array([1, 1, 1, 0])) == {"accuracy": pytest.approx(0.75), "f1": pytest.approx(0.8)}
    with pytest.raises(PastaError, match="without labels"):
        compute_metrics(cls, preds, np.array([-1, -1, -1, -1]))
    assert test_prediction_rows(cls, [3, 4], np.array([1, 0])) == [(3, 1), (4, 0)]

    rte = tasks.TaskData("rte", "classification", True, ["entailment", "not_entailment"], ["accuracy"], "accuracy",
                         {}, ["validation"], ("sentence1", "sentence2"))
    assert test_prediction_rows(rte, np.array([0, 1]), np.array([1, 0])) == [(0, "not_entailment"), (1, "entailment")]

    reg = tasks.TaskData("stsb", "regression", True, None, ["pearson", "spearman"], "spearman", {}, ["validation"],
                         ("sentence1", "sentence2"))
    p = predictions(reg, np.array([[1.0], [2.0], [3.0], [4.0]]))
    assert p.shape == (4,)
    out = compute_metrics(reg, p, np.array([2.0, 4.0, 5.0, 9.0]))
    assert out["pearson"] == pytest.approx(11 / np.sqrt(130)) and out["spearman"] == pytest.approx(1.0)
    assert test_prediction_rows(reg, [0, 1], p[:2]) == [(0, 1.0), (1, 2.0)]


def test_token_metrics_use_labelled_positions_only():
    labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    td = tasks.TaskData("conll2003", "token_classification", False, labels, ["entity_f1", "entity_precision", "entity_recall"],
                        "entity_f1", {}, ["validation"], ("tokens",))
    # sentence 0: [CLS] Peter Black ##burn [SEP]; sentence 1: [CLS] EU [SEP] pad pad
    gold = np.array([[-100, 1, 2, -100, -100], [-100, 3, -100, -100, -100]])
    # predictions at ignored positions are garbage on purpose; they must not count
    logits = np.zeros((2, 5, 9))
    for (i, t), tag in {(0, 0): 5, (0, 1): 1, (0, 2): 2, (0, 3): 7, (0, 4): 3, (1, 0): 1, (1, 1): 5, (1, 2): 3}.items():
        logits[i, t, tag] = 1.0
    preds = predictions(td, logits)
    assert preds.shape == (2, 5)
    # gold entities: PER (s0), ORG (s1); predicted: PER (s0) right, LOC (s1) wrong -> P = R = F1 = 1/2
    out = compute_metrics(td, preds, gold)
    assert out == {"entity_f1": pytest.approx(0.5), "entity_precision": pytest.approx(0.5), "entity_recall": pytest.approx(0.5)}
    words, _ = tasks.word_tags(preds, gold)
    assert words == [[1, 2], [5]]
    assert test_prediction_rows(td, [0, 1], words) == [(0, "B-PER I-PER"), (1, "B-LOC")]


# --------------------------------------------------------------------------------------------
# the real data (../shared/data)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,folder,sizes",
    [
        ("rte", "glue/RTE", (2490, 277, 3000)),
        ("cola", "glue/CoLA", (8551, 1043, 1063)),
        ("sst2", "glue/SST-2", (67349, 872, 1821)),
        ("conll2003", "conll2003", (14041, 3250, 3453)),
    ],
)
def test_real_data_sizes(data_root, name, folder, sizes):
    d = data_root / folder
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    td = load_task(conf(name, data_dir=str(d)))
    assert (len(td.splits["train"]), len(td.splits["validation"]), len(td.splits["test"])) == sizes
    train = td.splits["train"]
    if name == "rte":
        assert train[0]["label"] == td.labels.index("not_entailment")
        assert sum('"' in s for s in list(train["sentence1"]) + list(train["sentence2"])) > 100  # bare quotes survive
        assert td.splits["test"]["label"][:3] == [-1, -1, -1]
    elif name == "cola":
        assert 'Susan whispered "Shut up".' in train["sentence"]
        assert set(train["label"]) == {0, 1}
    elif name == "sst2":
        assert train[0] == {"sentence": "hide new secretions from the parental units ", "label": 0, "idx": 0}
    else:
        L = td.labels.index
        assert train[0]["tokens"][:3] == ["EU", "rejects", "German"]
        assert train[0]["label"][:3] == [L("B-ORG"), L("O"), L("B-MISC")]
