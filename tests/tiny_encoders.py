"""Tiny CLIP and HuBERT models, saved in their published transformers layouts, for the encoder tests."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, HubertConfig, HubertModel,
                          Wav2Vec2FeatureExtractor)


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """CLIP's BPE with a toy vocabulary: single letters, end-of-word letters and two merges."""
    letters = list(string.ascii_lowercase)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters] + ["at</w>", "cat</w>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[("a", "t</w>"), ("c", "at</w>")])


def tiny_clip_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32,
                  patch_size=8)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)


def save_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A random tiny CLIPModel folder: config.json + model.safetensors + preprocessor_config.json + tokenizer."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    CLIPModel(tiny_clip_config(tokenizer)).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_hubert_config(**overrides) -> HubertConfig:
    """HuBERT-base's layout (group-norm feature encoder, 320x downsampling, 400-sample window), tiny widths."""
    fields = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                  feat_extract_norm="group", do_stable_layer_norm=False)
    return HubertConfig(**{**fields, **overrides})


def save_tiny_hubert(directory: Path, seed: int = 0, **overrides) -> Path:
    """A random tiny HubertModel folder in the layout of facebook/hubert-base-ls960."""
    torch.manual_seed(seed)
    HubertModel(tiny_hubert_config(**overrides)).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(directory)
    return directory
