"""Weight quantization of the LLM's linear layers: which library runs each scheme on each device, and the
two hooks ``load_llm`` calls (options for ``from_pretrained``, then the step after it).

    scheme  the linear weights become                          backends (auto: cpu / cuda)
    int8    8-bit integers, a scale per output row             torch-dynamic / bitsandbytes; or torchao
    int4    4-bit, blocks of 64 (bitsandbytes' FP4 code)       bitsandbytes; torchao Int4WeightOnly needs mslk
    nf4     4-bit NormalFloat, blocks of 64, double quant      bitsandbytes (QLoRA's format)

bitsandbytes and torchao quantize inside ``from_pretrained`` (``BitsAndBytesConfig`` / ``TorchAoConfig``) and
their quantized weights save and reload with transformers. torch.ao's ``quantize_dynamic`` (the fastest int8
on CPU) cannot be saved by transformers: such bundles store full-precision weights and quantize at load.
Embeddings and the output head always keep the LLM's dtype: they hold the rows of anymodal's added tokens.
Everything loads on the CPU, like the rest of the model; ``model.to("cuda")`` moves it.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

import torch
from torch import nn

from .config import QuantizationConfig
from .errors import ConfigError

SCHEMES = ("int8", "int4", "nf4")
BLOCK_SIZE = 64  # bitsandbytes' 4-bit block (absmax scale per 64 weights)
OUTPUT_HEAD = "lm_head"  # transformers' name of the output projection of causal LMs


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # what must import
    requirement: str  # what to pip install
    schemes: tuple[str, ...]
    devices: tuple[str, ...]
    serializable: bool  # False: the bundle stores full-precision weights and quantizes them at load


BACKENDS = {b.name: b for b in (
    Backend("bitsandbytes", "bitsandbytes", "bitsandbytes>=0.50", ("int8", "int4", "nf4"), ("cpu", "cuda"), True),
    Backend("torchao", "torchao", "torchao>=0.18", ("int8", "int4"), ("cpu", "cuda"), True),
    Backend("torch-dynamic", "torch.ao.quantization", "torch", ("int8",), ("cpu",), False),
)}
AUTO = {"cpu": {"int8": "torch-dynamic", "int4": "bitsandbytes", "nf4": "bitsandbytes"},
        "cuda": {"int8": "bitsandbytes", "int4": "bitsandbytes", "nf4": "bitsandbytes"}}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve(config: QuantizationConfig, device: str | None = None) -> QuantizationConfig:
    """``config`` with its backend picked for ``device`` (when ``auto``) and checked: the scheme exists, the
    backend runs it (on ``device``, when one is given) and is installed. Every error names an alternative.
    Loading passes no device: the LLM loads on the CPU wherever it later runs."""
    if config.scheme == "none":
        return config
    check_device, device = device is not None, device or default_device()
    if config.scheme not in SCHEMES:
        raise ConfigError(f"unknown quantization scheme {config.scheme!r}; use one of {', '.join(SCHEMES)} (or none)")
    if device not in AUTO:
        raise ConfigError(f"quantization targets cpu or cuda, not {device!r}")
    name = AUTO[device][config.scheme] if config.backend == "auto" else config.backend
    if name not in BACKENDS:
        raise ConfigError(f"unknown quantization backend {name!r}; use auto or one of {', '.join(BACKENDS)}")
    backend = BACKENDS[name]
    if config.scheme not in backend.schemes or (check_device and device not in backend.devices):
        raise ConfigError(f"the {name} backend does not run {config.scheme} on {device}; "
                          f"{_alternatives(config.scheme, device, name)}")
    try:
        importlib.import_module(backend.module)
    except ImportError as e:
        raise ConfigError(f"the {name} backend is not installed ({e}): `pip install '{backend.requirement}'`, "
                          f"or {_alternatives(config.scheme, device, name)}") from None
    if name == "torchao" and config.scheme == "int4":
        _probe_torchao_int4(device)
    return dataclasses.replace(config, backend=name)


def _alternatives(scheme: str, device: str, but: str) -> str:
    same = [b.name for b in BACKENDS.values() if b.name != but and scheme in b.schemes and device in b.devices]
    if same:
        return f"run {scheme} with backend {' or '.join(same)}"
    other = [f"{s} ({AUTO[device][s]})" for s in SCHEMES if s != scheme]
    return f"use another scheme: {', '.join(other)}"


def _probe_torchao_int4(device: str) -> None:
    """torchao's int4 kernels live in optional packages (mslk, fbgemm-gpu-genai): try one small layer."""
    from torchao.quantization import Int4WeightOnlyConfig, quantize_

    try:
        quantize_(nn.Sequential(nn.Linear(128, 128, dtype=torch.bfloat16, device=device)), Int4WeightOnlyConfig())
    except (ImportError, RuntimeError, NotImplementedError) as e:
        raise ConfigError(f"torchao's int4 kernels do not run here ({e}); {_alternatives('int4', device, 'torchao')}, "
                          f"or use nf4") from None


def check_dtype(config: QuantizationConfig, dtype: torch.dtype) -> None:
    """torch.ao's dynamic int8 kernels take float32 activations only."""
    if config.backend == "torch-dynamic" and dtype != torch.float32:
        raise ConfigError(f"the torch-dynamic int8 backend computes in float32, not {str(dtype).removeprefix('torch.')}; "
                          f"set llm.dtype / --dtype float32, or run int8 with backend torchao or bitsandbytes")


# ------------------------------------------------------------------------------------------- loading
def from_pretrained_options(config: QuantizationConfig, prequantized: bool, dtype: torch.dtype) -> dict:
    """Keyword arguments for ``AutoModelForCausalLM.from_pretrained`` that quantize while loading. A checkpoint
    saved quantized (``prequantized``: its config.json has a quantization_config) brings its own."""
    check_dtype(config, dtype)
    if config.scheme == "none" or config.backend == "torch-dynamic":
        return {}
    if prequantized:
        return {"device_map": "cpu"}
    skip = [*config.skip, OUTPUT_HEAD]
    if config.backend == "bitsandbytes":
        from transformers import BitsAndBytesConfig

        if config.scheme == "int8":
            quantization = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
        else:
            quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4" if config.scheme == "int4" else "nf4",
                                              bnb_4bit_use_double_quant=config.double_quant,
                                              bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=skip)
    else:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        scheme = Int8WeightOnlyConfig() if config.scheme == "int8" else Int4WeightOnlyConfig()
        quantization = TorchAoConfig(scheme, modules_to_not_convert=skip)
    return {"quantization_config": quantization, "device_map": "cpu"}


def quantize_loaded(model: nn.Module, config: QuantizationConfig) -> nn.Module:
    """The step after ``from_pretrained`` (and after LoRA wrapping): torch-dynamic quantizes the base linear
    layers now (LoRA's own layers stay float, so the adapter keeps its precision); then the result is checked
    against the kernels' shape limits."""
    if config.backend == "torch-dynamic":
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        names = {name: qconfig for name in quantizable_layers(model, config.skip)}
        torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
    _check_shapes(model, config)
    return model


def plain_name(name: str) -> str:
    """A layer's name in the bare transformers model (peft adds ``base_model.model.`` and ``.base_layer``)."""
    return name.removeprefix("base_model.model.").replace(".base_layer", "")


def quantizable_layers(model: nn.Module, skip: list[str] = ()) -> list[str]:
    """Names of the linear layers a scheme quantizes: all but the output head, LoRA's layers and ``skip``
    (a layer name, a name suffix such as ``down_proj``, or a prefix such as ``model.layers.0``)."""
    head = model.get_output_embeddings()
    return [name for name, module in model.named_modules()
            if type(module) is nn.Linear and module is not head and ".lora_" not in name
            and not any(_matches(plain_name(name), pattern) for pattern in skip)]


def resolve_skip(model: nn.Module, patterns: list[str]) -> list[str]:
    """The exact layer names ``patterns`` keep in high precision; a pattern that names no linear layer is an
    error listing some that exist."""
    linears = [plain_name(n) for n in quantizable_layers(model)]
    unknown = [p for p in patterns if not any(_matches(n, p) for n in linears)]
    if unknown:
        raise ConfigError(f"--skip {','.join(unknown)} names no linear layer of this LLM; layers look like "
                          f"{', '.join(linears[:3])} (suffixes such as {linears[0].rsplit('.', 1)[-1]} work too)")
    return [n for n in linears if any(_matches(n, p) for p in patterns)]


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern) or name.startswith(pattern + ".")


def _check_shapes(model: nn.Module, config: QuantizationConfig) -> None:
    """bitsandbytes' CPU 4-bit kernel packs rows in blocks of 64 weights: on other input widths it returns
    wrong numbers (measured: 4x the quantization error), so refuse them."""
    if config.backend != "bitsandbytes" or config.scheme == "int8":
        return
    import bitsandbytes as bnb

    bad = [plain_name(n) for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)
           and m.weight.device.type == "cpu" and m.in_features % BLOCK_SIZE]
    if bad:
        suffixes = ",".join(sorted({n.rsplit(".", 1)[-1] for n in bad}))
        raise ConfigError(f"bitsandbytes' CPU {config.scheme} kernel needs input widths that are multiples of "
                          f"{BLOCK_SIZE}; {len(bad)} layer(s) are not: {', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}. "
                          f"Keep them in high precision (--skip {suffixes} / llm.quantization.skip), load on a GPU, "
                          f"or use int8")


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every weight and buffer as stored in memory, quantized formats included (packed 4-bit data,
    scales, torchao tensor subclasses, torch.ao packed params). Tied tensors count once."""
    seen: set[int] = set()

    def size(value) -> int:
        if isinstance(value, (tuple, list)):
            return sum(size(v) for v in value)
        if not isinstance(value, torch.Tensor):
            return 0
        if hasattr(value, "__tensor_flatten__") and type(value) not in (torch.Tensor, nn.Parameter):
            names, _ = value.__tensor_flatten__()
            return sum(size(getattr(value, n)) for n in names)
        if value.is_quantized:
            scales = value.q_per_channel_scales().numel() * 12 if value.qscheme() in (
                torch.per_channel_affine, torch.per_channel_symmetric) else 12  # fp32 scale + int64 zero point
            return value.numel() * value.element_size() + scales
        key = value.untyped_storage().data_ptr()
        if key in seen:
            return 0
        seen.add(key)
        return value.numel() * value.element_size()

    return sum(size(v) for v in model.state_dict().values())
