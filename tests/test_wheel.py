"""The installable package: a wheel built from the repository, installed into a fresh virtual
environment, runs the user contract from an empty folder (no checkout, no conf/ beside it).

Slow (a wheel build, a venv, three short runs), so conftest.py runs it last.
"""

import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.last]
ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer.max_steps=2", "trainer.epochs=1", "trainer.batch_size=8", "trainer.max_length=32",
        "trainer.progress=false"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding only the wheel; its dependencies are this environment's (no downloads)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp / "dist").glob("pasta_cli-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, transformers, ...) come from this environment, appended after the venv's own
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return wheel, env_dir


def run(env_dir: Path, cwd: Path, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_wheel_ships_every_config_and_the_paper_data(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("pasta_cli/conf/") for n in names if n.startswith("pasta_cli/conf/") and n.endswith(".yaml")}
    in_repo = {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == in_repo
    assert "pasta_cli/paper.yaml" in names
    assert not any(n.startswith(("benchmarks/", "tests/", "scripts/")) for n in names)


def test_installed_pasta_train_runs_the_builtin_task_from_an_empty_folder(installed, tmp_path):
    _, env_dir = installed
    where = run(env_dir, tmp_path, str(env_dir / "bin" / "python"), "-c", "import pasta_cli; print(pasta_cli.__file__)")
    assert str(env_dir) in where.stdout, where.stdout + where.stderr  # the wheel's copy, not the checkout
    out = run(env_dir, tmp_path, str(env_dir / "bin" / "pasta-train"), *TINY,
              "task.builtin.train_size=32", "task.builtin.dev_size=16", "task.builtin.test_size=8")
    assert out.returncode == 0, out.stderr[-3000:]
    results = list((tmp_path / "outputs" / "runs" / "builtin").rglob("results.json"))
    assert len(results) == 1  # under the current folder's outputs/
    analysis = run(env_dir, tmp_path, str(env_dir / "bin" / "pasta-analyze"), "norms", str(results[0].parent))
    assert analysis.returncode == 0, analysis.stderr[-3000:]  # the analysis package ships too
    assert len(list((tmp_path / "outputs" / "analysis" / "norms").rglob("norms.csv"))) == 1


def test_installed_pasta_train_runs_a_users_own_task_yaml(installed, tmp_path):
    _, env_dir = installed
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"question": f"is {w} red?", "sentence": f"the {w} is red.", "label": "yes" if i % 2 else "no"}
            for i, w in enumerate(["car", "door", "box", "hat", "cup", "lamp", "kite", "bag"] * 3)]
    import json
    for name, part in (("train.jsonl", rows), ("dev.jsonl", rows[:8])):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    conf = tmp_path / "my_conf" / "task"
    conf.mkdir(parents=True)
    (conf / "my_task.yaml").write_text(textwrap.dedent(f"""\
        name: my_task
        kind: classification
        format: jsonl
        data_dir: {data}
        files: {{train: train.jsonl, validation: dev.jsonl}}
        text: [question, sentence]
        label: label
        """))
    out = run(env_dir, tmp_path, str(env_dir / "bin" / "pasta-train"), "--config-dir", str(tmp_path / "my_conf"),
              "task=my_task", *TINY)
    assert out.returncode == 0, out.stderr[-3000:]
    config = next((tmp_path / "outputs" / "runs" / "my_task").rglob("config.yaml")).read_text()
    assert "- 'no'\n  - 'yes'" in config or "- no\n  - yes" in config  # labels read from train, recorded
    bad = run(env_dir, tmp_path, str(env_dir / "bin" / "pasta-train"), "--config-dir", str(tmp_path / "my_conf"),
              "task=my_task", "task.label=answer", *TINY)
    assert bad.returncode == 2 and bad.stderr.count("pasta-train: error:") == 1 and "'answer'" in bad.stderr


def test_installed_pasta_reproduce_writes_its_table_under_the_current_folder(installed, tmp_path):
    _, env_dir = installed
    out = run(env_dir, tmp_path, str(env_dir / "bin" / "pasta-reproduce"), "table4", "--scale", "smoke",
              "--data-dir", str(tmp_path / "no-data"))
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "outputs" / "table4" / "smoke" / "table.md").read_text()
    assert table.count("| missing (no data) ") == 5 * 5 and "| CoLA | RTE | MRPC | STS-B | CoNLL2003 |" in table


def test_installed_pasta_predict_and_pasta_serve_start(installed, tmp_path):
    _, env_dir = installed
    for script in ("pasta-predict", "pasta-serve"):
        out = run(env_dir, tmp_path, str(env_dir / "bin" / script), "--help")
        assert out.returncode == 0 and "--adapter NAME=PATH" in out.stdout, out.stderr[-3000:]
    out = run(env_dir, tmp_path, str(env_dir / "bin" / "pasta-serve"))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "pasta-serve: error: nothing to serve: give --adapter NAME=PATH, or --adapters-dir DIR holding adapter "
        "folders, or --backbone to start empty and add tasks to --adapters-dir later"]
