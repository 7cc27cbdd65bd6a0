"""Each method's own recipe (paper.yaml `recipes`): the composed config carries its values, every entry names
its source, recipe=pasta gives PASTA's budget back, and the numbers are the sources' (hand-copied here)."""

from __future__ import annotations

from importlib.resources import files

import pytest
import yaml

from pasta_cli.config import compose
from pasta_cli.errors import PastaError

RAW = yaml.safe_load((files("pasta_cli") / "paper.yaml").read_text())  # read apart from pasta_cli.paper
GLUE = ["rte", "cola", "stsb", "mrpc", "sst2", "qnli", "mnli", "qqp"]
MODELS = ["bert-large", "bert-base", "roberta-large"]
BUDGET = {"lr": "optim.lr", "weight_decay": "optim.weight_decay", "warmup_ratio": "optim.warmup_ratio",
          "schedule": "optim.schedule", "epochs": "trainer.epochs", "batch_size": "trainer.batch_size",
          "max_length": "trainer.max_length"}


def expected(method: str, task: str, model: str) -> dict:
    """The most specific value of each key, spelled out on the raw YAML: model+task > model > task > common."""
    entry = RAW["recipes"][method]
    for_model = entry.get("models", {}).get(model, {})
    out = {}
    for layer in (entry, entry.get("tasks", {}).get(task, {}), for_model, for_model.get("tasks", {}).get(task, {})):
        out.update({k: v for k, v in layer.items() if k not in ("tasks", "models")})
    if method == "pasta":  # PASTA's lr, batch and epochs are Table 6's, through the task config
        out.update({k: RAW["table6"][task][k] for k in ("lr", "batch_size", "epochs")})
    for k in ("lr", "batch_size", "epochs"):  # a key the recipe does not give: the task config's, Table 6's
        out.setdefault(k, RAW["table6"][task][k])
    return out


def get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def test_every_recipe_entry_names_its_source():
    for name, entry in RAW["recipes"].items():
        for where, e in [(name, entry), *((f"{name}.models.{m}", v) for m, v in entry.get("models", {}).items())]:
            assert e.get("source") and e.get("cite"), where
            assert len(e["source"]) > 40, where  # a paper and where in it, or a script path
    assert set(RAW["recipes"]) == {"pasta", "full_ft", "bitfit", "lora", "prefix", "adapter", "diff_prune",
                                   "ia3", "vera", "ln_tuning", "trainable_tokens", "road", "fourierft", "loreft"}


@pytest.mark.slow  # 24 compositions per method (about 5 s each on 2 cores): make test, not make test-fast
@pytest.mark.parametrize("method", ["full_ft", "bitfit", "lora", "prefix", "pasta", "adapter", "diff_prune",
                                    "ia3", "vera", "ln_tuning", "trainable_tokens", "road", "fourierft", "loreft"])
def test_the_composed_config_carries_the_recipe(method):
    # the paper's baselines on every table's backbone; today's methods (no BERT-base entries: BERT-base's lookup
    # is BERT-large's) on the two the frontier runs
    models = MODELS if method in ("full_ft", "bitfit", "lora", "prefix", "pasta", "adapter", "diff_prune") \
        else ["bert-large", "roberta-large"]
    for model in models:
        for task in GLUE:
            cfg = compose([f"method={method}", f"task={task}", f"model={model}"])
            want = expected(method, task, model)
            for key, path in BUDGET.items():
                assert get(cfg, path) == want[key], (method, task, model, key)
            for key in ("r", "alpha", "dropout", "length", "size", "init_std", "sparsity", "penalty", "alpha_init",
                        "alpha_lr", "l0_fraction", "finetune_lr", "rank", "positions", "d_initial",
                        "projection_prng_key", "variant", "group_size", "n_frequency", "scaling",
                        "random_loc_seed"):  # the method's own settings
                if key in want and key in cfg.method:
                    assert cfg.method[key] == want[key], (method, key)
            assert cfg.recipe == "own"


def test_the_sources_numbers():
    """Copied by hand from the sources (paper.yaml cites them), so a wrong lookup or a typo in the data fails."""
    def values(*overrides):
        c = compose(list(overrides))
        return (c.optim.lr, c.trainer.batch_size, c.trainer.epochs, c.optim.weight_decay, c.optim.warmup_ratio,
                c.optim.schedule, c.trainer.max_length)
    # microsoft/LoRA examples/NLU/roberta_large_rte.sh: 8 GPUs x batch 8, lr 4e-4, 20 epochs, wd 0.1, 512 tokens
    assert values("method=lora", "task=rte", "model=roberta-large") == (4e-4, 64, 20, 0.1, 0.06, "linear", 512)
    assert values("method=lora", "task=qnli", "model=roberta-large") == (2e-4, 32, 10, 0.1, 0.06, "linear", 512)
    # VeRA, Table 8 (RoBERTa-large): RTE lr 2e-2, 40 epochs, 4 GPUs x 32, max length 128, warm-up 0.06
    assert values("method=vera", "task=rte", "model=roberta-large") == (2e-2, 128, 40, 0.0, 0.06, "linear", 128)
    # FourierFT, Table 9 (RoBERTa-large): SST-2 lr 4.3e-2, batch 32, 10 epochs, max length 128
    assert values("method=fourierft", "task=sst2", "model=roberta-large") == (4.3e-2, 32, 10, 0.0, 0.06, "linear", 128)
    c = compose(["method=lora", "task=cola"])
    assert (c.method.r, c.method.alpha, c.method.dropout) == (8, 16, 0.0)  # loralib's default: no LoRA dropout
    # Devlin et al. sec. 4.1 + google-research/bert: batch 32, 3 epochs, wd 0.01, 10% warm-up
    assert values("method=full_ft", "task=mrpc", "model=bert-large") == (2e-5, 32, 3, 0.01, 0.1, "linear", 128)
    # fairseq examples/roberta/README.glue.md: RTE lr 2e-5, batch 16, 10 epochs, wd 0.1, 6% warm-up
    assert values("method=full_ft", "task=rte", "model=roberta-large") == (2e-5, 16, 10, 0.1, 0.06, "linear", 512)
    # benzakenelad/BitFit run_glue.py defaults, constant rate
    assert values("method=bitfit", "task=sst2") == (1e-3, 8, 16, 0.0, 0.0, "constant", 128)
    # THUDM/P-tuning-v2 run_script/run_rte_bert.sh
    assert values("method=prefix", "task=rte") == (1e-2, 32, 60, 0.0, 0.0, "linear", 128)
    assert compose(["method=prefix"]).method.length == 20
    # Houlsby et al. sec. 3.1: batch 32, 10% warm-up, linear decay; adapter-bert: wd 0.01, 128 tokens; lr and epochs
    # our picks from the sweep {3e-5, 3e-4, 3e-3} x {3, 20}
    assert values("method=adapter", "task=rte", "model=bert-large") == (3e-4, 32, 20, 0.01, 0.1, "linear", 128)
    assert values("method=adapter", "task=sst2", "model=bert-large") == (3e-4, 32, 3, 0.01, 0.1, "linear", 128)
    c = compose(["method=adapter"]).method
    assert (c.size, c.init_std) == (64, 1e-3)
    # dguo98/DiffPruning example_sst2.sh: batch 8, lr 1e-5, sparsity_pen 1.25e-7, alpha_init 5, 3 + 3 epochs, 0.5%
    assert values("method=diff_prune", "task=sst2") == (1e-5, 8, 6, 0.0, 0.0, "linear", 128)
    c = compose(["method=diff_prune"]).method
    assert (c.sparsity, c.penalty, c.alpha_init, c.alpha_lr, c.l0_fraction, c.finetune_lr) == (
        0.005, 1.25e-7, 5.0, 0.1, 0.5, 5e-5)
    # pyreft examples/loreft/README.md's GLUE command: lr 6e-4, batch 32, 3 epochs, wd 0, warm-up 0.09, 256 tokens
    assert values("method=loreft", "task=rte", "model=roberta-large") == (6e-4, 32, 3, 0.0, 0.09, "linear", 256)
    c = compose(["method=loreft"]).method
    assert (c.rank, c.layers, c.positions, c.dropout, c.shared) == (1, None, "f1", 0.05, True)
    # PASTA: Table 6
    # ... and the authors' code where the paper is silent (luka-group/PASTA main_glue.py): no warm-up, no weight decay
    assert values("task=rte", "model=bert-large") == (4.5e-3, 32, 150, 0.0, 0.0, "linear", 128)


@pytest.mark.parametrize("method", ["full_ft", "bitfit", "lora", "prefix", "classifier_only", "adapter",
                                    "diff_prune", "loreft"])
def test_recipe_pasta_gives_every_method_pastas_budget_and_its_own_lr(method):
    for task in ("rte", "sst2"):
        own = compose([f"method={method}", f"task={task}", "model=roberta-large"])
        shared = compose([f"method={method}", f"task={task}", "model=roberta-large", "recipe=pasta"])
        t6 = RAW["table6"][task]
        assert (shared.trainer.epochs, shared.trainer.batch_size) == (t6["epochs"], t6["batch_size"])
        pasta = RAW["recipes"]["pasta"]
        assert (shared.optim.weight_decay, shared.optim.warmup_ratio, shared.trainer.max_length) == (
            pasta["weight_decay"], pasta["warmup_ratio"], pasta["max_length"])
        assert (shared.optim.eps, shared.optim.eps_before_bias_correction, shared.optim.max_grad_norm) == (
            pasta["eps"], pasta["eps_before_bias_correction"], pasta["max_grad_norm"])
        assert shared.optim.lr == own.optim.lr and shared.method == own.method


def test_a_task_outside_glue_keeps_its_budget_with_the_methods_lr():
    cfg = compose(["method=prefix"])  # the built-in task: its own epochs and batch, P-tuning v2's lr
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.optim.lr) == (3, 32, 1e-2)
    cfg = compose(["method=lora", "task=conll2003"])
    assert (cfg.trainer.epochs, cfg.optim.lr, cfg.optim.weight_decay) == (RAW["table6"]["conll2003"]["epochs"],
                                                                           3e-4, 0.1)


def test_a_recipe_without_a_max_length_for_the_task_keeps_the_trainers():
    # LoRA's scripts give a max length per GLUE task only: off GLUE (the built-in task, CoNLL-2003) the run keeps
    # the trainer's 128 rather than failing to compose (`pasta-train method=lora` on the default task)
    assert compose(["method=lora"]).trainer.max_length == 128
    assert compose(["method=lora", "task=conll2003"]).trainer.max_length == 128
    assert compose(["method=lora", "task=rte"]).trainer.max_length == 512


def test_an_unknown_recipe_is_one_clear_error():
    from pasta_cli.config import check_config
    with pytest.raises(PastaError, match="unknown recipe 'mine': choose one of own, pasta"):
        check_config(compose(["recipe=mine"]), cuda_available=False)


def test_bitfits_constant_rate_and_the_linear_decay():
    import torch

    from pasta_cli.training.build import setup_optimizer

    def rates(*overrides):
        p = torch.nn.Parameter(torch.zeros(1))
        opt, sched, _ = setup_optimizer(compose(["optim.warmup_ratio=0.2", *overrides]), [p], 10)
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out
    assert rates("method=bitfit") == [0.0, 5e-4] + [1e-3] * 8  # warm-up, then BitFit's code: no decay
    linear = rates("method=bitfit", "optim.schedule=linear")
    assert linear[2] == 1e-3 and linear[-1] == pytest.approx(1e-3 / 8)


# Where the paper is silent, PASTA's recipe is the authors' code (luka-group/PASTA), hand-copied here from it:
# main_glue.py (GLUE) runs transformers 4.20.1's AdamW (eps 1e-6, added before the bias correction), no warm-up,
# no weight decay, no clipping; main_ner.py (CoNLL-2003) the same but torch's AdamW (eps 1e-8); PASTA_modeling.py
# initialises the vectors as an nn.Embedding, normal(0, initializer_range).
AUTHORS = {"optim.weight_decay": 0.0, "optim.warmup_ratio": 0.0, "optim.schedule": "linear",
           "optim.max_grad_norm": None, "optim.eps": 1e-6, "optim.eps_before_bias_correction": True,
           "trainer.max_length": 128, "method.init_std": None}
NER = {**AUTHORS, "optim.eps": 1e-8, "optim.eps_before_bias_correction": False}


@pytest.mark.parametrize("task", ["sst2", "rte", "cola", "mrpc", "stsb", "conll2003"])
def test_pastas_recipe_is_the_authors_code_where_the_paper_is_silent(task):
    cfg = compose([f"task={task}"])  # what `pasta-train --cfg job task=<task>` prints
    want = NER if task == "conll2003" else AUTHORS
    assert {path: get(cfg, path) for path in want} == want
    sources = RAW["recipes"]["pasta"]["sources"]
    for path in want:  # every value the paper leaves open names the line of the authors' code it comes from
        key = path.split(".")[1]
        assert any(f in sources[key] for f in ("main_glue.py", "main_ner.py", "PASTA_modeling.py")), key


def test_the_baselines_keep_torchs_adamw_and_clipping():
    cfg = compose(["method=lora", "task=sst2"])
    assert (cfg.optim.eps, cfg.optim.eps_before_bias_correction, cfg.optim.max_grad_norm) == (1e-8, False, 1.0)
