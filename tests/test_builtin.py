"""The built-in offline task (pasta_cli.data.builtin): determinism, sizes, balance, no leakage, labels."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from pasta_cli.data.builtin import LABELS, build_splits

SIZES = {"train": 2000, "validation": 500, "test": 500}

# Words sentence 2's templates may use that need not occur in sentence 1 (paraphrase/function
# words). Every other word of sentence 2 is a fact's value: an entailed restatement takes all of
# them from sentence 1, a changed one brings exactly one value sentence 1 does not contain.
TEMPLATE_WORDS = set("""
the a an that there is was were by at on to from of in o'clock room has have will be got gave
given received came went shopping bought starts
""".split())


@pytest.fixture(scope="module")
def splits():
    return build_splits(0, *SIZES.values())


def words(sentence: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", sentence.lower())


def new_values(row: dict) -> list[str]:
    """Content words of sentence 2 absent from sentence 1: an independent re-derivation."""
    premise = set(words(row["sentence1"]))
    return [w for w in words(row["sentence2"]) if w not in TEMPLATE_WORDS and w not in premise]


def test_labels_are_rte_like():
    assert LABELS == ["entailment", "not_entailment"]


def test_keys_sizes_and_row_schema(splits):
    assert set(splits) == set(SIZES)
    for name, size in SIZES.items():
        assert len(splits[name]) == size
        for row in splits[name]:
            assert set(row) == {"sentence1", "sentence2", "label"}
            assert isinstance(row["sentence1"], str) and isinstance(row["sentence2"], str)
            assert row["label"] in range(len(LABELS))
    small = build_splits(3, 10, 7, 5)
    assert [len(small[k]) for k in ("train", "validation", "test")] == [10, 7, 5]


def test_deterministic_from_seed_without_global_state(splits):
    random.seed(123)
    state = random.getstate()
    again = build_splits(0, *SIZES.values())
    assert random.getstate() == state  # the generator never touched the global RNG
    assert again == splits
    other = build_splits(1, *SIZES.values())
    for name in SIZES:
        assert other[name] != splits[name]


def test_labels_balanced(splits):
    for name, rows in splits.items():
        counts = Counter(r["label"] for r in rows)
        uniform = len(rows) / len(LABELS)
        for label in range(len(LABELS)):
            assert abs(counts[label] - uniform) <= 0.1 * uniform, (name, counts)


def test_no_pair_shared_between_or_within_splits(splits):
    keys = {name: [(r["sentence1"], r["sentence2"]) for r in rows] for name, rows in splits.items()}
    for name, k in keys.items():
        assert len(set(k)) == len(k), name
    train = set(keys["train"])
    assert not train & set(keys["validation"])
    assert not train & set(keys["test"])
    assert not set(keys["validation"]) & set(keys["test"])


def test_label_rederived_from_the_sentences(splits):
    for rows in splits.values():
        for row in rows:
            new = new_values(row)
            if LABELS[row["label"]] == "entailment":
                assert new == [], row
            else:
                assert len(new) == 1, row


def test_sentences_alone_do_not_give_the_label(splits):
    """Both classes draw sentence 1 and sentence 2 from the same distribution: no single-sentence
    shortcut. The first word and the length of sentence 2 are (nearly) label-independent."""
    rows = splits["train"]
    for feature in (lambda r: words(r["sentence2"])[0], lambda r: len(words(r["sentence2"])),
                    lambda r: words(r["sentence1"])[0]):
        by_value = {}
        for r in rows:
            by_value.setdefault(feature(r), Counter())[r["label"]] += 1
        majority = sum(max(c.values()) for c in by_value.values()) / len(rows)
        assert majority < 0.6


def test_short_natural_sentences(splits):
    for rows in splits.values():
        for row in rows:
            for s in (row["sentence1"], row["sentence2"]):
                assert s[0].isupper() and s.endswith(".")
                assert "  " not in s and " a a" not in s and " a e" not in s
            assert len(words(row["sentence1"])) + len(words(row["sentence2"])) <= 30
