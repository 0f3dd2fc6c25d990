"""``anymodal quantize``: a bundle in, a deployable bundle out whose LLM weights are quantized.

The output is the input bundle with three changes: a ``llm/`` folder (the base LLM with anymodal's token rows,
quantized with the chosen library, or full precision for torch-dynamic, which quantizes at load), the config's
``llm.name_or_path: llm`` and ``llm.quantization`` (scheme, backend, kept layers), and the manifest's
``components.quantization`` record. Projections, new-token rows, tokenizer and encoders / decoders / index
are copied unchanged; LoRA is kept as the adapter folder or merged into the weights before quantizing.
``AnyModalModel.from_pretrained`` loads the result like any bundle.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from pathlib import Path

from peft import PeftModel
from torch import nn

from . import bundle, config as cfg
from .errors import CheckpointError, ConfigError
from .llm import load_llm, torch_dtype
from .quantize import BACKENDS, check_dtype, default_device, resolve, resolve_skip

LLM_DIR = "llm"


def quantize_bundle(source: str | Path, out: str | Path, weights: str, *, backend: str = "auto",
                    skip: list[str] = (), merge_lora: bool = False, device: str | None = None,
                    dtype: str | None = None) -> Path:
    """Write ``out``: the bundle at ``source`` with its LLM quantized to ``weights`` (int8 | int4 | nf4).

    ``backend``: auto (picked per scheme and ``device``) | bitsandbytes | torchao | torch-dynamic.
    ``skip``: linear layers kept in high precision (names, suffixes or prefixes, as ``--report`` prints them).
    ``merge_lora``: merge the adapter into the weights before quantizing (else it stays an adapter, in float).
    ``dtype``: precision of everything not quantized (default: the source bundle's ``llm.dtype``)."""
    from .model import AnyModalModel

    source, out = Path(source).resolve(), Path(out).resolve()
    manifest = bundle.verify(source)
    if out == source:
        raise ConfigError(f"--out must differ from the source bundle {source}: the quantized bundle would replace "
                          f"the full-precision one it is made from")
    config = cfg.build(cfg.ModelConfig, source / "anymodal.yaml")
    done = config.llm.quantization
    if done.scheme != "none":
        raise CheckpointError(f"{source} is already quantized ({done.scheme} via {done.backend}); quantize the "
                              f"full-precision bundle it was made from instead")
    quantization = resolve(cfg.QuantizationConfig(scheme=weights, backend=backend), device)
    config.llm.dtype = dtype or config.llm.dtype
    check_dtype(quantization, torch_dtype(config.llm.dtype))  # before any work
    model = AnyModalModel.from_pretrained(source)
    llm = full_precision_llm(model.llm, merge_lora).to(torch_dtype(config.llm.dtype))
    quantization.skip = resolve_skip(llm, list(skip))
    old_llm = _inside(config.llm.name_or_path, source)
    merged = merge_lora and isinstance(model.llm, PeftModel)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.fp-") as staging:
        if BACKENDS[quantization.backend].serializable:
            llm.save_pretrained(staging)
            llm = quantized_llm(staging, config.llm, quantization, model.tokenizer)  # shape limits checked here

        def fill(tmp: Path) -> dict:
            for name in manifest["files"]:
                if name == "anymodal.yaml" or (merged and name.startswith("adapter/")) or (
                        old_llm and (name == old_llm or name.startswith(old_llm + "/"))):
                    continue
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / name, tmp / name)
            llm.save_pretrained(tmp / LLM_DIR)
            config.llm.name_or_path, config.llm.tokenizer = LLM_DIR, None  # the bundle's tokenizer/ is used
            config.llm.quantization = quantization
            config.llm.lora.enabled = config.llm.lora.enabled and not merged
            cfg.save_yaml(config, tmp / "anymodal.yaml")
            record = quantization_record(quantization, merged, device)
            return {**manifest["components"], "llm": LLM_DIR, "quantization": record,
                    **({"adapter": None} if merged else {})}

        return bundle.write_atomically(out, fill)


def full_precision_llm(llm: nn.Module, merge_lora: bool) -> nn.Module:
    """The bare transformers model (with anymodal's token rows): LoRA merged into it, or just removed (the
    adapter folder on disk still has it)."""
    if isinstance(llm, PeftModel):
        return llm.merge_and_unload() if merge_lora else llm.unload()
    return llm


def quantized_llm(directory: str | Path, llm: cfg.LLMConfig, quantization: cfg.QuantizationConfig, tokenizer) -> nn.Module:
    """The full-precision LLM saved in ``directory``, loaded through ``load_llm`` with ``quantization``:
    exactly what loading the quantized bundle will do (without LoRA)."""
    plain = cfg.LLMConfig(dtype=llm.dtype, lora=cfg.LoraConfig(enabled=False), quantization=quantization)
    return load_llm(plain, str(directory), tokenizer)


def quantization_record(quantization: cfg.QuantizationConfig, merged: bool, device: str | None) -> dict:
    """What the manifest says about how the LLM was quantized."""
    backend = BACKENDS[quantization.backend]
    library = backend.module.split(".")[0]
    return {"scheme": quantization.scheme, "backend": backend.name,
            "library": f"{library} {importlib.metadata.version(library)}",
            "device": device or default_device(),
            "stored": "quantized" if backend.serializable else "full precision, quantized at load",
            "skip": list(quantization.skip), "lora": "merged" if merged else "adapter",
            "double_quant": quantization.double_quant if quantization.scheme != "int8" else None}


def _inside(path: str, directory: Path) -> str | None:
    """``path`` relative to the bundle when the config names a folder inside it."""
    if path and not Path(path).is_absolute() and (directory / path).exists():
        return Path(path).as_posix()
    return None

