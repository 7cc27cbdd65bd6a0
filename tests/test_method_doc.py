"""docs/METHOD.md's table of families: every row's layout and slot counts, from a tokenizer of that family."""

from pathlib import Path

import pytest
from tiny_models import bert_tokenizer, deberta_v3_tokenizer, modernbert_tokenizer, roberta_tokenizer

from pasta_cli.pasta import count_slots

DOC = Path(__file__).resolve().parents[1] / "docs" / "METHOD.md"
TOKENIZERS = {"bert": bert_tokenizer, "electra": bert_tokenizer, "roberta": roberta_tokenizer,
              "modernbert": modernbert_tokenizer, "deberta-v3": deberta_v3_tokenizer}


def table_rows():
    lines = [l for l in DOC.read_text().splitlines() if l.startswith("| ") and not l.startswith("| family")]
    rows = [[c.strip().strip("`") for c in l.strip("|").split("|")] for l in lines]
    return {r[0]: r for r in rows if r[0] in TOKENIZERS}


def layout(tok, *texts):
    """The template as the tokenizer applies it: special tokens by name, each run of text as A, B."""
    enc = tok(*texts, return_special_tokens_mask=True)
    out, names = [], iter("AB")
    for token, special in zip(tok.convert_ids_to_tokens(enc["input_ids"]), enc["special_tokens_mask"]):
        if special:
            out.append(token)
        elif not out or out[-1] not in "AB":
            out.append(next(names))
    return " ".join(out)


def test_the_table_lists_every_family():
    assert set(table_rows()) == set(TOKENIZERS)


@pytest.mark.parametrize("family", sorted(TOKENIZERS))
def test_each_familys_layout_and_slot_counts_are_the_tokenizers(family):
    _, _, single, pair, p_single, p_pair, _ = table_rows()[family]
    tok = TOKENIZERS[family]()
    assert layout(tok, "the man") == single
    assert layout(tok, "the man", "a dog") == pair
    assert (count_slots(tok, False), count_slots(tok, True)) == (int(p_single), int(p_pair))
