"""The exceptions the CLI turns into one line (`pasta-train: error: ...`) and an exit code."""


class PastaError(Exception):
    """Bad input or an unmet requirement, with a message that says what would be right (exit 2)."""

    exit_code = 2


class WriteError(PastaError):
    """A file of the run could not be written (full disk, no permission): the previous version of the
    file is intact, so the run can go on with `resume=true` once the cause is fixed (exit 1)."""

    exit_code = 1
