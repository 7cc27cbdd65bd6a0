"""The data layer on small files the tests write in each shipped task's original layout, in each
format and kind; its one-line errors on bad data; the hub (faked) and the built-in generator;
tokenization, batching, predictions and prediction rows; the real data in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from pasta_cli.data import Collator, TaskData, TaskSpec, builtin, encode, load_task
from pasta_cli.errors import PastaError
from pasta_cli.eval import compute_metrics, predictions, submission_rows
from pasta_cli.eval.predictions import word_tags

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"
BUDGET = ("lr", "batch_size", "epochs")  # ${paper:...} in the GLUE YAMLs: not the data layer's concern
CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def conf(name: str, **over) -> dict:
    cfg = {k: v for k, v in yaml.safe_load((CONF / f"{name}.yaml").read_text()).items() if k not in BUDGET}
    return {**cfg, **over}


def custom(**over) -> dict:
    return {"name": "custom", **over}


def write(path: Path, lines: list[str], trailing_newline: bool = True, bom: bool = False) -> Path:
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def tsv(*rows) -> list[str]:
    return ["\t".join(map(str, r)) for r in rows]


def rows(td: TaskData, split: str) -> list[dict]:
    return td.splits[split].to_list()


def sizes(td: TaskData) -> dict[str, int]:
    return {k: len(v) for k, v in td.splits.items()}


def error(spec) -> str:
    """The message of the PastaError load_task raises: always exactly one line."""
    with pytest.raises(PastaError) as e:
        load_task(spec)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------------------------
# task YAMLs
# --------------------------------------------------------------------------------------------

# every shipped task YAML, and the test that loads it from files in its original layout
SHIPPED = {"rte": "test_rte", "qnli": "test_qnli", "mrpc": "test_mrpc_bom_header", "stsb": "test_stsb",
           "qqp": "test_qqp", "mnli": "test_mnli_matched_and_mismatched", "cola": "test_cola_headerless",
           "sst2": "test_sst2_keeps_text", "conll2003": "test_conll2003", "builtin": "test_builtin_real_generator",
           "custom": "test_custom_from_the_command_line"}


def test_every_yaml_is_a_valid_spec_and_has_a_loading_test():
    assert {p.stem for p in CONF.glob("*.yaml")} == set(SHIPPED)
    for name, test in SHIPPED.items():
        spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskSpec), conf(name)))
        assert spec.name == name and test in globals()


def test_spec_forms_are_equivalent(tmp_path):
    _rte_files(tmp_path)
    as_dict = load_task(conf("rte", data_dir=str(tmp_path)))
    as_cfg = load_task(OmegaConf.create(conf("rte", data_dir=str(tmp_path))))
    as_spec = load_task(TaskSpec(**{**conf("rte", data_dir=str(tmp_path)), "hub": None}))
    assert rows(as_dict, "train") == rows(as_cfg, "train") == rows(as_spec, "train")


# --------------------------------------------------------------------------------------------
# shipped tasks in their original layouts
# --------------------------------------------------------------------------------------------

RTE_HEAD = ("index", "sentence1", "sentence2", "label")


def _rte_files(d: Path) -> None:
    write(d / "train.tsv", tsv(RTE_HEAD, (0, 'He said "no" twice.', "He spoke.", "entailment"),
                               (1, 'A "quoted', "lone quote", "not_entailment"), (2, "Third.", "x", "entailment")))
    write(d / "dev.tsv", tsv(RTE_HEAD, (0, "Dev one.", "d", "not_entailment"), (1, "Dev two.", "e", "entailment")),
          trailing_newline=False)
    write(d / "test.tsv", tsv(("index", "sentence1", "sentence2"), (7, "T0", "u"), (8, "T1", 'v "w"')))


def test_rte(tmp_path):
    _rte_files(tmp_path)
    td = load_task(conf("rte", data_dir=str(tmp_path)))
    assert td.pair and td.kind == "classification" and sizes(td) == {"train": 3, "validation": 2, "test": 2}
    assert rows(td, "train")[0] == {"text_a": 'He said "no" twice.', "text_b": "He spoke.", "label": 0, "idx": 0}
    assert rows(td, "train")[1]["text_a"] == 'A "quoted'  # bare quotes are text
    assert td.splits["validation"]["label"] == [1, 0]  # the last line has no newline
    assert td.splits["test"]["label"] == [-1, -1] and td.splits["test"]["idx"] == [7, 8]
    assert td.splits["test"][1]["text_b"] == 'v "w"'
    assert td.eval_splits == ["validation"] and td.test_splits == ["test"]
    assert td.num_labels == 2 and td.id2label == {0: "entailment", 1: "not_entailment"}
    assert td.labelled("validation") and not td.labelled("test") and td.submission_labels == "names"


def test_qnli(tmp_path):
    head = ("index", "question", "sentence", "label")
    write(tmp_path / "train.tsv", tsv(head, (0, 'What is "it"?', "It is.", "entailment"), (1, "Q?", "S.", "not_entailment")))
    write(tmp_path / "dev.tsv", tsv(head, (0, "Q2?", "S2.", "not_entailment")), trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("index", "question", "sentence"), (0, "Q3?", "S3.")))
    td = load_task(conf("qnli", data_dir=str(tmp_path)))
    assert rows(td, "train")[0] == {"text_a": 'What is "it"?', "text_b": "It is.", "label": 0, "idx": 0}
    assert td.splits["validation"]["label"] == [1] and td.splits["test"]["label"] == [-1]


def test_mrpc_bom_header(tmp_path):
    head = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    write(tmp_path / "train.tsv", tsv(head, (1, 702876, 702977, 'Amrozi said "x".', "Referring to him."),
                                      (0, 2108705, 2108831, "Yucaipa owned.", "Yucaipa bought.")), bom=True)
    write(tmp_path / "dev.tsv", tsv(head, (1, 1, 2, "Dev a.", "Dev b.")), bom=True, trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("index", "#1 ID", "#2 ID", "#1 String", "#2 String"), (0, 5, 6, "T a.", "T b."),
                                     (1, 7, 8, "T c.", "T d.")))
    td = load_task(conf("mrpc", data_dir=str(tmp_path)))
    assert rows(td, "train")[0] == {"text_a": 'Amrozi said "x".', "text_b": "Referring to him.", "label": 1, "idx": 0}
    assert td.splits["train"]["label"] == [1, 0] and td.splits["validation"]["label"] == [1]
    assert td.splits["test"]["idx"] == [0, 1] and td.splits["test"]["label"] == [-1, -1]
    assert td.labels == ["not_equivalent", "equivalent"] and td.main_metric == "f1" and td.submission_labels == "ids"


STSB_HEAD = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score")


def test_stsb(tmp_path):
    write(tmp_path / "train.tsv", tsv(STSB_HEAD, (0, "main-captions", "MSRvid", "2012test", 1, "none", "none",
                                                  'A "plane" is taking off.', "An air plane is taking off.", "5.000"),
                                      (1, "main-news", "headlines", "2013", 2, "none", "none", "a", "b", "0.800")))
    write(tmp_path / "dev.tsv", tsv(STSB_HEAD, (0, "g", "f", "y", 0, "n", "n", "c", "d", "2.5")), trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(STSB_HEAD[:-1], (0, "g", "f", "y", 0, "n", "n", "e", "f")))
    td = load_task(conf("stsb", data_dir=str(tmp_path)))
    assert td.kind == "regression" and td.labels is None and td.num_labels == 1
    assert td.splits["train"][0]["text_a"] == 'A "plane" is taking off.'
    assert td.splits["train"]["label"] == pytest.approx([5.0, 0.8])
    assert td.splits["validation"]["label"] == pytest.approx([2.5])
    assert td.splits["test"]["label"] == [-1.0] and not td.labelled("test")
    assert td.metrics == ["pearson", "spearman"] and td.main_metric == "spearman"


def test_qqp(tmp_path):
    head = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
    write(tmp_path / "train.tsv", tsv(head, (133273, 213221, 213222, 'How is "life"?', "How's life?", 1),
                                      (402555, 536040, 536041, "A?", "B?", 0)))
    write(tmp_path / "dev.tsv", tsv(head, (201359, 303345, 303346, "C?", "D?", 0)), trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("id", "question1", "question2"), (0, "E?", "F?")))
    td = load_task(conf("qqp", data_dir=str(tmp_path)))
    assert rows(td, "train")[0] == {"text_a": 'How is "life"?', "text_b": "How's life?", "label": 1, "idx": 133273}
    assert td.splits["validation"]["idx"] == [201359] and td.splits["test"]["label"] == [-1]


MNLI_TRAIN = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")
MNLI_DEV = MNLI_TRAIN[:11] + ("label2", "label3", "label4", "label5", "gold_label")
MNLI_TEST = MNLI_TRAIN[:10]


def _mnli_row(i, s1, s2, *labels):
    return (i, 100 + i, f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", s1, s2, *labels)


def test_mnli_matched_and_mismatched(tmp_path):
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
    assert sizes(td) == {"train": 2, "validation_matched": 2, "validation_mismatched": 1, "test_matched": 1,
                         "test_mismatched": 2}
    assert td.splits["train"]["label"] == [1, 2] and td.splits["validation_matched"]["label"] == [0, 1]
    assert td.splits["validation_mismatched"]["text_a"] == ["mm0"] and td.splits["validation_mismatched"]["label"] == [2]
    assert td.splits["test_mismatched"]["label"] == [-1, -1]
    for split in td.eval_splits:
        y = np.array(td.splits[split]["label"])
        assert compute_metrics(td, y, y) == {"accuracy": 1.0}


def test_cola_headerless(tmp_path):
    write(tmp_path / "train.tsv", tsv(("gj04", 1, "", "Our friends won't buy this."), ("gj04", 0, "*", "They drank the pub."),
                                      ("l-93", 1, "", 'Susan whispered "Shut up".')))
    write(tmp_path / "dev.tsv", tsv(("gj04", 1, "", "The sailors rode."), ("w_80", 0, "*", "John himself.")),
          trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("index", "sentence"), (0, "Bill whistled."), (1, 'A "b" c.')))
    td = load_task(conf("cola", data_dir=str(tmp_path)))
    assert not td.pair and td.splits["train"]["label"] == [1, 0, 1]
    assert rows(td, "train")[2] == {"text_a": 'Susan whispered "Shut up".', "label": 1, "idx": 2}
    assert td.splits["validation"]["label"] == [1, 0]
    assert rows(td, "test")[1] == {"text_a": 'A "b" c.', "label": -1, "idx": 1}
    assert td.main_metric == "matthews" and td.metrics == ["matthews", "accuracy"]


def test_sst2_keeps_text(tmp_path):
    write(tmp_path / "train.tsv", tsv(("sentence", "label"), ("hide new secretions ", 0), ("a gem ", 1)))
    write(tmp_path / "dev.tsv", tsv(("sentence", "label"), ("it 's charming . ", 1)), trailing_newline=False)
    write(tmp_path / "test.tsv", tsv(("index", "sentence"), (0, "uneasy mishmash ."), (1, "x")))
    td = load_task(conf("sst2", data_dir=str(tmp_path)))
    assert rows(td, "train")[0] == {"text_a": "hide new secretions ", "label": 0, "idx": 0}  # trailing space kept
    assert td.splits["validation"]["label"] == [1] and td.splits["test"]["idx"] == [0, 1]


CONLL = ["-DOCSTART- -X- -X- O", "", "EU NNP B-NP B-ORG", "rejects VBZ B-VP O", "German JJ B-NP B-MISC",
         "call NN I-NP O", "", "Peter NNP B-NP B-PER", "Blackburn NNP I-NP I-PER", "", "",
         "-DOCSTART- -X- -X- O", "", "He PRP B-NP O", '" " O O']


def test_conll2003(tmp_path):
    for split in ("train", "validation", "test"):
        write(tmp_path / f"{split}.txt", CONLL, trailing_newline=split != "test")
    td = load_task(conf("conll2003", data_dir=str(tmp_path)))
    L = td.labels.index
    assert td.kind == "token_classification" and not td.pair and td.num_labels == 9
    assert rows(td, "train")[0] == {"tokens": ["EU", "rejects", "German", "call"],
                                    "label": [L("B-ORG"), 0, L("B-MISC"), 0], "idx": 0}
    assert td.splits["train"][1]["label"] == [L("B-PER"), L("I-PER")]
    assert td.splits["train"][2]["tokens"] == ["He", '"'] and len(td.splits["test"]) == 3
    assert td.labelled("test") and td.main_metric == "entity_f1"


def test_custom_from_the_command_line(tmp_path):
    lines = ['{"question": "Who?", "sentence": "Me.", "label": "yes"}', '{"question": "Why?", "sentence": "No.", "label": "no"}']
    write(tmp_path / "train.jsonl", lines)
    write(tmp_path / "dev.jsonl", lines[:1])
    td = load_task(conf("custom", format="jsonl", data_dir=str(tmp_path), text=["question", "sentence"]))
    assert td.labels == ["no", "yes"] and td.splits["train"]["label"] == [1, 0] and td.test_splits == []
    assert td.metrics == ["accuracy"] and td.main_metric == "accuracy"


# --------------------------------------------------------------------------------------------
# formats and kinds
# --------------------------------------------------------------------------------------------


def test_csv_with_header_quoted_commas_and_newlines(tmp_path):
    write(tmp_path / "train.csv", ["text,label", '"Hello, world",pos', '"Two\nlines, ""quoted""",neg', "plain,pos"])
    write(tmp_path / "dev.csv", ["text,label", "x,neg"], trailing_newline=False)
    td = load_task(custom(data_dir=str(tmp_path), text=["text"]))  # format from the extension
    assert td.spec.format.value == "csv" and td.labels == ["neg", "pos"]
    assert td.splits["train"]["text_a"] == ["Hello, world", 'Two\nlines, "quoted"', "plain"]
    assert td.splits["train"]["label"] == [1, 0, 1] and td.splits["train"]["idx"] == [0, 1, 2]


def test_jsonl_pairs_with_ids_and_unlabelled_test(tmp_path):
    write(tmp_path / "train.jsonl", ['{"id": 10, "a": "x", "b": "y", "label": 1}', "", '{"id": 11, "a": "z", "b": "w", "label": 0}'])
    write(tmp_path / "dev.jsonl", ['{"id": 12, "a": "p", "b": "q", "label": 1}'])
    write(tmp_path / "test.jsonl", ['{"id": 13, "a": "r", "b": "s"}'])
    td = load_task(custom(format="jsonl", data_dir=str(tmp_path), text=["a", "b"], index="id", labels=["neg", "pos"]))
    assert rows(td, "train") == [{"text_a": "x", "text_b": "y", "label": 1, "idx": 10},
                                 {"text_a": "z", "text_b": "w", "label": 0, "idx": 11}]
    assert rows(td, "test") == [{"text_a": "r", "text_b": "s", "label": -1, "idx": 13}]


def test_headerless_tsv_by_position(tmp_path):
    write(tmp_path / "train.tsv", tsv(("a", "b", "1"), ("c", "d", "0")))
    write(tmp_path / "dev.tsv", tsv(("e", "f", "1")))
    td = load_task(custom(data_dir=str(tmp_path), text=["1", "0"], label="2"))
    assert rows(td, "train")[0] == {"text_a": "b", "text_b": "a", "label": 1, "idx": 0}
    assert td.labels == ["0", "1"]


def test_parquet_regression(tmp_path):
    pq.write_table(pa.table({"s1": ["a", "b", "c"], "s2": ["x", "y", "z"], "score": [0.5, 4, 2.25]}), tmp_path / "train.parquet")
    pq.write_table(pa.table({"s1": ["d"], "s2": ["w"], "score": [3.0]}), tmp_path / "dev.parquet")
    td = load_task(custom(kind="regression", data_dir=str(tmp_path), text=["s1", "s2"], label="score"))
    assert td.spec.format.value == "parquet" and td.splits["train"]["label"] == [0.5, 4.0, 2.25]
    assert td.splits["validation"][0] == {"text_a": "d", "text_b": "w", "label": 3.0, "idx": 0}


def test_token_classification_from_jsonl_tags_read_from_train(tmp_path):
    write(tmp_path / "train.jsonl", ['{"words": ["Ann", "ran"], "ner": ["B-PER", "O"]}', '{"words": ["Bo"], "ner": ["B-PER"]}'])
    write(tmp_path / "dev.jsonl", ['{"words": ["x"], "ner": ["O"]}'])
    write(tmp_path / "test.jsonl", ['{"words": ["y", "z"]}'])
    td = load_task(custom(kind="token_classification", data_dir=str(tmp_path), text=["words"], label="ner"))
    assert td.labels == ["B-PER", "O"] and td.metrics == ["entity_f1", "entity_precision", "entity_recall"]
    assert rows(td, "train")[0] == {"tokens": ["Ann", "ran"], "label": [0, 1], "idx": 0}
    assert rows(td, "test") == [{"tokens": ["y", "z"], "label": [], "idx": 0}] and not td.labelled("test")


def test_labels_from_train_sorted_numerically_and_checked_elsewhere(tmp_path):
    write(tmp_path / "train.tsv", tsv(("t", "label"), ("a", 10), ("b", 9), ("c", 10)))
    write(tmp_path / "dev.tsv", tsv(("t", "label"), ("d", 9)))
    td = load_task(custom(data_dir=str(tmp_path), text=["t"]))
    assert td.labels == ["9", "10"] and td.splits["train"]["label"] == [1, 0, 1]
    write(tmp_path / "dev.tsv", tsv(("t", "label"), ("d", 9), ("e", 11)))
    msg = error(custom(data_dir=str(tmp_path), text=["t"]))
    assert f"'{tmp_path / 'dev.tsv'}' line 3: unknown label '11'" in msg and "expected one of 9, 10" in msg


def test_builtin_real_generator():
    td = load_task(conf("builtin", builtin={"seed": 0, "train_size": 20, "dev_size": 10, "test_size": 6}))
    assert td.labels == ["entailment", "not_entailment"] == builtin.LABELS and td.pair
    raw = builtin.build_splits(0, 20, 10, 6)
    assert td.splits["train"]["label"] == [r["label"] for r in raw["train"]]
    assert rows(td, "train")[0] == {"text_a": raw["train"][0]["sentence1"], "text_b": raw["train"][0]["sentence2"],
                                    "label": raw["train"][0]["label"], "idx": 0}
    assert sizes(td) == {"train": 20, "validation": 10, "test": 6} and td.labelled("test")


def test_resolved_spec_records_what_was_used(tmp_path):
    for split in ("train", "validation"):
        write(tmp_path / f"{split}.txt", CONLL)
    td = load_task(custom(kind="token_classification", data_dir=str(tmp_path), format="conll",
                          files={"train": "train.txt", "validation": "validation.txt", "test": "test.txt"}))
    s = td.spec
    assert s.files == {"train": "train.txt", "validation": "validation.txt"} and s.test_splits == []
    assert s.labels == sorted({t.split()[-1] for t in CONLL if t and not t.startswith("-DOC")})
    assert (s.metrics, s.main_metric, s.text, s.label) == (["entity_f1", "entity_precision", "entity_recall"],
                                                           "entity_f1", ["tokens"], "tags")
    again = OmegaConf.to_yaml(OmegaConf.structured(s))  # what the runner writes into config.yaml
    assert load_task(yaml.safe_load(again)).splits["train"].to_list() == rows(td, "train")


def test_subsets_are_the_old_seeded_draw_in_file_order(tmp_path):
    write(tmp_path / "train.tsv", tsv(RTE_HEAD, *[(i, f"s{i}", "h", "entailment") for i in range(50)]))
    write(tmp_path / "dev.tsv", tsv(RTE_HEAD, *[(i, f"s{i}", "h", "entailment") for i in range(20)]))
    write(tmp_path / "test.tsv", tsv(RTE_HEAD[:3], *[(i, f"t{i}", "h") for i in range(30)]))
    a = load_task(conf("rte", data_dir=str(tmp_path), max_train_samples=10, max_eval_samples=5, max_test_samples=4,
                       sample_seed=7))
    expected = sorted(int(i) for i in np.random.default_rng(7).permutation(50)[:10])
    assert a.splits["train"]["idx"] == expected and expected != list(range(10))
    assert a.splits["validation"]["idx"] == sorted(int(i) for i in np.random.default_rng(7).permutation(20)[:5])
    assert a.splits["test"]["idx"] == sorted(int(i) for i in np.random.default_rng(7).permutation(30)[:4])
    b = load_task(conf("rte", data_dir=str(tmp_path), max_train_samples=10, test_splits=[]))
    assert b.splits["train"]["idx"] != expected and len(b.splits["validation"]) == 20
    assert "test" not in b.splits and b.test_splits == []


# --------------------------------------------------------------------------------------------
# bad data: one line naming the file, the line or row, what was found and what was expected
# --------------------------------------------------------------------------------------------


def _rte_with_train(tmp_path, lines, **kw) -> str:
    write(tmp_path / "train.tsv", lines, **kw)
    write(tmp_path / "dev.tsv", tsv(RTE_HEAD, (0, "a", "b", "entailment")))
    return error(conf("rte", data_dir=str(tmp_path)))


def test_missing_column_lists_the_file_columns(tmp_path):
    msg = _rte_with_train(tmp_path, tsv(("sentence", "label"), ("x", 1)))  # an SST-2 file given to RTE
    assert f"'{tmp_path / 'train.tsv'}' line 2: no column 'sentence1' among 'sentence', 'label'" in msg


def test_missing_label_column_in_train(tmp_path):
    msg = _rte_with_train(tmp_path, tsv(RTE_HEAD[:3], (0, "a", "b")))
    assert "train.tsv' line 2: no column 'label'" in msg


def test_label_outside_labels(tmp_path):
    msg = _rte_with_train(tmp_path, tsv(RTE_HEAD, (0, "a", "b", "entailment"), (1, "a", "b", "neutral")))
    assert "train.tsv' line 3: unknown label 'neutral'" in msg and "expected one of entailment, not_entailment" in msg
    write(tmp_path / "train.tsv", tsv(("sentence", "label"), ("a", 2)))
    write(tmp_path / "dev.tsv", tsv(("sentence", "label"), ("a", 1)))
    assert "unknown label '2'" in error(conf("sst2", data_dir=str(tmp_path)))


def test_ragged_rows(tmp_path):
    msg = _rte_with_train(tmp_path, tsv(RTE_HEAD, (0, "a", "b", "entailment")) + ["1\tonly two"])
    assert f"'{tmp_path / 'train.tsv'}' line 3: expected 4 tab-separated fields as in the header" in msg and "found 2" in msg
    write(tmp_path / "train.csv", ["a,label", "x,1", "y,1,extra"])
    write(tmp_path / "dev.csv", ["a,label", "x,1"])
    assert "holds train.tsv and train.csv: set task.format" in error(custom(data_dir=str(tmp_path), text=["a"]))
    msg = error(custom(data_dir=str(tmp_path), format="csv", text=["a"]))
    assert "train.csv' line 3: expected 2 comma-separated fields as in the header (line 1), found 3" in msg


def test_cola_file_with_a_header_where_none_is_expected(tmp_path):
    write(tmp_path / "train.tsv", tsv(("index", "sentence"), (0, "x")))
    write(tmp_path / "dev.tsv", tsv(("gj04", 1, "", "x")))
    assert "train.tsv' line 1: no column '3' among '0', '1'" in error(conf("cola", data_dir=str(tmp_path)))


@pytest.mark.parametrize("lines,expected", [([], "is empty"), (["\t".join(RTE_HEAD)], "has a header but no rows")])
def test_empty_split(tmp_path, lines, expected):
    write(tmp_path / "train.tsv", tsv(RTE_HEAD, (0, "a", "b", "entailment")))
    write(tmp_path / "dev.tsv", lines, trailing_newline=bool(lines))
    assert f"'{tmp_path / 'dev.tsv'}' {expected}" in error(conf("rte", data_dir=str(tmp_path)))


@pytest.mark.parametrize("fmt,ext,text,expected", [
    ("jsonl", "jsonl", "\n", "is empty"),
    ("csv", "csv", "a,label\n", "has a header but no rows"),
    ("conll", "txt", "-DOCSTART- O\n\n", "holds no sentences"),
    ("parquet", "parquet", None, "has no rows"),
])
def test_empty_files_of_other_formats(tmp_path, fmt, ext, text, expected):
    if text is None:
        pq.write_table(pa.table({"a": pa.array([], pa.string())}), tmp_path / "train.parquet")
    else:
        (tmp_path / f"train.{ext}").write_text(text)
    (tmp_path / f"dev.{ext}").touch()  # train is read first
    kind = "token_classification" if fmt == "conll" else "classification"
    assert f"train.{ext}' {expected}" in error(custom(kind=kind, data_dir=str(tmp_path), format=fmt, text=["a"]))


def test_not_utf8(tmp_path):
    (tmp_path / "train.tsv").write_bytes("\t".join(RTE_HEAD).encode() + b"\n0\tcaf\xe9\tb\tentailment\n")
    write(tmp_path / "dev.tsv", tsv(RTE_HEAD, (0, "a", "b", "entailment")))
    msg = error(conf("rte", data_dir=str(tmp_path)))
    assert f"'{tmp_path / 'train.tsv'}' line 2: byte 0xe9 at column 6 is not UTF-8" in msg


def test_missing_file_names_path_format_and_files_key(tmp_path):
    write(tmp_path / "train.tsv", tsv(MNLI_TRAIN, _mnli_row(0, "a", "b", "neutral", "neutral")))
    msg = error(conf("mnli", data_dir=str(tmp_path)))
    assert f"'{tmp_path / 'dev_matched.tsv'}' not found: task.files.validation_matched names the tsv file" in msg
    assert "validation_mismatched: dev_mismatched.tsv" in msg
    assert "is not a folder" in error(conf("sst2", data_dir=str(tmp_path / "nope")))


def test_bad_json(tmp_path):
    write(tmp_path / "train.jsonl", ['{"a": "x", "label": 1}', '{"a": "y", label: 2}'])
    write(tmp_path / "dev.jsonl", ['{"a": "x", "label": 1}'])
    assert "train.jsonl' line 2: not valid JSON (Expecting property name" in error(custom(data_dir=str(tmp_path), text=["a"]))
    write(tmp_path / "train.jsonl", ['["x", 1]'])
    assert "train.jsonl' line 1: found a JSON list, expected an object" in error(custom(data_dir=str(tmp_path), text=["a"]))


def test_bad_values(tmp_path):
    write(tmp_path / "train.tsv", tsv(STSB_HEAD, (0, "g", "f", "y", 0, "n", "n", "a", "b", "high")))
    write(tmp_path / "dev.tsv", tsv(STSB_HEAD, (0, "g", "f", "y", 0, "n", "n", "a", "b", "1")))
    assert "train.tsv' line 2: score 'high' in column 'score' is not a number" in error(conf("stsb", data_dir=str(tmp_path)))
    write(tmp_path / "train.tsv", tsv(STSB_HEAD, ("x7", "g", "f", "y", 0, "n", "n", "a", "b", "1")))
    assert "train.tsv' line 2: index 'x7' in column 'index' is not an integer" in error(conf("stsb", data_dir=str(tmp_path)))
    pq.write_table(pa.table({"a": ["x", None], "label": [1, 0]}), tmp_path / "train.parquet")
    pq.write_table(pa.table({"a": ["x"], "label": [1]}), tmp_path / "dev.parquet")
    assert "train.parquet' row 1: column 'a' holds None, expected text" in error(custom(data_dir=str(tmp_path), format="parquet", text=["a"]))


def test_conll_errors(tmp_path):
    write(tmp_path / "validation.txt", CONLL)
    write(tmp_path / "train.txt", CONLL[:4] + ["call NN O"])
    assert "train.txt' line 5: expected 4 space-separated columns as on line 3" in error(conf("conll2003", data_dir=str(tmp_path)))
    write(tmp_path / "train.txt", CONLL[:4] + ["call NN I-NP B-FOO"])
    assert "train.txt' line 3: unknown label 'B-FOO'" in error(conf("conll2003", data_dir=str(tmp_path)))


def test_config_errors(tmp_path):
    _rte_files(tmp_path)
    rte = conf("rte", data_dir=str(tmp_path))
    assert "has no rows: set task.data_dir" in error(custom(text=["a"]))
    assert "task.eval_splits names 'validation_matched'" in error({**rte, "eval_splits": ["validation_matched"]})
    assert "task.main_metric='f1' is not in task.metrics" in error({**rte, "main_metric": "f1"})
    assert "unknown metric 'bleu'" in error({**rte, "metrics": ["bleu"]})
    assert "metric 'pearson' cannot score a classification task" in error({**rte, "metrics": ["pearson"]})
    assert error({**rte, "max_train_samples": "many"}).startswith("task.max_train_samples: ")
    assert error({**rte, "label_column": "x"}).startswith("task.label_column: Key 'label_column' not in 'TaskSpec'")
    assert "task.text names 3 columns" in error({**rte, "text": ["a", "b", "c"]})
    assert "a regression task has scores" in error({**conf("stsb", data_dir=str(tmp_path)), "labels": ["a"]})
    (tmp_path / "empty").mkdir()
    assert "task.format is not set and" in error(custom(data_dir=str(tmp_path / "empty"), text=["a"]))


# --------------------------------------------------------------------------------------------
# the hub (datasets.load_dataset faked: no network)
# --------------------------------------------------------------------------------------------


def _fake_hub(monkeypatch, raw):
    import datasets

    seen = {}

    def fake(path, **kwargs):
        seen.update(path=path, **kwargs)
        return raw

    monkeypatch.setattr(datasets, "load_dataset", fake)
    return seen


def test_hub_failure_is_one_line_with_the_offline_options(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\n(ConnectError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    msg = error(conf("rte"))
    assert "nyu-mll/glue (rte)" in msg and "task.data_dir=" in msg and "task=builtin" in msg


def test_hub_columns_and_classlabels_mapped_by_name(monkeypatch):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    names = ["contradiction", "entailment", "neutral"]  # not task.labels' order
    feats = Features({"premise": Value("string"), "hypothesis": Value("string"), "label": ClassLabel(names=names),
                      "idx": Value("int32")})

    def split(n, label):
        return Dataset.from_dict({"premise": [f"p{i}" for i in range(n)], "hypothesis": ["h"] * n,
                                  "label": [label] * n, "idx": list(range(n))}, features=feats)

    raw = DatasetDict({"train": split(3, 0), "validation_matched": split(2, 2), "validation_mismatched": split(1, 1),
                       "test_matched": split(2, -1), "test_mismatched": split(1, -1)})
    seen = _fake_hub(monkeypatch, raw)
    td = load_task(conf("mnli"))
    assert seen == {"path": "nyu-mll/glue", "name": "mnli"}
    assert rows(td, "train")[0] == {"text_a": "p0", "text_b": "h", "label": 2, "idx": 0}  # contradiction
    assert td.splits["validation_matched"]["label"] == [1, 1] and td.splits["validation_mismatched"]["label"] == [0]
    assert td.splits["test_mismatched"]["label"] == [-1] and not td.labelled("test_matched")


def test_hub_token_tags_and_regression(monkeypatch):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

    hub_names = CONLL_TAGS[::-1]
    feats = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=hub_names))})
    ds = Dataset.from_dict({"tokens": [["EU", "x"]], "ner_tags": [[hub_names.index("B-ORG"), hub_names.index("O")]]},
                           features=feats)
    seen = _fake_hub(monkeypatch, DatasetDict({"train": ds, "validation": ds, "test": ds}))
    td = load_task(conf("conll2003"))
    assert seen["revision"] == "refs/convert/parquet" and td.labelled("test")
    assert td.splits["train"][0]["label"] == [td.labels.index("B-ORG"), td.labels.index("O")]

    def sts(labels):
        return Dataset.from_dict({"sentence1": ["a"] * len(labels), "sentence2": ["b"] * len(labels), "label": labels})

    _fake_hub(monkeypatch, DatasetDict({"train": sts([4.5, 1.0]), "validation": sts([2.0]), "test": sts([-1.0])}))
    td = load_task(conf("stsb"))
    assert td.splits["train"]["label"] == [4.5, 1.0] and not td.labelled("test")


# --------------------------------------------------------------------------------------------
# encode / collator / predictions / metrics / prediction rows
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
    write(tmp_path / "train.tsv", tsv(RTE_HEAD, (0, 'He said "a".', "b c", "not_entailment"), (1, "a", "b", "entailment"),
                                      (2, "a b c a b c a b c", "a b c a b c", "entailment")))
    write(tmp_path / "dev.tsv", tsv(RTE_HEAD, (5, "c", "a", "entailment")))
    return load_task(conf("rte", data_dir=str(tmp_path)))


def _ner_task(tmp_path):
    lines = ["-DOCSTART- -X- -X- O", "", "EU NNP B-NP B-ORG", "unbelievable JJ I-NP O", "German JJ B-NP B-MISC", "",
             "Peter NNP B-NP B-PER", "Blackburn NNP I-NP I-PER", ""]
    write(tmp_path / "train.txt", lines)
    write(tmp_path / "validation.txt", lines)
    return load_task(conf("conll2003", data_dir=str(tmp_path)))


def test_encode_pair(tmp_path, tokenizer):
    tr = encode(_pair_task(tmp_path), tokenizer, max_length=12)["train"]
    assert set(tr.column_names) == {"input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "labels", "idx"}
    r0 = tr[0]
    assert r0["input_ids"] == _ids("[CLS]", "he", "said", '"', "a", '"', ".", "[SEP]", "b", "c", "[SEP]")
    assert r0["special_tokens_mask"] == [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1]
    assert r0["token_type_ids"] == [0] * 8 + [1] * 3 and r0["labels"] == 1 and r0["idx"] == 0
    assert len(tr[1]["input_ids"]) == 5  # not padded
    assert len(tr[2]["input_ids"]) == 12 and sum(tr[2]["special_tokens_mask"]) == 3  # truncated, both [SEP]s kept


def test_encode_ner_labels_first_subword(tmp_path, tokenizer):
    td = _ner_task(tmp_path)
    L = td.labels.index
    r0, r1 = encode(td, tokenizer, max_length=16)["train"]
    assert r0["input_ids"] == _ids("[CLS]", "eu", "un", "##believ", "##able", "german", "[SEP]")
    assert r0["labels"] == [-100, L("B-ORG"), L("O"), -100, -100, L("B-MISC"), -100]
    assert r1["labels"] == [-100, L("B-PER"), L("I-PER"), -100, -100]
    assert td.word_starts["train"] == ([0, 1], [[1, 2, 5], [1, 2]])
    short = encode(td, tokenizer, max_length=4)["train"][0]
    assert short["input_ids"] == _ids("[CLS]", "eu", "un", "[SEP]") and short["labels"] == [-100, L("B-ORG"), L("O"), -100]


def test_collator_pads_classification(tmp_path, tokenizer):
    td = _pair_task(tmp_path)
    enc = encode(td, tokenizer, max_length=12)
    collate = Collator(td, tokenizer)
    batch = collate([enc["train"][0], enc["train"][1]])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "labels"}
    assert batch["input_ids"][1].tolist() == _ids("[CLS]", "a", "[SEP]", "b", "[SEP]") + [0] * 6
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 6
    assert batch["special_tokens_mask"][1].tolist() == [1, 0, 1, 0, 1] + [1] * 6
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    loader = torch.utils.data.DataLoader(enc["train"], batch_size=3, collate_fn=collate)
    assert next(iter(loader))["input_ids"].shape == (3, 12)


def test_collator_regression_and_tokens(tmp_path, tokenizer):
    write(tmp_path / "train.tsv", tsv(STSB_HEAD, (0, "g", "f", "y", 0, "n", "n", "a b", "c", "3.2"),
                                      (1, "g", "f", "y", 0, "n", "n", "a", "c", "1")))
    write(tmp_path / "dev.tsv", tsv(STSB_HEAD, (0, "g", "f", "y", 0, "n", "n", "a", "b", "1")))
    td = load_task(conf("stsb", data_dir=str(tmp_path)))
    batch = Collator(td, tokenizer)(list(encode(td, tokenizer)["train"]))
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == pytest.approx([3.2, 1.0])
    (tmp_path / "ner").mkdir()
    ner = _ner_task(tmp_path / "ner")
    enc = encode(ner, tokenizer)
    batch = Collator(ner, tokenizer)([enc["train"][0], enc["train"][1]])
    assert batch["labels"].shape == batch["input_ids"].shape == (2, 7) and "idx" not in batch
    assert batch["labels"][1].tolist()[-2:] == [-100, -100]
    assert batch["special_tokens_mask"][1].tolist() == [1, 0, 0, 0, 1, 1, 1]


def test_ner_prediction_rows_from_token_predictions(tmp_path, tokenizer):
    td = _ner_task(tmp_path)
    L = td.labels.index
    enc = encode(td, tokenizer)
    # per-token predictions as the trainer makes them, (N, T) padded; words start at 1, 2, 5 and 1, 2
    preds = np.full((2, 8), L("I-MISC"))
    preds[0, [1, 2, 5]] = [L("B-ORG"), L("O"), L("B-MISC")]
    preds[1, [1, 2]] = [L("B-PER"), L("I-PER")]
    expected = [(0, "B-ORG O B-MISC"), (1, "B-PER I-PER")]
    assert submission_rows(td, "validation", enc["validation"]["idx"], preds) == expected
    labels = np.array([r + [-100] * (8 - len(r)) for r in enc["train"]["labels"]])
    assert submission_rows(td, "train", [0, 1], preds, labels=labels) == expected
    with pytest.raises(PastaError, match="encode"):
        submission_rows(td, "test", [0, 1], preds)


def _task(**spec) -> TaskData:
    return TaskData(TaskSpec(**spec), {})


def test_predictions_metrics_and_rows():
    mrpc = _task(name="mrpc", labels=["not_equivalent", "equivalent"], metrics=["accuracy", "f1"], main_metric="f1",
                 submission_labels="ids")
    preds = predictions(mrpc, np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0], [1.0, 0.0]]))
    assert preds.tolist() == [1, 0, 1, 0]
    # gold 1 1 1 0: TP=2 FN=1 FP=0 TN=1 -> accuracy 3/4, F1 = 4/5
    assert compute_metrics(mrpc, preds, np.array([1, 1, 1, 0])) == {"accuracy": pytest.approx(0.75), "f1": pytest.approx(0.8)}
    with pytest.raises(PastaError, match="without labels"):
        compute_metrics(mrpc, preds, np.array([-1, -1, -1, -1]))
    assert submission_rows(mrpc, "test", [3, 4], np.array([1, 0])) == [(3, 1), (4, 0)]
    assert submission_rows(mrpc, "validation", [3, 4], np.array([1, 0]), names=True) == [(3, "equivalent"),
                                                                                         (4, "not_equivalent")]
    rte = _task(name="rte", labels=["entailment", "not_entailment"], metrics=["accuracy"])
    assert submission_rows(rte, "test", np.array([0, 1]), np.array([1, 0])) == [(0, "not_entailment"), (1, "entailment")]
    with pytest.raises(PastaError, match="outside the 2 labels"):
        submission_rows(rte, "test", [0], np.array([2]))
    reg = _task(name="stsb", kind="regression", metrics=["pearson", "spearman"])
    p = predictions(reg, np.array([[1.0], [2.0], [3.0], [4.0]]))
    out = compute_metrics(reg, p, np.array([2.0, 4.0, 5.0, 9.0]))
    assert out["pearson"] == pytest.approx(11 / np.sqrt(130)) and out["spearman"] == pytest.approx(1.0)
    assert submission_rows(reg, "test", [0, 1], p[:2]) == [(0, 1.0), (1, 2.0)] and reg.num_labels == 1


def test_token_metrics_use_labelled_positions_only():
    td = _task(name="ner", kind="token_classification", labels=CONLL_TAGS,
               metrics=["entity_f1", "entity_precision", "entity_recall"])
    # sentence 0: [CLS] Peter Black ##burn [SEP]; sentence 1: [CLS] EU [SEP] pad pad
    gold = np.array([[-100, 1, 2, -100, -100], [-100, 3, -100, -100, -100]])
    logits = np.zeros((2, 5, 9))  # garbage at ignored positions on purpose: it must not count
    for (i, t), tag in {(0, 0): 5, (0, 1): 1, (0, 2): 2, (0, 3): 7, (0, 4): 3, (1, 0): 1, (1, 1): 5, (1, 2): 3}.items():
        logits[i, t, tag] = 1.0
    preds = predictions(td, logits)
    # gold entities PER (s0), ORG (s1); predicted PER (s0) right, LOC (s1) wrong -> P = R = F1 = 1/2
    assert compute_metrics(td, preds, gold) == {"entity_f1": pytest.approx(0.5), "entity_precision": pytest.approx(0.5),
                                                "entity_recall": pytest.approx(0.5)}
    words, _ = word_tags(preds, gold)
    assert words == [[1, 2], [5]]
    assert submission_rows(td, "test", [0, 1], words) == [(0, "B-PER I-PER"), (1, "B-LOC")]


# --------------------------------------------------------------------------------------------
# the real data (../shared/data)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,folder,counts", [
    ("rte", "glue/RTE", (2490, 277, 3000)),
    ("cola", "glue/CoLA", (8551, 1043, 1063)),
    ("sst2", "glue/SST-2", (67349, 872, 1821)),
    ("mrpc", "glue/MRPC", (3668, 408, 1725)),
    ("stsb", "glue/STS-B", (5749, 1500, 1379)),
    ("conll2003", "conll2003", (14041, 3250, 3453)),
])
def test_real_data(data_root, name, folder, counts):
    d = data_root / folder
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    td = load_task(conf(name, data_dir=str(d)))
    assert (len(td.splits["train"]), len(td.splits["validation"]), len(td.splits["test"])) == counts
    train = td.splits["train"]
    if name == "rte":
        assert train[0]["label"] == td.labels.index("not_entailment")
        assert sum('"' in s for s in [*train["text_a"], *train["text_b"]]) > 100  # bare quotes survive
    elif name == "cola":
        assert 'Susan whispered "Shut up".' in train["text_a"] and set(train["label"]) == {0, 1}
    elif name == "sst2":
        assert train[0] == {"text_a": "hide new secretions from the parental units ", "label": 0, "idx": 0}
    elif name == "conll2003":
        assert train[0]["tokens"][:3] == ["EU", "rejects", "German"]
        assert train[0]["label"][:3] == [td.labels.index(t) for t in ("B-ORG", "O", "B-MISC")]
    assert td.labelled("validation") and td.labelled("test") == (name == "conll2003")
