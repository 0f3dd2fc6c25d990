"""What every diffusion decoder shares: loading a stock diffusers pipeline, checking the conditioning,
the cached negative embedding, and one guided pipeline call for a whole batch of signals.

The conditioning goes straight in as ``prompt_embeds`` (NExT-GPT: the output projection of the LLM's
signal-token hidden states); no text round-trip and no forked pipeline. Subclasses say which pipeline,
which conditioning shape, how to build a tiny one, and how to turn the output into media.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import DiffusionPipeline

from anymodal.errors import AnyModalError, CheckpointError, ConfigError, MediaError
from anymodal.media import Modality

from ..options import parse_dtype

DEFAULT_NUM_TOKENS = 77  # CLIP's context length: what every Stable Diffusion family UNet was trained with


class DiffusionDecoder:
    """A stock diffusers pipeline conditioned by ``prompt_embeds``. Use a subclass."""

    modality: ClassVar[Modality]
    pipeline_class: ClassVar[type[DiffusionPipeline]]
    default_checkpoint: ClassVar[str]  # the hub id named in "download this" messages
    # components a saved pipeline may leave out (model_index.json holds [null, null] for them)
    optional_components: ClassVar[tuple[str, ...]] = ("tokenizer", "text_encoder")
    load_defaults: ClassVar[dict[str, Any]] = {}
    default_steps: ClassVar[int]
    default_guidance_scale: ClassVar[float]

    def __init__(self, pipeline: DiffusionPipeline, num_tokens: int | None = None, progress: bool = True):
        self.pipeline = pipeline
        pipeline.set_progress_bar_config(disable=not progress)
        self.condition_shape: tuple[int, ...] = self._condition_shape(num_tokens)
        self._negative: torch.Tensor | None = None  # [1, *condition_shape], computed on first guided call

    # ---- what subclasses provide -------------------------------------------------------------------

    def _condition_shape(self, num_tokens: int | None) -> tuple[int, ...]:
        """Stable Diffusion family: (tokens, UNet cross-attention width). Tokens come from the tokenizer
        when the pipeline has one; a pipeline saved without one uses ``num_tokens`` (default 77)."""
        width = self.pipeline.unet.config.cross_attention_dim
        tokenizer = self.pipeline.tokenizer
        if tokenizer is None:
            return (num_tokens or DEFAULT_NUM_TOKENS, width)
        if num_tokens is not None and num_tokens != tokenizer.model_max_length:
            raise ConfigError(f"num_tokens={num_tokens} disagrees with this pipeline's tokenizer, which pads to "
                              f"{tokenizer.model_max_length} tokens; leave num_tokens unset")
        return (tokenizer.model_max_length, width)

    def _embed_text(self, texts: list[str]) -> torch.Tensor:
        """The pipeline's own prompt encoding (Stable Diffusion family: CLIP last hidden state)."""
        prompt_embeds, _ = self.pipeline.encode_prompt(texts, self.device, 1, False)
        return prompt_embeds  # [B, tokens, width]

    # ---- loading and saving --------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, num_tokens: int | None = None,
                        progress: bool = True, cpu_offload: bool = False, **load_options: Any) -> "DiffusionDecoder":
        """A hub id (e.g. ``stable-diffusion-v1-5/stable-diffusion-v1-5``) or a local folder in the diffusers
        layout (``model_index.json`` + one folder per component). The safety checker is never loaded;
        tokenizer and text encoder may be absent (then ``encode_text`` is unavailable and the negative
        conditioning is zeros). ``load_options`` go to diffusers' ``from_pretrained`` (``variant``,
        ``revision``, ``local_files_only``, ...). ``torch_dtype`` may be a name (``"float16"``) as YAML gives it."""
        torch_dtype = parse_dtype(torch_dtype)
        index = cls._read_model_index(str(name_or_path), load_options)
        found = index.get("_class_name")
        if found != cls.pipeline_class.__name__:
            raise CheckpointError(f"{str(name_or_path)!r} holds a {found}, but {cls.__name__} runs a "
                                  f"{cls.pipeline_class.__name__}; pick the decoder plugin made for that pipeline")
        absent = {name: None for name in cls.optional_components if index.get(name, [None, None])[0] is None}
        try:
            pipeline = cls.pipeline_class.from_pretrained(
                str(name_or_path), torch_dtype=torch_dtype, **{**cls.load_defaults, **absent, **load_options})
        except AnyModalError:
            raise
        except Exception as e:  # diffusers / hub raise many types for a missing or broken component
            raise CheckpointError(f"cannot load the {cls.pipeline_class.__name__} at {str(name_or_path)!r}: {e}. "
                                  f"{cls._download_hint()}") from None
        if device is not None:
            pipeline.to(device)
        if cpu_offload:  # components wait on the CPU; each moves to the GPU while it runs (LLM + SD on one card)
            if not torch.cuda.is_available():
                raise ConfigError("cpu_offload needs a CUDA GPU (diffusers' enable_model_cpu_offload moves each component "
                                  "to it while it runs); on a CPU-only machine leave cpu_offload out")
            pipeline.enable_model_cpu_offload()
        return cls(pipeline, num_tokens=num_tokens, progress=progress)

    @classmethod
    def _read_model_index(cls, name_or_path: str, load_options: dict[str, Any]) -> dict[str, Any]:
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            index_file = path / "model_index.json"
            if not index_file.is_file():
                raise CheckpointError(f"{path} is not a diffusers pipeline folder (no model_index.json). "
                                      f"{cls._download_hint()}")
            try:
                return json.loads(index_file.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{index_file} is not valid JSON ({e}); re-download the pipeline") from None
        if path.exists() or name_or_path.count("/") != 1 or name_or_path.startswith((".", "/", "~")):
            raise CheckpointError(f"no pipeline folder at {name_or_path!r}. {cls._download_hint()}")
        hub_options = {k: load_options[k] for k in ("cache_dir", "revision", "token", "local_files_only")
                       if k in load_options}
        try:
            return cls.pipeline_class.load_config(name_or_path, **hub_options)
        except Exception as e:
            raise CheckpointError(f"cannot fetch {name_or_path!r} from the hub or the local cache: {e}. "
                                  f"{cls._download_hint()}") from None

    @classmethod
    def _download_hint(cls) -> str:
        return (f"Download the weights where you have network (e.g. `hf download {cls.default_checkpoint} "
                f"--local-dir DIR`) and pass DIR, or put them in the Hugging Face cache ($HF_HOME).")

    def save_pretrained(self, directory: str | Path) -> None:
        """Writes the diffusers folder layout that ``from_pretrained`` (and diffusers itself) loads."""
        self.pipeline.save_pretrained(str(directory))

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "DiffusionDecoder":
        self.pipeline.to(device=device, dtype=dtype)
        self._negative = None
        return self

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.unet.dtype

    # ---- conditioning ---------------------------------------------------------------------------------

    @property
    def has_text_encoder(self) -> bool:
        return self.pipeline.text_encoder is not None and self.pipeline.tokenizer is not None

    @torch.no_grad()  # not inference_mode: the result is a training target that autograd may save
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """The decoder's own text embedding of captions, ``[B, *condition_shape]``: NExT-GPT's decoder-side
        alignment target (MSE against the output projection)."""
        if not self.has_text_encoder:
            raise CheckpointError(f"this {self.pipeline_class.__name__} was loaded without a tokenizer and text "
                                  f"encoder, so it cannot embed captions; load a pipeline folder that has "
                                  f"tokenizer/ and text_encoder/ (e.g. {self.default_checkpoint})")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ConfigError("encode_text takes a list of strings")
        return self._embed_text(list(texts)).float()

    def negative_condition(self) -> torch.Tensor:
        """``[1, *condition_shape]``: the embedding of "" when the pipeline has a text encoder, else zeros.
        Computed once and cached (moving the decoder clears it)."""
        if self._negative is None:
            self._negative = (self.encode_text([""]) if self.has_text_encoder
                              else torch.zeros(1, *self.condition_shape))
        return self._negative

    def _check_condition(self, condition: torch.Tensor, name: str = "condition") -> torch.Tensor:
        expected = f"[B, {', '.join(map(str, self.condition_shape))}]"
        if not isinstance(condition, torch.Tensor):
            raise MediaError(f"{name} must be a tensor of shape {expected}, got {type(condition).__name__}")
        if tuple(condition.shape[1:]) != self.condition_shape or condition.shape[0] == 0:
            raise MediaError(f"{name} must have shape {expected} for this {self.pipeline_class.__name__}, got "
                             f"{tuple(condition.shape)}; build the output projection to produce {self.condition_shape}")
        bad = (~torch.isfinite(condition)).flatten(1).any(1).nonzero().flatten().tolist()
        if bad:
            raise MediaError(f"{name} has NaN or inf values in batch item(s) {bad}: the output projection diverged "
                             f"or got bad hidden states. Refusing to decode (it would give a black/silent result)")
        return condition.to(self.device, self.dtype)

    # ---- one pipeline call for the whole batch -------------------------------------------------------

    def _generate(self, condition: torch.Tensor, negative_condition: torch.Tensor | None, steps: int | None,
                  guidance_scale: float | None, seed: int | None, generator: torch.Generator | None,
                  **pipeline_options: Any) -> Any:
        """Checks everything, then calls the stock pipeline once with ``prompt_embeds`` ``[B, ...]`` and,
        when guided, ``negative_prompt_embeds`` ``[B, ...]``. Returns the pipeline's output (as torch)."""
        steps = self.default_steps if steps is None else steps
        guidance_scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}")
        if not isinstance(guidance_scale, (int, float)) or guidance_scale < 0:
            raise ConfigError(f"guidance_scale must be a number >= 0 (1 or less turns guidance off), got {guidance_scale!r}")
        prompt_embeds = self._check_condition(condition)  # [B, *condition_shape]
        batch = prompt_embeds.shape[0]
        negative_prompt_embeds = None
        if guidance_scale > 1:  # classifier-free guidance: the pipeline runs the UNet on [negative, condition]
            negative = self.negative_condition() if negative_condition is None else negative_condition
            if not isinstance(negative, torch.Tensor):
                raise MediaError(f"negative_condition must be a tensor, got {type(negative).__name__}")
            if negative.ndim == len(self.condition_shape):
                negative = negative[None]
            if negative.shape[0] == 1:
                negative = negative.expand(batch, *self.condition_shape)
            negative_prompt_embeds = self._check_condition(negative, "negative_condition")
            if negative_prompt_embeds.shape[0] != batch:
                raise MediaError(f"negative_condition has {negative_prompt_embeds.shape[0]} items for {batch} conditions; "
                                 f"give one, or one per condition")
        if generator is None and seed is not None:
            # a CPU generator gives the same noise on every device (diffusers moves the noise)
            generator = torch.Generator("cpu").manual_seed(seed)
        output = self.pipeline(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                               num_inference_steps=steps, guidance_scale=float(guidance_scale), generator=generator,
                               output_type="pt", **pipeline_options)
        return output

    @staticmethod
    def _check_size(height: int | None, width: int | None) -> None:
        for name, value in (("height", height), ("width", width)):
            if value is not None and (not isinstance(value, int) or value <= 0 or value % 8):
                raise ConfigError(f"{name} must be a positive multiple of 8 pixels (the VAE and UNet downsample), "
                                  f"got {value!r}")

    @staticmethod
    def _check_finite(tensor: torch.Tensor, what: str) -> torch.Tensor:
        if not torch.isfinite(tensor).all():
            raise MediaError(f"the pipeline produced NaN/inf {what} (often float16 overflow in the VAE); "
                             f"decode in float32 or bfloat16")
        return tensor.float().cpu()
