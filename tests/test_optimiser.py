"""The optimiser PASTA's authors ran: transformers 4.20's AdamW, which adds eps to sqrt(v) before the bias
correction (`optim.eps_before_bias_correction`), and the vectors' initialisation (`method.init_std`)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import tiny

from pasta_cli.config import check_config, compose
from pasta_cli.errors import PastaError
from pasta_cli.pasta import add_pasta
from pasta_cli.training.build import legacy_eps, setup_optimizer

BETAS, EPS, LR = (0.9, 0.999), 1e-6, 1e-2


def transformers_420_adamw(params, grads, steps, lr=LR, betas=BETAS, eps=EPS):
    """transformers 4.20.1 optimization.AdamW.step (correct_bias=True, no weight decay), line by line."""
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    params = [p.clone() for p in params]
    for step in range(1, steps + 1):
        for p, g, exp_avg, exp_avg_sq in zip(params, grads(step), m, v):
            exp_avg.mul_(betas[0]).add_(g, alpha=1.0 - betas[0])
            exp_avg_sq.mul_(betas[1]).addcmul_(g, g, value=1.0 - betas[1])
            denom = exp_avg_sq.sqrt().add_(eps)
            step_size = lr * math.sqrt(1.0 - betas[1] ** step) / (1.0 - betas[0] ** step)
            p.addcdiv_(exp_avg, denom, value=-step_size)
    return params


def grads_of(shapes, scale=1e-5):
    """Small gradients (a PASTA vector's are), where where eps sits decides the step's size."""
    def grads(step):
        g = torch.Generator().manual_seed(step)
        return [torch.randn(s, generator=g, dtype=torch.float64) * scale for s in shapes]
    return grads


def torch_adamw(params, grads, steps, legacy: bool, stop_at: int | None = None):
    params = [torch.nn.Parameter(p.clone()) for p in params]
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0)
    if legacy:
        legacy_eps(opt)
    for step in range(1, steps + 1):
        if step == stop_at:  # a resume: a new optimiser from the checkpoint's state dict
            saved = opt.state_dict()
            opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0)
            legacy_eps(opt)
            opt.load_state_dict(saved)
        for p, g in zip(params, grads(step)):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params]


def test_legacy_eps_gives_transformers_420_adamws_steps_and_resumes():
    shapes = [(3, 4, 8), (2, 8), (2,)]
    start = [torch.randn(s, dtype=torch.float64) for s in shapes]
    grads = grads_of(shapes)
    want = transformers_420_adamw(start, grads, 40)
    for got in (torch_adamw(start, grads, 40, legacy=True), torch_adamw(start, grads, 40, legacy=True, stop_at=17)):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    plain = torch_adamw(start, grads, 40, legacy=False)  # torch's placement: measurably another trajectory
    moved = [(w - s).abs().max() for w, s in zip(want, start)]
    gaps = [(p - w).abs().max() for p, w in zip(plain, want)]
    assert all(gap > 0.05 * move for gap, move in zip(gaps, moved))


def test_the_recipe_installs_the_authors_adamw_only_where_it_says():
    param = torch.nn.Parameter(torch.zeros(4))
    pasta, *_ = setup_optimizer(compose(["task=sst2"]), [param], total_steps=10)
    lora, *_ = setup_optimizer(compose(["task=sst2", "method=lora"]), [param], total_steps=10)
    assert pasta.param_groups[0]["legacy_eps"] == 1e-6 and "legacy_eps" not in lora.param_groups[0]
    param.grad = torch.ones(4)
    pasta.step()
    assert pasta.param_groups[0]["eps"] == pytest.approx(1e-6 / math.sqrt(1 - 0.999))


def test_the_vectors_start_as_the_authors_embedding_or_at_zero():
    model, tok = tiny("bert")
    std = model.config.initializer_range
    torch.manual_seed(0)
    vectors = add_pasta(model, tok, "full", pair=True).vectors
    assert vectors.numel() > 200 and abs(vectors.mean()) < std / 5 and 0.8 * std < vectors.std() < 1.2 * std
    model, tok = tiny("bert")
    assert not add_pasta(model, tok, "full", pair=True, init_std=0.0).vectors.any()


@pytest.mark.parametrize("value", ["-0.1", "inf"])
def test_a_bad_init_std_is_one_line(value):
    with pytest.raises(PastaError, match="method.init_std"):
        check_config(compose([f"method.init_std={value}"]), cuda_available=False)


def test_an_init_std_that_is_no_number_is_refused_when_the_config_is_composed():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="method.init_std=abc"):  # PastaSettings is typed
        compose(["method.init_std=abc"])
