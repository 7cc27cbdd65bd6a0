"""One exception type for mistakes a user can fix; the CLI prints its message as one line."""


class PastaError(Exception):
    """Bad input or an unmet requirement, with a message that says what would be right."""
