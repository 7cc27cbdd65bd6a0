"""The pasta-train contract: config composition, the keys scripts and sweeps use, and one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from runner_fixtures import pasta_train

from pasta_cli import paper
from pasta_cli.config import compose, task_spec

ROOT = Path(__file__).resolve().parents[1]
TABLE6 = paper.value("table6")  # checked against PAPER.md in tests/test_paper.py


def test_default_is_the_offline_builtin_task_on_minilm():
    cfg = compose()
    assert (cfg.task.name, cfg.model.name_or_path, cfg.method.name, cfg.method.variant) == ("builtin", "minilm", "pasta", "full")
    assert cfg.seed == 42 and cfg.trainer.max_length == 128 and cfg.logger.name == "none"


@pytest.mark.parametrize("task", sorted(TABLE6))
def test_paper_setup_per_task_is_table6(task):
    row = TABLE6[task]
    cfg = compose([f"task={task}", "model=bert-large"])
    assert (cfg.optim.lr, cfg.trainer.batch_size, cfg.trainer.epochs) == (row["lr"], row["batch_size"], row["epochs"])
    assert task_spec(cfg).pair == (row["adapted_tokens"] == 3)
    assert cfg.model.name_or_path == "bert-large-uncased"


def test_overrides_of_the_documented_keys():
    cfg = compose(["task=rte", "task.data_dir=/data/glue/RTE", "method.variant=cls_only", "optim.lr=1e-3",
                   "optim.weight_decay=0.01", "optim.warmup_ratio=0.1", "trainer.epochs=3", "trainer.max_steps=7",
                   "trainer.batch_size=8", "trainer.grad_accum=2", "trainer.max_length=64",
                   "trainer.precision=bf16", "seed=7", "logger=wandb"])
    assert cfg.task.data_dir == "/data/glue/RTE" and cfg.method.variant == "cls_only"
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_ratio) == (1e-3, 0.01, 0.1)
    t = cfg.trainer
    assert (t.epochs, t.max_steps, t.batch_size, t.grad_accum, t.max_length, t.precision) == (3, 7, 8, 2, 64, "bf16")
    assert cfg.seed == 7 and cfg.logger.name == "wandb"


def test_baselines_keep_their_own_learning_rate():
    assert compose(["task=rte", "method=full_ft"]).optim.lr == 2e-5  # Devlin et al.'s, paper.yaml recipes.full_ft
    assert compose(["task=rte", "method=classifier_only"]).optim.lr == 4.5e-3
    assert compose(["task=rte", "method=classifier_only"]).method.variant == "classifier_only"


@pytest.mark.parametrize("group,choice", [("task", "boolq"), ("model", "gpt5"), ("method", "magic")])
def test_unknown_choices_list_the_valid_ones(group, choice):
    with pytest.raises(MissingConfigException) as err:
        compose([f"{group}={choice}"])
    assert "rte" in str(err.value) or "minilm" in str(err.value) or "bitfit" in str(err.value)


def cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "pasta_cli.train", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=300)


# refusals of the settings alone; the cases that reach the hub or the disk run in a new interpreter below
CONFIG_ERRORS = [
    (["method.variant=bogus"], "unknown method.variant 'bogus': choose one of full, cls_only, sep_only, shared, classifier_only"),
    (["trainer.precision=fp16"], "trainer.precision=fp16 needs a CUDA GPU"),
    (["trainer.precision=fp8"], "unknown trainer.precision 'fp8'"),
    (["recipe=mine"], "unknown recipe 'mine': choose one of own, pasta"),
    (["trainer.packing=true"], "trainer.packing=true serves token classification only"),
    # a baseline's settings are refused before its model loads, not once the run folder is written
    # typed settings (each method's dataclass, in Hydra's ConfigStore): a wrong type or a key the method lacks
    # fails when the config is composed
    (["method=adapter", "method.size=abc"], "Value 'abc' of type 'str' could not be converted to Integer (key method.size)"),
    (["method=lora", "method.r=abc"], "Error merging override method.r=abc"),
    (["method=lora", "method.rr=3"], "Key 'rr' not in 'LoraSettings'"),
    (["method=lora", "+method.rr=3"], "method.rr is not a setting pasta-train reads"),
    (["method=diff_prune", "method.sparsity=2"], "method.sparsity 2.0: give the fraction of backbone weights"),  # a float
    (["method=lora", "method.r=0"], "method.r 0: give the LoRA rank"),
    (["method=prefix", "method.length=0"], "method.length 0: give the prefix length"),
]
OFFLINE_ERRORS = [
    (["task=rte", "task.data_dir=/nonexistent/RTE"], "/nonexistent/RTE"),
    (["task=rte"], "task.data_dir="),                       # no hub access: names the offline option
    (["model=bert-base", "task.builtin.train_size=8"], "model=minilm"),
    (["model=modernbert-base", "task.builtin.train_size=8"], "model=minilm"),  # today's encoders: the same hint
]


def one_error_line_and_no_run_folder(code, stderr, run_dir, message):
    assert code == 2, stderr
    lines = [l for l in stderr.splitlines() if l.startswith("pasta-train: error:")]
    assert len(lines) == 1 and message in lines[0], stderr
    assert "Traceback" not in stderr
    assert not run_dir.exists()


@pytest.mark.parametrize("args,message", CONFIG_ERRORS)
def test_setting_errors_are_one_line_and_leave_no_run_folder(tmp_path, args, message):
    """pasta-train's main() in this process (runner_fixtures.pasta_train): no interpreter start per case."""
    code, _, stderr = pasta_train(*args, f"hydra.run.dir={tmp_path}/run")
    one_error_line_and_no_run_folder(code, stderr, tmp_path / "run", message)


@pytest.mark.slow  # an interpreter per case (the cases below too): make test, not make test-fast
@pytest.mark.parametrize("args,message", OFFLINE_ERRORS)
def test_user_errors_are_one_line_and_leave_no_run_folder(tmp_path, args, message):
    out = cli(*args, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_error_line_and_no_run_folder(out.returncode, out.stderr, tmp_path / "run", message)


@pytest.mark.slow
def test_unknown_task_on_the_command_line_lists_the_tasks(tmp_path):
    out = cli("task=boolq", cwd=tmp_path)
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("pasta-train: error:"), out.stderr
    assert "Could not find 'task/boolq'" in lines[0] and "rte" in lines[0] and "conll2003" in lines[0]


@pytest.mark.slow
def test_cfg_job_shows_the_values_a_run_uses(tmp_path):
    """`pasta-train --cfg job task=sst2` prints the resolved recipe (the authors' optimiser), not ${recipe:...}."""
    import yaml
    out = cli("--cfg", "job", "task=sst2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert "${" not in out.stdout
    assert (cfg["optim"]["warmup_ratio"], cfg["optim"]["max_grad_norm"], cfg["optim"]["eps"],
            cfg["optim"]["eps_before_bias_correction"], cfg["method"]["init_std"]) == (0.0, None, 1e-6, True, None)
    assert not list(tmp_path.iterdir())  # printing a config makes no run folder
