"""Every command's failure is one line, `<prog>: error: <one line>`, with errors.run_cli's exit code (2 a user
error, 1 the environment), from the installed console scripts. No model loads: each is refused before one would.
The commands start together (each is mostly the interpreter importing torch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pasta_cli.errors import PastaError, WriteError, run_cli

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def commands(tmp: Path) -> dict[str, tuple[list[str], str, int]]:
    """name: (argv, the line's start, exit code)."""
    (tmp / "a-file").write_text("not a folder\n")
    (tmp / "in.tsv").write_text("index\tsentence1\tsentence2\n0\ta\tb\n")
    return {
        "train": (["pasta-train", "trainer.batch_size=abc", f"hydra.run.dir={tmp / 'run'}"],
                  "pasta-train: error: ", 2),
        "predict": (["pasta-predict", "--adapter", "rte=/nonexistent", "--input", "rte=/nonexistent.tsv",
                     "--output", str(tmp / "preds")], "pasta-predict: error: ", 2),
        "serve": (["pasta-serve", "--adapters-dir", "/nonexistent"], "pasta-serve: error: ", 2),
        "reproduce": (["pasta-reproduce", "table9", "--output-root", str(tmp / "out")], "pasta-reproduce: error: ", 2),
        "analyze": (["pasta-analyze", "norms", "/nonexistent", "--out", str(tmp / "norms")],
                    "pasta-analyze norms: error: ", 2),
        # a Hub id that is not in the Hub cache, offline (ENV sets HF_HUB_OFFLINE=1): the id and the reason
        "hub": (["pasta-predict", "--adapter", "rte=someone/pasta-rte-not-cached", "--input", f"rte={tmp / 'in.tsv'}",
                 "--output", str(tmp / "preds-hub")], "pasta-predict: error: adapter 'someone/pasta-rte-not-cached'", 2),
        "push": (["pasta-push", str(tmp), "--repo-id", "not a repo id"], "pasta-push: error: ", 2),
        # an OSError (the zip's folder is a file): the environment's fault, exit 1
        "oserror": (["pasta-reproduce", "submission", "table2", "--output-root", str(tmp / "out"), "--partial",
                     "--output", str(tmp / "a-file" / "submission.zip")], "pasta-reproduce submission: error: ", 1),
    }


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    procs = {name: (subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=tmp, env=ENV, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE), start, code)
             for name, (argv, start, code) in commands(tmp).items()}
    out = {}
    for name, (proc, start, code) in procs.items():
        _, err = proc.communicate(timeout=600)
        out[name] = (proc.returncode, err, start, code)
    return out


@pytest.mark.parametrize("name", ["train", "predict", "serve", "reproduce", "analyze", "hub", "push", "oserror"])
def test_a_bad_argument_is_one_line_and_its_exit_code(ran, name):
    returncode, err, start, code = ran[name]
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(start) and returncode == code, (returncode, err)


def test_a_hub_id_offline_names_hf_hub_offline(ran):
    assert "HF_HUB_OFFLINE=1" in ran["hub"][1]


def test_the_oserror_names_its_file(ran, tmp_path):
    assert "a-file" in ran["oserror"][1]


def test_run_cli_codes(capsys):
    def fail(e):
        def fn():
            raise e
        return fn

    assert run_cli("p", lambda: None) == 0 and run_cli("p", lambda: 3) == 3 and run_cli("p", lambda: {"a": 1}) == 0
    assert run_cli("p", fail(PastaError("bad\nvalue"))) == 2
    assert capsys.readouterr().err == "p: error: bad\\nvalue\n"
    assert run_cli("p", fail(WriteError("disk full"))) == 1
    assert run_cli("p", fail(OSError(28, "No space left on device", "/x"))) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "p: error: No space left on device (/x)"
    assert run_cli("p", fail(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "p: interrupted\n"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_cli("p", fail(ZeroDivisionError()))
    assert run_cli("p", fail(ZeroDivisionError()), unknown=lambda e: "went wrong") == 2


@pytest.mark.parametrize("argv", [["norms"], ["ablate", "run", "--samples", "0"], ["heads", "--nope=1"]])
def test_a_bad_pasta_analyze_argument_is_one_line(argv, capsys):
    from pasta_cli.analysis import cli

    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("pasta-analyze"), err
    assert ": error: " in err
