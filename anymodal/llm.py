"""The language model: a transformers causal LM + its tokenizer, the special tokens added, LoRA via peft.

The rows of the added tokens in the input embedding (and the output head, when untied) are trainable
state of their own: ``token_rows`` / ``set_token_rows`` read and write exactly those rows, so a bundle
stores them beside a plain peft adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .config import LLMConfig
from .errors import CheckpointError, ConfigError
from .quantize import from_pretrained_options, quantize_loaded, resolve
from .tokens import TokenProtocol

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def load_tokenizer(name_or_path: str, protocol: TokenProtocol):
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the tokenizer from {name_or_path!r}: {e}. Download the model "
                              f"(e.g. `hf download {name_or_path}`) or point llm.tokenizer at a local folder") from None
    protocol.attach(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_llm(config: LLMConfig, name_or_path: str, tokenizer, adapter_dir: Path | None = None) -> PreTrainedModel:
    """Load the base LM, grow its vocabulary to the tokenizer's, then wrap it with LoRA: a fresh adapter
    from ``config.lora``, or the saved one in ``adapter_dir``. Without LoRA the base stays frozen.
    ``config.quantization`` quantizes the base's linear layers while loading (QLoRA: nf4 + a fresh adapter);
    a checkpoint saved quantized (``anymodal quantize``) loads as it was saved."""
    dtype, quantization = torch_dtype(config.dtype), resolve(config.quantization)
    try:
        prequantized = quantization.scheme != "none" and hasattr(AutoConfig.from_pretrained(name_or_path), "quantization_config")
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype,
                                                     **from_pretrained_options(quantization, prequantized, dtype))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the language model from {name_or_path!r}: {e}. Download it "
                              f"(e.g. `hf download {name_or_path}`) or set llm.name_or_path to a local folder") from None
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.requires_grad_(False)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    elif config.lora.enabled:
        lora = PeftLoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                              target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM")
        try:
            model = get_peft_model(model, lora)
        except ValueError as e:
            raise ConfigError(f"llm.lora.target_modules {list(config.lora.target_modules)} do not fit "
                              f"{type(model).__name__}: {e}") from None
    return quantize_loaded(model, quantization)


def token_rows(model: PreTrainedModel, ids: list[int]) -> dict[str, torch.Tensor]:
    """The embedding rows of ``ids``: {"input": [n, D]} plus {"output": [n, D]} when the head is untied."""
    index = torch.tensor(ids, dtype=torch.long)
    inputs, outputs = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    rows = {"input": inputs.detach()[index].clone()}
    if outputs.data_ptr() != inputs.data_ptr():
        rows["output"] = outputs.detach()[index].clone()
    return rows


@torch.no_grad()
def set_token_rows(model: PreTrainedModel, ids: list[int], rows: dict[str, torch.Tensor]) -> None:
    index = torch.tensor(ids, dtype=torch.long)
    inputs, outputs = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    inputs[index] = rows["input"].to(inputs.dtype)
    if "output" in rows and outputs.data_ptr() != inputs.data_ptr():
        outputs[index] = rows["output"].to(outputs.dtype)
