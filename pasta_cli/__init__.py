"""pasta-cli: PASTA (special token adaptation) for frozen Transformer encoders.

The public face: put PASTA on a model, save what it trained, load it back onto a fresh backbone,
and serve many tasks on one frozen backbone (MultiTaskPasta).

The names load on first use (module `__getattr__`, as PEFT and transformers do): `import pasta_cli.errors`
or a command's `--help` does not pay for torch and transformers.
"""

from importlib import import_module

# public name -> the module that defines it
_EXPORTS = {
    "VARIANTS": "pasta_cli.pasta", "PastaInjector": "pasta_cli.pasta", "add_pasta": "pasta_cli.pasta",
    "load_adapter": "pasta_cli.adapter", "save_adapter": "pasta_cli.adapter",
    "PastaError": "pasta_cli.errors", "parameter_counts": "pasta_cli.modeling", "MultiTaskPasta": "pasta_cli.multitask",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pasta_cli' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
