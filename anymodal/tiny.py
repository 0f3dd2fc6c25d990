"""Tiny random components saved in their published layouts, so that every real loader runs offline.

Tests, ``anymodal demo`` (before a trained bundle exists) and the benchmarks build these; nothing here
fakes a load: each part is saved the way the real checkpoint is published and read back by the public
loader. Sizes are chosen for a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import registry
from .config import (DecoderConfig, EncoderConfig, LLMConfig, LoraConfig, ModelConfig, OutputProjectionConfig,
                     RetrievalConfig)
from .media import Image

CORPUS = [
    "USER: describe the picture ASSISTANT: a red circle on a blue background",
    "a green square and a yellow triangle next to a small cross",
    "show me an image of a dog. here it is. the sound of rain, a video of waves",
    "what is in this image? how many shapes are there? one, two, three, four",
]


def tiny_tokenizer(directory: str | Path, vocab_size: int = 300):
    """A byte-level BPE trained on a few sentences, saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(directory)
    return tokenizer


def save_tiny_llm(directory: str | Path, hidden_size: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A Llama-architecture causal LM + tokenizer in the transformers layout (what `hf download` gives)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(directory)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    return Path(directory)


def save_tiny_clip(directory: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """A full CLIPModel folder (both towers + image processor), the layout `openai/clip-vit-*` ships in."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(text_config=dict(vocab_size=99, bos_token_id=0, eos_token_id=1, pad_token_id=1, **tower),
                        vision_config=dict(image_size=image_size, patch_size=8, **tower), projection_dim=32)
    CLIPModel(config).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return Path(directory)


def save_tiny_stable_diffusion(directory: str | Path, seed: int = 0) -> Path:
    """A tiny Stable Diffusion pipeline in the diffusers layout, through the registered decoder plugin."""
    decoder_cls = registry.resolve("decoders", "stable-diffusion")
    torch.manual_seed(seed)
    decoder_cls.from_config({}).save_pretrained(directory)
    return Path(directory)


def save_tiny_index(directory: str | Path, clip_dir: str | Path, count: int = 8, seed: int = 0) -> Path:
    """A flat FAISS index over ``count`` random images embedded by the tiny CLIP (pooled)."""
    from .index import VectorIndex

    generator = torch.Generator().manual_seed(seed)
    encoder = registry.resolve("encoders", "clip").from_pretrained(str(clip_dir))
    images = [Image(torch.rand(3, 32, 32, generator=generator), source=f"toy://image/{i}") for i in range(count)]
    vectors = encoder.encode(encoder.preprocess(images))[:, 0]  # [N, D]
    index = VectorIndex.create(vectors.shape[1], kind="flat", encoder="clip")
    index.add(vectors, [{"uri": im.source, "metadata": {"id": i}} for i, im in enumerate(images)])
    index.save(directory)
    return Path(directory)


def tiny_config(root: str | Path, decoders: bool = True, retrieval: bool = True) -> ModelConfig:
    """A ModelConfig over the tiny parts saved under ``root`` by ``save_tiny_parts``."""
    root = Path(root)
    config = ModelConfig(
        llm=LLMConfig(name_or_path=str(root / "llm"), lora=LoraConfig(r=4, alpha=8, dropout=0.0)),
        encoders={"image": EncoderConfig(name="clip", name_or_path=str(root / "clip"))},
    )
    config.generation.max_new_tokens = 16
    if decoders:
        config.decoders["image"] = DecoderConfig(
            name="stable-diffusion", name_or_path=str(root / "sd"), num_tokens=4,
            decode_options={"steps": 2, "guidance_scale": 2.0, "seed": 0},
            projection=OutputProjectionConfig(width=32, layers=1, heads=2))
    if retrieval:
        config.retrieval = RetrievalConfig(enabled=True, name="faiss", name_or_path=str(root / "index"))
    return config


def save_tiny_parts(root: str | Path, decoders: bool = True, retrieval: bool = True, hidden_size: int = 64,
                    layers: int = 2) -> Path:
    root = Path(root)
    save_tiny_llm(root / "llm", hidden_size=hidden_size, layers=layers)
    save_tiny_clip(root / "clip")
    if decoders:
        save_tiny_stable_diffusion(root / "sd")
    if retrieval:
        save_tiny_index(root / "index", root / "clip")
    return root


def build_tiny_model(root: str | Path, decoders: bool = True, retrieval: bool = True, seed: int = 0,
                     hidden_size: int = 64, layers: int = 2):
    """Save the tiny parts under ``root`` and build an AnyModalModel over them (random projections);
    ``hidden_size`` / ``layers`` size the LLM (benchmarks use a bigger one)."""
    from .model import AnyModalModel

    save_tiny_parts(root, decoders, retrieval, hidden_size, layers)
    torch.manual_seed(seed)
    return AnyModalModel.from_config(tiny_config(root, decoders, retrieval)).eval()
