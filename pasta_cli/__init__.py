"""pasta-cli: PASTA (special token adaptation) for frozen Transformer encoders.

The public face: put PASTA on a model, save what it trained, load it back onto a fresh backbone,
and serve many tasks on one frozen backbone (MultiTaskPasta).
"""

from pasta_cli.adapter import load_adapter, save_adapter
from pasta_cli.errors import PastaError
from pasta_cli.modeling import parameter_counts
from pasta_cli.multitask import MultiTaskPasta
from pasta_cli.pasta import VARIANTS, PastaInjector, add_pasta

__all__ = ["VARIANTS", "MultiTaskPasta", "PastaError", "PastaInjector", "add_pasta", "load_adapter", "parameter_counts",
           "save_adapter"]
__version__ = "0.1.0"
