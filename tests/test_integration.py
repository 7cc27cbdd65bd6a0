"""PASTA on the real packaged MiniLM: a few hundred steps beat classifier-only by a wide margin."""

import math

import pytest

from pasta_cli.config import compose
from pasta_cli.train import run_job

pytestmark = pytest.mark.slow
# the default run's budget (conf/task/builtin.yaml): 2000 pairs, batch 32, 3 epochs, lr 1e-2
BUDGET = ["task=builtin", "task.builtin.test_size=8", "trainer.progress=false", "trainer.max_length=64"]


def test_pasta_beats_classifier_only_under_the_same_budget(tmp_path):
    pasta = run_job(compose([*BUDGET, "method=pasta"]), tmp_path / "pasta")
    head_only = run_job(compose([*BUDGET, "method=classifier_only"]), tmp_path / "head")
    assert pasta["steps"] == head_only["steps"] == 3 * math.ceil(2000 / 32)  # 189 optimiser steps each
    assert pasta["trainable_method"] == 6 * 3 * 384 and head_only["trainable_method"] == 0
    assert head_only["best_score"] < 0.65  # a linear head on the frozen pooled [CLS] stays near chance
    assert pasta["best_score"] >= head_only["best_score"] + 0.15, (pasta["best_score"], head_only["best_score"])
