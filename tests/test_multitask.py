"""MultiTaskPasta: a mixed batch gives each row what its own task's single-adapter model gives it."""

import random
import threading

import pytest
import torch
from deploy_fixtures import ADAPTERS, ITEMS, make_adapter, make_all, reference_logits, save_backbone
from test_adapter import trained_baseline

from pasta_cli import MultiTaskPasta, PastaError, save_adapter

TOL = 1e-5  # fp32; padding and batch neighbours change the sums' order, nothing else


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt-bert")
    backbone, paths = make_all(root)
    return backbone, paths, reference_logits(paths, ITEMS)


def max_diff(got, expected):
    return max(float((g - e).abs().max()) for g, e in zip(got, expected))


@pytest.mark.parametrize("seed,batch_size", [(0, None), (1, 3), (2, 1), (3, 4)])
def test_a_mixed_batch_equals_each_tasks_own_model(bert, seed, batch_size):
    backbone, paths, expected = bert
    mt = MultiTaskPasta.from_adapters(paths, precision="fp32")
    order = list(range(len(ITEMS)))
    random.Random(seed).shuffle(order)
    got = mt.logits([ITEMS[i] for i in order], batch_size=batch_size)
    assert [g.shape for g in got] == [expected[i].shape for i in order]
    assert max_diff(got, [expected[i] for i in order]) <= TOL


def test_the_test_can_fail_tasks_really_differ(bert):
    """Each row's answer depends on its own task's vectors: the same text under another task's vectors
    (same head) gives other logits, so a mix-up would be caught by the equality above."""
    backbone, paths, expected = bert
    mt = MultiTaskPasta(backbone, precision="fp32")
    mt.add_adapter("rte", paths["rte"])
    shifted = make_adapter(paths["rte"].parent / "rte-other", backbone, True, "classification", "full",
                           ADAPTERS["rte"][3], seed=99)
    mt.add_adapter("other", shifted)
    same_text = [ITEMS[0], {**ITEMS[0], "task": "other"}]
    a, b = mt.logits(same_text)
    assert float((a - expected[0]).abs().max()) <= TOL and float((a - b).abs().max()) > 1e-2


@pytest.mark.parametrize("family", ["roberta", "electra", "deberta"])
def test_other_families_mix_pairs_and_singles(tmp_path, family):
    """Each family's own head (RoBERTa's dense + out_proj on <s>, DeBERTa's context pooler) on its rows;
    RoBERTa: <s> A </s></s> B </s> (4 slots) beside <s> A </s> (2) in one batch."""
    backbone = save_backbone(tmp_path / "rb", family)
    paths = {"pair": make_adapter(tmp_path / "p", backbone, True, "classification", "full", ["x", "y"], 1),
             "single": make_adapter(tmp_path / "s", backbone, False, "regression", "sep_only", None, 2)}
    items = [{"task": "pair", "text": ["the man eats", "a dog"]}, {"task": "single", "text": "hello there world"},
             {"task": "pair", "text": ["a", "b c d e f g"]}, {"task": "single", "text": "x"}]
    mt = MultiTaskPasta.from_adapters(paths, precision="fp32")
    assert max_diff(mt.logits(items), reference_logits(paths, items)) <= TOL


def test_predict_returns_labels_probabilities_scores_and_tags(bert):
    backbone, paths, expected = bert
    out = MultiTaskPasta.from_adapters(paths, precision="fp32").predict(ITEMS)
    rte = out[0]
    assert rte["label"] == ADAPTERS["rte"][3][int(expected[0].argmax())]
    assert rte["probabilities"] == pytest.approx(dict(zip(ADAPTERS["rte"][3], expected[0].softmax(-1).tolist())),
                                                 abs=1e-6)
    assert out[3] == {"score": pytest.approx(float(expected[3][0]), abs=TOL)}
    assert len(out[2]["tags"]) == len(ITEMS[2]["tokens"]) and set(out[2]["tags"]) <= set(ADAPTERS["ner"][3])
    assert out[7]["tags"] == [ADAPTERS["ner"][3][int(expected[7][1].argmax())]]  # [CLS] hello [SEP]: position 1


def test_adding_and_removing_while_predicting_never_gives_a_wrong_answer(bert):
    backbone, paths, expected = bert
    mt = MultiTaskPasta.from_adapters({"rte": paths["rte"], "sst2": paths["sst2"]}, precision="fp32")
    items = [ITEMS[0], ITEMS[1], ITEMS[6], ITEMS[8]]
    want = [expected[0], expected[1], expected[6], expected[8]]
    errors, stop = [], threading.Event()

    def predict_loop():
        while not stop.is_set():
            got = mt.logits(items, batch_size=2)
            if max_diff(got, want) > TOL:
                errors.append(got)

    worker = threading.Thread(target=predict_loop)
    worker.start()
    try:
        for _ in range(5):
            mt.add_adapter("ner", paths["ner"])
            mt.add_adapter("stsb", paths["stsb"])
            mt.remove_adapter("ner")
            mt.remove_adapter("stsb")
    finally:
        stop.set()
        worker.join()
    assert not errors
    mt.add_adapter("ner", paths["ner"])
    assert max_diff(mt.logits([ITEMS[2], ITEMS[0]]), [expected[2], expected[0]]) <= TOL
    mt.remove_adapter("rte")
    with pytest.raises(PastaError, match="item 0: unknown task 'rte': the tasks are ner, sst2"):
        mt.predict([ITEMS[0]])
    with pytest.raises(PastaError, match="no task 'rte' to remove"):
        mt.remove_adapter("rte")


def test_an_adapter_for_another_method_is_refused(tmp_path):
    model, tok, backbone, settings = trained_baseline("bitfit", tmp_path)
    save_adapter(model, tmp_path / "bitfit", backbone=backbone, head="classification", pair=True, method="bitfit")
    mt = MultiTaskPasta(backbone, precision="fp32")
    with pytest.raises(PastaError, match="is a bitfit adapter: only PASTA adapters share a mixed batch") as err:
        mt.add_adapter("b", tmp_path / "bitfit")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change,message", [
    ({"num_hidden_layers": 2}, "num_layers 3 in the adapter, 2 here"),
    ({}, "was trained on backbone '.*other'.*this model's backbone is"),
])
def test_an_adapter_for_another_backbone_is_refused(bert, tmp_path, change, message):
    backbone, paths, _ = bert
    other = save_backbone(tmp_path / "other", **change)
    adapter = paths["rte"] if change else make_adapter(tmp_path / "a", other, True, "classification", "full",
                                                       ["x", "y"])
    mt = MultiTaskPasta(other if change else backbone, precision="fp32")
    with pytest.raises(PastaError, match=message) as err:
        mt.add_adapter("x", adapter)
    assert "\n" not in str(err.value) and not mt.tasks


def test_a_wider_backbone_is_refused(tmp_path):
    from tiny_models import bert_tokenizer
    from transformers import BertConfig, BertModel

    wide = tmp_path / "wide"
    BertModel(BertConfig(vocab_size=60, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(wide)
    bert_tokenizer().save_pretrained(wide)
    adapter = make_adapter(tmp_path / "a", save_backbone(tmp_path / "narrow"), True, "classification", "full",
                           ["x", "y"])
    with pytest.raises(PastaError, match="hidden_size 32 in the adapter, 48 here"):
        MultiTaskPasta(str(wide), precision="fp32").add_adapter("a", adapter)


@pytest.mark.parametrize("item,message", [
    ({"task": "rte", "text": ["only one"]}, "item 0: task 'rte' takes \"text\": \\[first, second\\]"),
    ({"task": "sst2", "text": ["one", "two"]}, "item 0: task 'sst2' takes \"text\": \\[text\\] or a string"),
    ({"task": "ner", "text": "no tokens"}, "item 0: task 'ner' tags words: give \"tokens\""),
    ({"text": "x"}, "item 0: unknown task None"),
    ("just text", "item 0: expected an object"),
])
def test_a_bad_item_is_one_line_naming_it(bert, item, message):
    backbone, paths, _ = bert
    mt = MultiTaskPasta.from_adapters({k: paths[k] for k in ("rte", "sst2", "ner")}, precision="fp32")
    with pytest.raises(PastaError, match=message):
        mt.predict([item])


def test_adding_a_task_copies_tensors_and_never_reloads_the_backbone(bert):
    backbone, paths, _ = bert
    mt = MultiTaskPasta(backbone, precision="fp32")
    encoder = {n: p.data_ptr() for n, p in mt.encoder.named_parameters()}
    for name, path in paths.items():
        mt.add_adapter(name, path)
    assert {n: p.data_ptr() for n, p in mt.encoder.named_parameters()} == encoder
    assert not any(p.requires_grad for p in mt.encoder.parameters())
    vectors = sum(t.vectors.numel() for t in mt.tasks.values())
    assert mt.injector.table.shape == (3, vectors // (3 * 32), 32)
    torch.testing.assert_close(mt.injector.table[:, :3], mt.tasks["rte"].vectors)
