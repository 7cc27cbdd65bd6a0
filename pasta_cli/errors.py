"""The exceptions the CLI turns into one line (`pasta-train: error: ...`) and an exit code, the wrapper every
command runs in (`run_cli`), and the argument parser every command shares. Bottom layer: no pasta_cli import."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence

USER, ENVIRONMENT, INTERRUPTED = 2, 1, 130  # the exit codes (run_cli)


class PastaError(Exception):
    """Bad input or an unmet requirement, with a message that says what would be right (exit 2)."""

    exit_code = 2


class WriteError(PastaError):
    """A file of the run could not be written (full disk, no permission): the previous version of the
    file is intact, so the run can go on with `resume=true` once the cause is fixed (exit 1)."""

    exit_code = 1


def check_number(key: str, value, ok, want: str, whole: bool = False) -> None:
    """Refuse a setting that is not a number (a whole one if `whole`) or fails `ok(value)`; `want` says what would
    be right. A string (method.size=abc) is refused here rather than failing a comparison later, and so is a NaN or
    an infinity, which no range holds."""
    kinds = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or not ok(value):
        raise PastaError(f"{key} {value!r}: {want}")


def short(value) -> str:
    """A value quoted in a one-line message, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Parser(argparse.ArgumentParser):
    """argparse, but a refusal is one line, `<prog>: error: ...`, and exit 2 instead of the usage block:
    argparse's own messages already name the bad value and the choices."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def say(line: str) -> None:
    """One line on stderr, whatever a message quotes from the user's files (a label with a newline stays on it)."""
    print(line.replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr, flush=True)


def run_cli(prog: str, fn: Callable[[], int | None], *, printer: Callable[[str], None] = say,
            explain: Callable[[BaseException], str] | None = None,
            os_error: Callable[[OSError], tuple[str, int]] | None = None,
            unknown: Callable[[Exception], str | None] | None = None, tracebacks: bool = False) -> int:
    """Run a command's `fn` and return its exit code; every failure a user can act on is one line on stderr,
    `<prog>: error: <one line>`, and a code:

        0    done (or fn's own code, where it returns an int)
        2    a user error: a PastaError (bad input, an unmet requirement; its exit_code), a Hydra/OmegaConf config
             error (an unknown option, a misspelt key, a value of the wrong type), a bad argument (Parser)
        1    the environment: a WriteError (a full disk: the previous files are intact) or any other OSError
             (permission, a missing device)
        130  interrupted (Ctrl-C): `<prog>: interrupted`, or the KeyboardInterrupt's own message

    The caller exits with it (`sys.exit(run_cli(...))`). `printer` prints the line (pasta-train: rank 0 only);
    `explain` turns a config error into its line (default `one_line`); `os_error` gives an OSError's (line, code)
    (default: its reason and file, exit 1); `unknown` gives the line of any other exception, or None to let it
    raise (the default: a bug's traceback is what a report needs); `tracebacks` lets config and OS errors raise."""
    try:
        code = fn()
        return code if isinstance(code, int) else 0
    except KeyboardInterrupt as e:
        reason = e.args[0] if e.args and isinstance(e.args[0], str) else "interrupted"
        printer(f"{prog}: {reason}")
        return INTERRUPTED
    except Exception as e:  # noqa: BLE001 - sorted below; what is not ours raises again
        line, code = _classify(e, explain or one_line, os_error, unknown, tracebacks)
        printer(f"{prog}: error: {line}")
        return code


def _classify(e: Exception, explain, os_error, unknown, tracebacks: bool) -> tuple[str, int]:
    """(line, exit code) of a failure run_cli reports; raises again what it must not hide."""
    if isinstance(e, PastaError):
        return str(e), e.exit_code
    if is_config_error(e):  # before OSError: Hydra's MissingConfigException is one
        if tracebacks:
            raise e
        return explain(e), USER
    if isinstance(e, OSError):
        if tracebacks:
            raise e
        if os_error is not None:
            return os_error(e)
        return f"{e.strerror or e} ({e.filename or type(e).__name__})", ENVIRONMENT
    line = None if unknown is None else unknown(e)
    if line is None:
        raise e
    return line, USER


def is_config_error(e: BaseException) -> bool:
    """A Hydra or OmegaConf error (imported here, when a command fails, not by every `import pasta_cli`)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(e, (HydraException, OmegaConfBaseException))


def _is_omegaconf_error(e: BaseException | None) -> bool:
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(e, OmegaConfBaseException)


def one_line(err: BaseException, task_keys: Sequence[str] = ()) -> str:
    """A Hydra/OmegaConf config error as one line: where, what was wrong, the key, and the choices.

    Hydra's messages span lines ("In 'task/x': ValidationError raised while composing config:", the
    problem, "full_key: task.epochs", the schema's type names, the config search path), and an
    override's error keeps its reason in the chained exception; the useful lines are joined. `task_keys`:
    the keys a task takes, named where a task key is unknown.
    """
    lines = str(err).splitlines()
    reason = err.__cause__ or err.__context__
    if _is_omegaconf_error(reason) and str(reason).splitlines()[0] not in str(err):
        lines += str(reason).splitlines()
    parts, key = [], None
    for line in (x.strip() for x in lines):
        if line.startswith("Config search path"):
            break  # Hydra's list of where it looked: not what the user got wrong
        if line.startswith("full_key:"):
            key = line.removeprefix("full_key:").strip()
        elif line and not line.startswith(("reference_type=", "object_type=")):
            parts.append(re.sub(r"\w+ raised while composing config:", "", line).strip())
    text = " ".join(p if p.endswith((":", ".")) else p + ";" for p in parts if p).rstrip(";")
    if "Available options" in text:  # a missing config option: list the choices on one line
        head, options = text.split("Available options", 1)
        group, names = options.split(":", 1)
        text = f"{head.rstrip('; ')}; available options{group}: {', '.join(names.replace(';', ' ').split())}"
    if key and key.startswith("task.") and "not in 'TaskSpec'" in text and task_keys:
        text += f"; a task's keys are {', '.join(task_keys)}"
    if key and "is not a ListConfig, list or tuple" in text:  # `text: text` in a task YAML, or task.text=text
        where = text.split(": ", 1)[0] + ": " if text.startswith("In '") else ""
        example = LIST_EXAMPLES.get(key, "[a, b]")
        return (f"{where}{key} takes a list in brackets: {key.rsplit('.', 1)[-1]}: {example} in a YAML file, "
                f"{key}={example.split(' (')[0].replace(' ', '')} on the command line")
    return f"{text} (key {key})" if key else text


# what a list-valued key looks like, for the one line that says a plain value was given where a list belongs
LIST_EXAMPLES = {"task.text": "[sentence] (single sentences; [sentence1, sentence2] for pairs)",
                 "task.labels": "[negative, positive]", "task.metrics": "[accuracy]",
                 "task.eval_splits": "[validation]", "optim.betas": "[0.9, 0.999]"}
NULL_SECTIONS = ("task.hub", "task.builtin", "task.test_columns")  # null unless a task sets them


def composition_error(err: BaseException) -> str:
    """An error OmegaConf raised (not as its own kind) while Hydra applied an override, as one line: a key set
    inside a section the task leaves null (task.hub.path=x on a task without hub) is the known cause."""
    key = None
    tb = err.__traceback__
    while tb is not None:  # the override Hydra was applying, from its frame (hydra's _apply_overrides_to_config)
        override = tb.tb_frame.f_locals.get("override")
        key = getattr(override, "key_or_group", key)
        tb = tb.tb_next
    section = next((s for s in NULL_SECTIONS if key and (key == s or key.startswith(s + "."))), None)
    if section:
        return (f"{key} cannot be set from the command line on a task without {section} (it is null there): "
                f"write the task's {section.split('.')[1]} section in a task YAML and pass --config-dir")
    return f"cannot apply {key or 'the overrides'} ({type(err).__name__}: {str(err).splitlines()[0]})"
