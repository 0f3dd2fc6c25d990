"""Configs as plain dataclasses: defaults <- YAML file <- ``a.b=c`` overrides, checked by OmegaConf.

Unknown keys and wrong types are ``ConfigError``s that name the key. The bundle stores the same schema.
Free-form ``options`` dicts are passed to a plugin as keyword arguments; the plugin validates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class QuantizationConfig:
    """Weight quantization of the LLM's linear layers, applied when it is loaded (anymodal/quantize.py).
    A quantized bundle records it; a QLoRA recipe sets ``scheme: nf4`` to train LoRA on a 4-bit base."""

    scheme: str = "none"  # none | int8 | int4 | nf4
    backend: str = "auto"  # auto | bitsandbytes | torchao | torch-dynamic
    skip: list[str] = field(default_factory=list)  # linear layers kept in high precision: names or name suffixes
    double_quant: bool = True  # 4-bit: quantize the per-block scales too (QLoRA's double quantization)


@dataclass
class LLMConfig:
    name_or_path: str = "lmsys/vicuna-7b-v1.5"  # hub id, local dir, or a dir inside the bundle
    tokenizer: Optional[str] = None  # defaults to name_or_path
    dtype: str = "float32"  # float32 | bfloat16 | float16
    lora: LoraConfig = field(default_factory=LoraConfig)
    signal_hidden_layer: int = -1  # which hidden layer feeds the output / retrieval projections
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)


@dataclass
class InputProjectionConfig:
    kind: str = "mlp"  # linear | mlp (LLaVA-1.5's 2-layer GELU MLP)
    tokens: int = 1  # LLM tokens per encoder token: > 1 spreads one pooled embedding over a prefix (ClipCap)


@dataclass
class OutputProjectionConfig:
    kind: str = "transformer"  # transformer (NExT-GPT) | linear
    width: int = 512
    layers: int = 2
    heads: int = 4


@dataclass
class EncoderConfig:
    name: str = "clip"  # registry name (`anymodal list encoders`) or "package.module:Class"
    name_or_path: str = "openai/clip-vit-large-patch14"
    options: dict[str, Any] = field(default_factory=dict)
    projection: InputProjectionConfig = field(default_factory=InputProjectionConfig)
    # another modality whose input projection reads each item's tokens after its first: video frames embedded as
    # images (ImageBind frame_tokens) through the image projection, which image captions teach the LLM to read
    frames_through: Optional[str] = None


@dataclass
class DecoderConfig:
    name: str = "stable-diffusion"  # registry name (`anymodal list decoders`) or "package.module:Class"
    name_or_path: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    num_tokens: int = 4  # k signal tokens [IMG0]..[IMG{k-1}]
    condition_shape: list[int] = field(default_factory=list)  # filled from the decoder when first built
    load_options: dict[str, Any] = field(default_factory=dict)  # e.g. {torch_dtype: float16}
    decode_options: dict[str, Any] = field(default_factory=dict)  # defaults for decode(): steps, guidance, ...
    projection: OutputProjectionConfig = field(default_factory=OutputProjectionConfig)


@dataclass
class RetrievalConfig:
    enabled: bool = False
    name: str = "faiss"  # registry name of the retriever
    name_or_path: Optional[str] = None  # index folder (`anymodal index build`)
    dim: int = 0  # query width; filled from the index when first built
    projection: OutputProjectionConfig = field(default_factory=lambda: OutputProjectionConfig(kind="linear"))


@dataclass
class PromptConfig:
    """How turns become one string (Vicuna v1.1 style by default, as NExT-GPT)."""

    system: str = ""
    user: str = "USER: "
    assistant: str = "ASSISTANT: "
    separator: str = "\n"


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    max_media_per_answer: int = 4  # signal blocks + [RET] in one answer
    retrieval_k: int = 1


@dataclass
class SpeechConfig:
    """Speech in / out around the unit tokens (SpeechGPT, anymodal/speech.py). Paths may lie inside the bundle."""

    unitizer: Optional[str] = None  # speech -> units folder (LogMelUnitizer / HubertUnitizer .save)
    vocoder: Optional[str] = None  # units -> waveform: a vocoder folder or hub id
    vocoder_name: str = "unit-hifigan"  # registry name (unit-hifigan | griffin-lim) or "package.module:Class"
    max_seconds: float = 30.0  # longer input speech is refused


@dataclass
class ModelConfig:
    llm: LLMConfig = field(default_factory=LLMConfig)
    encoders: dict[str, EncoderConfig] = field(default_factory=dict)  # keyed by modality: image, audio, ...
    decoders: dict[str, DecoderConfig] = field(default_factory=dict)  # keyed by modality: image, audio, video
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    speech_units: int = 0  # K speech unit tokens <u0>..<u{K-1}>; 0 = no speech
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


T = TypeVar("T")


def build(schema: type[T], *sources: Any, overrides: list[str] | None = None) -> T:
    """Merge ``sources`` (dicts, dataclasses, YAML paths) and ``a.b=c`` overrides over ``schema``'s
    defaults. Unknown keys and wrong types raise ``ConfigError`` naming the key."""
    try:
        merged = OmegaConf.structured(schema)
        for source in sources:
            if isinstance(source, (str, Path)):
                source = _read_yaml(Path(source))
            merged = OmegaConf.merge(merged, source)
        for override in overrides or ():
            key, sep, value = override.partition("=")
            if not sep or not key:
                raise ConfigError(f"an override must be key=value (e.g. train.steps=50), got {override!r}")
            try:
                parsed = OmegaConf.from_dotlist([f"v={value}"])["v"]
            except yaml.YAMLError as e:
                raise ConfigError(f"override {override!r}: the value is not valid YAML ({_first_line(e)})") from None
            # update, not merge: list items by index ("stages.0.steps=7") stay list items
            OmegaConf.update(merged, key, parsed, merge=True)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"bad config key {key!r}: {_first_line(e)}. Check its spelling and type against "
                          f"{schema.__name__} in anymodal/config.py") from None


def select(config: Any, key: str) -> Any:
    """The value at a dotted ``key`` such as ``"speech.vocoder"``; ConfigError naming the key if there is none."""
    value = OmegaConf.select(OmegaConf.structured(config), key, default=_NO_VALUE)
    if value is _NO_VALUE:
        raise ConfigError(f"no config key {key!r} in {type(config).__name__}; see anymodal/config.py")
    return value


def replace(config: T, key: str, value: Any) -> T:
    """A copy of ``config`` with the dotted ``key`` set to ``value`` (type-checked)."""
    node = OmegaConf.structured(config)
    select(config, key)
    try:
        OmegaConf.update(node, key, value, merge=False)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot set {key!r} to {value!r}: {_first_line(e)}") from None
    return OmegaConf.to_object(node)


_NO_VALUE = object()


def to_dict(config: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def save_yaml(config: Any, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(f"config file {path} is not valid YAML: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
