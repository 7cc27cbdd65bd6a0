"""The exceptions the CLI turns into one line (`pasta-train: error: ...`) and an exit code, and the
argument parser every command shares."""

import argparse
import math


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


class Parser(argparse.ArgumentParser):
    """argparse, but a refusal is one line, `<prog>: error: ...`, and exit 2 instead of the usage block:
    argparse's own messages already name the bad value and the choices."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")
