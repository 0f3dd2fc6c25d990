"""Tiny random pipeline parts for tests and the toy world, built offline the way diffusers' own fast tests do.

diffusers' tests download ``hf-internal-testing`` tokenizers; we cannot, so the tokenizers here are built
from a byte-level vocabulary with no merges (one token per byte): real tokenizer classes, saved and
reloaded in their published layout, just with a tiny vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet3DConditionModel
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, RobertaTokenizer

# Stable Diffusion's own scheduler settings (scaled-linear betas), as in the published scheduler_config.json
SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                    set_alpha_to_one=False, steps_offset=1)


def tiny_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SD_SCHEDULER)


def tiny_clip_tokenizer(max_length: int = 77, words: Sequence[str] = ()) -> CLIPTokenizer:
    """CLIP BPE tokenizer over single bytes; ids 0/1 are <|startoftext|>/<|endoftext|> (also the pad).

    Each of ``words`` (lower-case letters) also gets merges that build it back into one token, so that a
    small closed vocabulary (the toy world's) is one token per word while any other text still tokenizes,
    byte by byte."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)  # CLIP marks the last piece of each word
    ranks: dict[tuple[str, str], int] = {}  # merge -> its priority (BPE applies the lowest first)
    for word in words:
        # merges are added where BPE, with the merges so far, stops short of the whole word: a fixed left-to-right
        # chain is not enough, as an earlier word's merge can win ("r e" of "red" split "green" into g re e n)
        pieces = _bpe([*word[:-1], word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            left, right = pieces[0], pieces[1]
            ranks[(left, right)] = len(ranks)
            vocab.setdefault(left + right, len(vocab))
            pieces = _bpe(pieces, ranks)
    return CLIPTokenizer(vocab=vocab, merges=list(ranks), model_max_length=max_length)  # ranks: insertion order


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """``pieces`` merged as a BPE tokenizer with merge priorities ``ranks`` merges them."""
    while len(pieces) > 1:
        rank, i = min((ranks.get(pair, math.inf), i) for i, pair in enumerate(zip(pieces, pieces[1:])))
        if rank == math.inf:  # no merge applies
            return pieces
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2:]]
    return pieces


def tiny_roberta_tokenizer(max_length: int = 77) -> RobertaTokenizer:
    """RoBERTa byte-level tokenizer (the one CLAP uses) over single bytes; ids 0/1/2 are <s>/<pad>/</s>."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_unet_layout(channels: list[int], layers_per_block: int, pixels: int, dims: str = "2D") -> dict:
    """UNet keyword arguments the tiny pipelines share: one level per entry of ``channels``, the latent size
    of a ``pixels`` input after ``tiny_vae(channels)``, and cross-attention only at the lowest resolution
    (attention at 8x8 or below keeps CPU steps fast). ``dims``: "2D" (UNet2DConditionModel) or "3D"."""
    return dict(
        sample_size=pixels // 2 ** (len(channels) - 1), in_channels=4, out_channels=4,
        block_out_channels=list(channels), layers_per_block=layers_per_block,
        norm_num_groups=min(channels[0], 32), attention_head_dim=8,
        down_block_types=[f"DownBlock{dims}"] * (len(channels) - 1) + [f"CrossAttnDownBlock{dims}"],
        up_block_types=[f"CrossAttnUpBlock{dims}"] + [f"UpBlock{dims}"] * (len(channels) - 1))


def tiny_vae(channels: list[int], sample_size: int, in_channels: int = 3) -> AutoencoderKL:
    """A KL autoencoder with 4 latent channels that downsamples by ``2 ** (len(channels) - 1)``."""
    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=4, block_out_channels=channels,
        down_block_types=["DownEncoderBlock2D"] * len(channels), up_block_types=["UpDecoderBlock2D"] * len(channels),
        norm_num_groups=min(channels[0], 32), sample_size=sample_size)


def tiny_clip_text(width: int, num_tokens: int, words: Sequence[str] = ()) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """The Stable Diffusion family's text side: CLIP tokenizer (``words`` as single tokens) + a 2-layer CLIP
    text model of ``width``."""
    tokenizer = tiny_clip_tokenizer(num_tokens, words)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=num_tokens, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    return tokenizer, text_encoder


def tiny_latent_parts(spec: dict, dims: str = "2D") -> dict:
    """Seeded UNet (2D or 3D) + VAE + CLIP text side of a latent Stable Diffusion family pipeline, from a tiny
    spec (``block_out_channels``, ``layers_per_block``, ``sample_size``, ``cross_attention_dim``, ``num_tokens``,
    ``text_encoder``: False leaves tokenizer and text encoder out, ``seed``); pipeline keyword arguments."""
    channels = spec["block_out_channels"]
    torch.manual_seed(spec["seed"])
    unet_class = UNet2DConditionModel if dims == "2D" else UNet3DConditionModel
    unet = unet_class(**tiny_unet_layout(channels, spec["layers_per_block"], spec["sample_size"], dims),
                      cross_attention_dim=spec["cross_attention_dim"])
    vae = tiny_vae(channels, spec["sample_size"])
    tokenizer, text_encoder = (tiny_clip_text(spec["cross_attention_dim"], spec["num_tokens"])
                               if spec["text_encoder"] else (None, None))
    return {"unet": unet, "vae": vae, "tokenizer": tokenizer, "text_encoder": text_encoder}
