"""PastaModel: the PEFT tuner that puts pasta_cli.pasta's injector on a transformers encoder.

No module is replaced. The transformers model gets `model.pasta`, a PastaLayer holding one PastaInjector per
adapter (its `vectors`), hooked onto the encoder by `pasta.attach` exactly as pasta-train hooks its single
injector; the head modules (classifier, RoBERTa's classification head, DeBERTa's pooler, ModernBERT's head) are
PEFT's modules_to_save, one copy per adapter (PastaHead). An `adapter_names=[...]` batch (inference) routes each
row to its adapter: the vectors through `pasta.RowInjector` (MultiTaskPasta's per-row table), the heads by rows.

Checkpoint keys are pasta-cli's (`pasta_vectors`, the head's transformers names): `_remove_adapter_name_from_key`
writes them, `_remap_adapter_state_dict_for_load` reads them (and PEFT-style `base_model.model.` keys).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from torch import nn

from pasta_cli.backbones import load_tokenizer
from pasta_cli.errors import PastaError
from pasta_cli.modeling import encoder_layers, freeze_empty, head_modules
from pasta_cli.pasta import PastaInjector, RowInjector, attach, count_slots, stack_vectors, template_token_ids
from pasta_cli.peft.config import PastaConfig, head_kind

PREFIX = "pasta."               # every PASTA parameter lives under the transformers model's `pasta` module
PEFT_PREFIX = "base_model.model."
VECTORS = "pasta_vectors"       # the checkpoint key of an adapter's vectors (pasta-cli's adapter format)


class PastaLayer(nn.Module, BaseTunerLayer):
    """`model.pasta`: each adapter's PastaInjector, and the injector the hooks call for the batch in flight (the
    active adapter's, or a per-row table while an `adapter_names=` batch runs)."""

    adapter_layer_names = ("injector",)

    def __init__(self):
        nn.Module.__init__(self)
        self.injector = nn.ModuleDict()
        self.merged_adapters = []
        self._disable_adapters = False
        self.row_names = None  # one adapter name per row, while an adapter_names= batch runs
        self.__dict__["_current"] = None  # not a submodule: never in the state dict

    def set_adapter(self, adapter_names, inference_mode: bool = False) -> None:
        super().set_adapter(adapter_names, inference_mode=inference_mode)
        freeze_empty(self)  # classifier_only: an empty tensor never requires grad (DDP would wait for it)

    def set_requires_grad(self, adapter_names, requires_grad: bool = True) -> None:
        super().set_requires_grad(adapter_names, requires_grad)
        freeze_empty(self)

    def locate(self, input_ids, attention_mask=None, special_tokens_mask=None, starts=None):
        current = None
        if self.row_names is not None:
            if len(self.row_names) != input_ids.shape[0]:
                raise PastaError(f"adapter_names has {len(self.row_names)} names for a batch of {input_ids.shape[0]} "
                                 "rows: give one adapter name per row")
            current = self._rows(input_ids.device)
        elif not self.disable_adapters:
            active = [a for a in self.active_adapters if a in self.injector]
            if len(active) > 1:
                raise PastaError(f"PASTA runs one adapter per input, not a sum of {active}: set_adapter(one name), "
                                 "or pass adapter_names=[one name per row]")
            current = self.injector[active[0]] if active else None
        self.__dict__["_current"] = current
        if current is not None:
            current.locate(input_ids, attention_mask, special_tokens_mask, starts)

    def inject(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        current = self.__dict__["_current"]
        return hidden if current is None else current.inject(layer, hidden)

    def _rows(self, device) -> RowInjector:
        """MultiTaskPasta's mixed-batch injector over the adapters the rows name."""
        unique = list(dict.fromkeys(self.row_names))
        injectors = [self.injector[name] for name in unique]
        table, maps = stack_vectors([i.vectors.detach() for i in injectors],
                                    [i.slot_to_vector.tolist() for i in injectors])
        rows = RowInjector(injectors[0].num_layers, table.shape[-1], injectors[0].slot_token_ids.tolist()).to(device)
        which = torch.tensor([unique.index(name) for name in self.row_names], device=device)
        rows.table = table
        rows.row_maps = maps.to(device)[which]
        rows.row_slots = torch.tensor([i.num_slots for i in injectors], device=device)[which]
        return rows


class PastaHead(ModulesToSaveWrapper):
    """A head module with one copy per adapter (PEFT's modules_to_save). Two differences: its tensors load under
    their transformers names (the tuner maps them), and an `adapter_names=` batch may route any head module (a
    RoBERTa classification head, DeBERTa's pooler), not only a Linear: each adapter's copy reads its own rows."""

    def adapter_state_dict_load_map(self, adapter_name):
        return {}  # PastaModel._remap_adapter_state_dict_for_load maps this head's keys

    def _mixed_batch_forward(self, input, *args, adapter_names, **kwargs):
        out = None
        for name in dict.fromkeys(adapter_names):
            rows = torch.tensor([i for i, n in enumerate(adapter_names) if n == name], device=input.device)
            y = self.modules_to_save[name](input[rows], *args, **kwargs)
            out = y.new_empty((len(adapter_names), *y.shape[1:])) if out is None else out
            out[rows] = y
        return out


def _names_hook(module, args, kwargs, names):
    kwargs["adapter_names"] = names
    return args, kwargs


class PastaModel(BaseTuner):
    """The tuner `get_peft_model(model, PastaConfig(...))` builds (registered as PeftType.PASTA)."""

    prefix: str = PREFIX
    tuner_layer_cls = PastaLayer
    target_module_mapping: dict = {}  # PASTA replaces no module: it hooks the encoder's layers

    def _prepare_adapter_config(self, peft_config, model_config):
        return peft_config

    @staticmethod
    def _check_target_module_exists(peft_config, key):
        return False

    def _create_and_replace(self, *args, **kwargs):
        raise NotImplementedError("PASTA replaces no module (inject_adapter hooks the encoder's layers)")

    def inject_adapter(self, model, adapter_name, autocast_adapter_dtype=True, low_cpu_mem_usage=False,
                       state_dict=None) -> None:
        config = self.peft_config[adapter_name]
        layers = encoder_layers(model)
        if config.num_labels is not None and config.num_labels != model.config.num_labels:
            raise PastaError(f"adapter '{adapter_name}' has a head of {config.num_labels} labels, this model's has "
                             f"{model.config.num_labels}: load it onto a model with num_labels={config.num_labels} "
                             "(the adapters of one PeftModel share the head's shape)")
        if config.num_slots is None or config.slot_token_ids is None:
            _slots_from_saved_tokenizer(config, model)
        dropout = getattr(model.config, "hidden_dropout_prob", 0.0) if config.dropout is None else config.dropout
        init_std = getattr(model.config, "initializer_range", 0.02) if config.init_std is None else config.init_std
        injector = PastaInjector(len(layers), config.num_slots, model.config.hidden_size, config.variant,
                                 config.slot_token_ids, dropout, init_std)
        if not isinstance(getattr(model, "pasta", None), PastaLayer):
            model.pasta = PastaLayer()
            attach(model, model.pasta, layers)
        model.pasta.injector[adapter_name] = injector.to(next(model.parameters()).device)
        heads = head_modules(model)
        for name in heads:
            module = getattr(model, name)
            if isinstance(module, PastaHead):
                module.update(adapter_name)
            else:
                setattr(model, name, PastaHead(module, adapter_name))
        _describe(config, model, injector, dropout, heads)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)
        self._mark_only_adapters_as_trainable(model)
        if config.inference_mode:
            self.set_requires_grad(adapter_name, requires_grad=False)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """`adapter_names=[one per row]`: each row gets its adapter's vectors and head (inference only)."""
        names = kwargs.pop("adapter_names", None)
        if names is None:
            yield
            return
        self._check_row_names(list(names))
        heads = [m for m in self.model.modules() if isinstance(m, PastaHead)]
        handles = [m.register_forward_pre_hook(partial(_names_hook, names=list(names)), with_kwargs=True)
                   for m in heads]
        self.model.pasta.row_names = list(names)
        try:
            yield
        finally:
            self.model.pasta.row_names = None
            for handle in handles:
                handle.remove()

    def _check_row_names(self, names: list[str]) -> None:
        if self.training:
            raise PastaError("adapter_names= (a mixed-adapter batch) is for inference: call model.eval() first")
        unknown = sorted({n for n in names if n not in self.model.pasta.injector})
        if unknown:
            raise PastaError(f"adapter_names names no PASTA adapter {unknown} ('__base__' included): the adapters are "
                             f"{', '.join(self.model.pasta.injector)}")
        unique = list(dict.fromkeys(names))
        for where, module in self.model.named_modules():
            if isinstance(module, PastaHead):
                shapes = {n: [tuple(p.shape) for p in module.modules_to_save[n].parameters()] for n in unique}
                if len({str(s) for s in shapes.values()}) > 1:
                    raise PastaError(f"adapters {unique} have heads of different shapes ({where}: "
                                     f"{'; '.join(f'{n} {s[-1]}' for n, s in shapes.items())}): a mixed batch needs "
                                     "one head shape; send each adapter's rows in its own batch")

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        key = key.removeprefix(PEFT_PREFIX)
        return VECTORS if key == f"{PREFIX}injector.{adapter_name}.vectors" else key

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        prefix = PEFT_PREFIX if any(n.startswith(PEFT_PREFIX) for n, _ in model.named_parameters()) else ""
        heads = [n.removeprefix(PEFT_PREFIX) for n, m in model.named_modules() if isinstance(m, PastaHead)]
        out = {}
        for key, value in state_dict.items():
            bare = key.removeprefix(PEFT_PREFIX)
            if bare == VECTORS:
                out[f"{prefix}{PREFIX}injector.{adapter_name}.vectors"] = value
                continue
            head = next((h for h in heads if bare.startswith(h + ".")), None)
            if head is None:
                out[key] = value
            else:
                out[f"{prefix}{head}.modules_to_save.{adapter_name}.{bare[len(head) + 1:]}"] = value
        return out


def _slots_from_saved_tokenizer(config: PastaConfig, model) -> None:
    """num_slots and slot_token_ids from the tokenizer saved with the base model (its folder or hub id)."""
    name = config.base_model_name_or_path or getattr(model, "name_or_path", "")
    if not name:
        raise PastaError("PASTA needs the tokenizer's template (which ids are [CLS]/[SEP], how many per input) and "
                         "this model names no folder to read it from: use PastaConfig.from_tokenizer(tokenizer, "
                         "pair=...) or give num_slots and slot_token_ids")
    tokenizer = load_tokenizer(name)
    config.num_slots = config.num_slots or count_slots(tokenizer, config.pair)
    config.slot_token_ids = config.slot_token_ids or template_token_ids(tokenizer)


def _describe(config: PastaConfig, model, injector: PastaInjector, dropout: float, heads: list[str]) -> None:
    """Fill pasta-cli's adapter keys, so that PEFT's adapter_config.json is pasta-cli's too (pasta_cli.adapter)."""
    config.backbone = config.backbone or config.base_model_name_or_path or getattr(model, "name_or_path", None)
    config.model_type, config.hidden_size = model.config.model_type, model.config.hidden_size
    config.num_layers, config.num_vectors = injector.num_layers, injector.num_vectors
    config.slot_to_vector, config.dropout = injector.slot_to_vector.tolist(), dropout
    config.head, config.num_labels = head_kind(model), model.config.num_labels
    config.id2label = {str(k): v for k, v in model.config.id2label.items()}
    config.modules_to_save = sorted(set(config.modules_to_save or []) | set(heads))
    config.slot_token_ids = [int(i) for i in config.slot_token_ids]
