"""PASTA as a PEFT method (pasta_cli.peft): get_peft_model on every family, one adapter format with pasta-cli,
trainable counts as pasta-train's, adapter_names= mixed batches, and the Trainer example."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from tiny_models import FAMILIES, tiny
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from pasta_cli import PastaError, add_pasta
from pasta_cli.adapter import load_adapter, save_adapter
from pasta_cli.modeling import parameter_counts
from pasta_cli.peft import PastaConfig

ROOT = Path(__file__).resolve().parents[1]
A, B = ["the man eats food", "a", "the dog sees a cat"], ["the dog", "hello world", "big red park"]


def backbone(tmp_path, family, token=False, num_labels=2):
    """A tiny model of `family` saved with its tokenizer, as a hub model would be (its folder names it)."""
    model, tok = tiny(family, num_labels=num_labels, token=token)
    folder = tmp_path / f"{family}-{'token' if token else num_labels}"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder), tok


def load(folder, token=False):
    cls = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
    return cls.from_pretrained(folder)


def encode(tok, pair=True, mask=False):
    return tok(A, B if pair else None, padding=True, return_tensors="pt", return_special_tokens_mask=mask)


def train_a_few_steps(model, enc, labels, steps=3):
    """A few AdamW steps on the trainable tensors, so that what is saved differs from the initial state."""
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    for _ in range(steps):
        model(**enc, labels=labels).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    return model.eval()


def logits(model, enc):
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_round_trip_on_every_family_loads_in_peft_and_in_pasta_cli(tmp_path, family):
    folder, tok = backbone(tmp_path, family)
    model = get_peft_model(load(folder), PastaConfig(pair=True, task_type="SEQ_CLS"))
    enc = encode(tok)
    model = train_a_few_steps(model, enc, torch.tensor([0, 1, 1]))
    expected = logits(model, enc)
    model.save_pretrained(tmp_path / "adapter")
    again = PeftModel.from_pretrained(load(folder), tmp_path / "adapter")
    assert torch.equal(logits(again, enc), expected)
    ours, ours_tok = load_adapter(tmp_path / "adapter")
    assert torch.equal(logits(ours, encode(ours_tok)), expected)


@pytest.mark.parametrize("family,token,num_labels", [("bert", True, 5), ("modernbert", True, 3), ("bert", False, 1),
                                                     ("deberta-v3", False, 1)])
def test_token_classification_and_regression_round_trip(tmp_path, family, token, num_labels):
    folder, tok = backbone(tmp_path, family, token=token, num_labels=num_labels)
    config = PastaConfig(pair=False, task_type="TOKEN_CLS" if token else "SEQ_CLS")
    model = get_peft_model(load(folder, token), config)
    enc = encode(tok, pair=False)
    labels = torch.zeros_like(enc["input_ids"]) if token else torch.tensor([0.5, -1.0, 2.0])
    model = train_a_few_steps(model, enc, labels)
    model.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["head"] == ("token_classification" if token else "regression") and saved["pair"] is False
    again = PeftModel.from_pretrained(load(folder, token), tmp_path / "adapter")
    assert torch.equal(logits(again, enc), logits(model, enc))
    ours, _ = load_adapter(tmp_path / "adapter")  # DeBERTa's regression head: equal to one float32 ulp
    torch.testing.assert_close(logits(ours, enc), logits(model, enc), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family,variant", [("bert", "full"), ("roberta", "full"), ("bert", "sep_only"),
                                            ("deberta-v3", "shared"), ("modernbert", "cls_only"),
                                            ("electra", "classifier_only")])
def test_a_pasta_cli_adapter_loads_with_peft_and_counts_agree(tmp_path, family, variant):
    folder, tok = backbone(tmp_path, family)
    model = load(folder)
    injector = add_pasta(model, tok, variant, pair=True)
    torch.nn.init.normal_(injector.vectors)
    for p in model.parameters():
        if p.requires_grad and p is not injector.vectors:
            torch.nn.init.normal_(p, std=0.2)
    model.eval()
    save_adapter(model, tmp_path / "adapter", backbone=folder, head="classification", pair=True, task="rte")
    enc = encode(tok, mask=True)
    peft_model = PeftModel.from_pretrained(load(folder), tmp_path / "adapter")
    assert torch.equal(logits(peft_model, enc), logits(model, enc))
    fresh = get_peft_model(load(folder), PastaConfig(variant=variant, pair=True, task_type="SEQ_CLS"))
    trainable = parameter_counts(model)["trainable"]
    assert fresh.get_nb_trainable_parameters()[0] == trainable == parameter_counts(fresh)["trainable"]


def test_a_trainer_trains_the_vectors_and_the_head_and_saves_them(tmp_path):
    from datasets import Dataset

    folder, tok = backbone(tmp_path, "bert")
    model = get_peft_model(load(folder), PastaConfig.from_tokenizer(tok, pair=True, task_type="SEQ_CLS"))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    rows = Dataset.from_dict({**tok(A * 4, B * 4, truncation=True), "label": [0, 1, 1] * 4})
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
                             learning_rate=0.05, report_to="none", save_strategy="no", disable_tqdm=True,
                             use_cpu=True)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tok)).train()
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert changed == set(before) and any("pasta." in n for n in changed) and any("classifier" in n for n in changed)
    model.eval().save_pretrained(tmp_path / "adapter")
    enc = encode(tok)
    assert torch.equal(logits(PeftModel.from_pretrained(load(folder), tmp_path / "adapter"), enc), logits(model, enc))


# --------------------------------------------------------------------------------------- mixed batches


def randomised(model, name):
    """Give adapter `name` its own random vectors and head, as training would."""
    for n, p in model.named_parameters():
        if f".{name}." in n:
            torch.nn.init.normal_(p, std=0.3)


@pytest.mark.parametrize("family", ["bert", "roberta", "deberta-v3", "modernbert"])
def test_adapter_names_route_each_row_to_its_adapter(tmp_path, family):
    folder, tok = backbone(tmp_path, family)
    model = get_peft_model(load(folder), PastaConfig(pair=True, task_type="SEQ_CLS"))
    model.add_adapter("sep", PastaConfig(variant="sep_only", pair=True, task_type="SEQ_CLS"))
    randomised(model, "default")
    randomised(model, "sep")
    model.save_pretrained(tmp_path / "saved")  # saves every adapter: default at the top, sep in sep/
    fresh = PeftModel.from_pretrained(load(folder), tmp_path / "saved")
    fresh.load_adapter(tmp_path / "saved" / "sep", adapter_name="sep")
    enc = encode(tok)
    alone = {}
    for name in ("default", "sep"):
        fresh.set_adapter(name)
        alone[name] = logits(fresh, enc)
    assert not torch.allclose(alone["default"], alone["sep"])  # the test can fail: the adapters differ
    names = ["sep", "default", "sep"]
    with torch.no_grad():
        mixed = fresh(**enc, adapter_names=names).logits
    for i, name in enumerate(names):
        torch.testing.assert_close(mixed[i], alone[name][i], rtol=0, atol=1e-6)


def test_mixed_batches_refuse_training_mode_unknown_names_and_heads_of_other_shapes(tmp_path):
    folder, tok = backbone(tmp_path, "bert")
    model = get_peft_model(load(folder), PastaConfig(pair=True, task_type="SEQ_CLS"))
    model.add_adapter("other", PastaConfig(pair=True, task_type="SEQ_CLS"))
    enc = encode(tok)
    with pytest.raises(PastaError, match="for inference"):
        model.train()(**enc, adapter_names=["default"] * 3)
    model.eval()
    with pytest.raises(PastaError, match="no PASTA adapter.*'nope'"):
        model(**enc, adapter_names=["default", "nope", "other"])
    with pytest.raises(PastaError, match="2 names for a batch of 3 rows"):
        model(**enc, adapter_names=["default", "other"])
    model.base_model.model.classifier.modules_to_save["other"] = torch.nn.Linear(32, 3)
    with pytest.raises(PastaError, match="heads of different shapes"):
        model(**enc, adapter_names=["default", "other", "other"])


def test_an_adapter_for_another_head_size_is_refused_in_one_line(tmp_path):
    folder, _ = backbone(tmp_path, "bert")
    three, _ = backbone(tmp_path, "bert", num_labels=3)
    get_peft_model(load(three), PastaConfig(pair=True, task_type="SEQ_CLS")).save_pretrained(tmp_path / "a")
    with pytest.raises(PastaError, match="head of 3 labels, this model's has 2"):
        PeftModel.from_pretrained(load(folder), tmp_path / "a")


# --------------------------------------------------------------------------------------- the Trainer example


def test_the_trainer_example_runs_on_a_tiny_model(tmp_path):
    folder, _ = backbone(tmp_path, "bert")
    data = tmp_path / "SST-2"
    data.mkdir()
    sentences = ["the man eats food", "a big red dog", "the cat is small", "hello world", "the woman sees a park",
                 "not a blue cat"]
    for split in ("train", "dev"):
        lines = ["sentence\tlabel"] + [f"{s}\t{i % 2}" for i, s in enumerate(sentences)]
        (data / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "trainer_pasta.py"), "--data-dir", str(data),
                          "--model", folder, "--max-train", "4", "--max-steps", "2", "--batch-size", "2",
                          "--seed", "1", "--output-dir", str(out)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert 0.0 <= result["best_dev_accuracy"] <= 1.0
    model, tok = load_adapter(out / "adapter")
    assert model.pasta.vectors.shape == (3, 2, 32)  # single sentences: [CLS] and [SEP]
