"""PASTA on the real packaged MiniLM: a few hundred steps beat classifier-only by a wide margin."""

import pytest

from pasta_cli.config import compose
from pasta_cli.train import run_job

pytestmark = pytest.mark.slow
BUDGET = ["task=builtin", "task.train_size=1024", "task.dev_size=256", "task.test_size=8", "trainer.batch_size=16",
          "trainer.epochs=4", "optim.lr=2e-2", "trainer.progress=false", "trainer.max_length=64"]


def test_pasta_beats_classifier_only_under_the_same_budget(tmp_path):
    pasta = run_job(compose([*BUDGET, "method=pasta"]), tmp_path / "pasta")
    head_only = run_job(compose([*BUDGET, "method=classifier_only"]), tmp_path / "head")
    assert pasta["steps"] == head_only["steps"] == 4 * 1024 // 16  # 256 optimiser steps each
    assert pasta["trainable_method"] == 6 * 3 * 384 and head_only["trainable_method"] == 0
    assert head_only["best_score"] < 0.65  # a linear head on the frozen pooled [CLS] stays near chance
    assert pasta["best_score"] >= head_only["best_score"] + 0.15, (pasta["best_score"], head_only["best_score"])
