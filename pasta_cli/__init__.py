"""pasta-cli: PASTA (special token adaptation) for frozen Transformer encoders."""

from pasta_cli.errors import PastaError
from pasta_cli.pasta import VARIANTS, PastaInjector, add_pasta, parameter_counts

__all__ = ["PastaError", "PastaInjector", "VARIANTS", "add_pasta", "parameter_counts"]
__version__ = "0.1.0"
