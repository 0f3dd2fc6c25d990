"""A training recipe: one YAML file validated against these dataclasses, plus ``a.b=c`` overrides.

Unknown keys and wrong types are ``ConfigError``s naming the key. Relative paths (data files, output dir,
model parts) are relative to the directory ``anymodal train`` runs in. Every knob is explained in
recipes/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..config import EncoderConfig, ModelConfig, build
from ..errors import ConfigError

SAMPLING = ("random", "group_by_length", "batch_rebalance")  # data.sampling


@dataclass
class LossWeights:
    """Weight of each loss term; ``None`` takes the stage's default, 0 turns a term off."""

    lm: Optional[float] = None  # next-token loss on assistant answers
    signal_mse: Optional[float] = None  # output projection(signal hidden) vs decoder.encode_text(caption)
    retrieval: Optional[float] = None  # InfoNCE between [RET] queries and target embeddings


@dataclass
class StageConfig:
    name: str = "encoder_alignment"  # a preset of training/stages.py: encoder_alignment | instruction_tuning | ...
    trains: Optional[list[str]] = None  # what trains; None = the stage's default (see stages.py)
    losses: LossWeights = field(default_factory=LossWeights)
    temperature: float = 0.07  # InfoNCE temperature (its start value when learned)
    learn_temperature: bool = True
    retrieval_encoder: Optional[EncoderConfig] = None  # embeds [RET] targets; default: the model's own encoder


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # JSONL conversation files (.jsonl) or LLaVA JSON (.json)
    eval: list[str] = field(default_factory=list)  # held-out files; empty = split eval_fraction off train
    eval_fraction: float = 0.0
    media_root: Optional[str] = None  # relative media paths start here (default: the data file's folder)
    num_workers: int = 0  # DataLoader workers loading media
    # how batches are drawn (transformers' train_sampling_strategy names): random | group_by_length (batches of
    # like-length conversations, in random order) | batch_rebalance (each optimizer step draws batch_size x
    # grad_accum random conversations and splits them by length into grad_accum micro-batches)
    sampling: str = "random"


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = "cosine"  # any transformers.get_scheduler name: linear | cosine | constant | ...
    warmup_steps: int = 0
    max_grad_norm: float = 1.0  # 0 = no clipping


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 8  # per process, per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate)
    seed: int = 0
    # torch.use_deterministic_algorithms for the whole process: with two CPU threads, two runs of one recipe
    # otherwise drift apart (kernels sum in no fixed order) and unstable stages amplify it
    deterministic: bool = False
    eval_every: int = 0  # steps between evaluations (0 = only at the end, when there is eval data)
    eval_batches: int = 0  # batches per evaluation (0 = the whole eval split)
    checkpoint_every: int = 0  # steps between checkpoints (0 = none)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    log_every: int = 10  # steps between stdout log lines
    tensorboard: bool = False  # also log to <output_dir>/tensorboard (needs `pip install tensorboard`)


@dataclass
class ToyConfig:
    """Tiny parts + synthetic shapes data, built under ``dir`` before training when missing (CPU recipes)."""

    build: bool = False
    dir: str = "toy"
    images: int = 48
    seed: int = 0


@dataclass
class Recipe:
    stage: StageConfig = field(default_factory=StageConfig)
    model: Optional[ModelConfig] = None  # build from pretrained parts ...
    init_from: Optional[str] = None  # ... or start from a bundle (e.g. the previous stage's output)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)
    output_dir: str = "runs/anymodal"


def load_recipe(source: str | Path | dict, overrides: list[str] | None = None) -> Recipe:
    """Read and check a recipe; ``overrides`` are ``a.b=c`` strings (``train.steps=50``)."""
    try:
        recipe = build(Recipe, source, overrides=overrides)
    except ConfigError as e:  # the schema is here, not in anymodal/config.py
        message = str(e).replace("Recipe in anymodal/config.py", "Recipe in anymodal/training/recipe.py")
        raise ConfigError(f"{message} (every knob: recipes/README.md)") from None
    if (recipe.model is None) == (recipe.init_from is None):
        raise ConfigError("a recipe needs exactly one of `model` (build from pretrained parts) or `init_from` "
                          "(a bundle folder to start from)")
    t = recipe.train
    for name, value, low in (("train.steps", t.steps, 1), ("train.batch_size", t.batch_size, 1),
                             ("train.grad_accum", t.grad_accum, 1), ("train.keep_checkpoints", t.keep_checkpoints, 1),
                             ("train.log_every", t.log_every, 1)):
        if value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    if t.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"train.mixed_precision must be no, bf16 or fp16, got {t.mixed_precision!r}")
    if recipe.data.sampling not in SAMPLING:
        raise ConfigError(f"data.sampling must be one of {', '.join(SAMPLING)}, got {recipe.data.sampling!r}")
    if recipe.data.sampling == "batch_rebalance" and t.grad_accum < 2:
        raise ConfigError("data.sampling=batch_rebalance splits each optimizer step into train.grad_accum micro-batches "
                          "by length: set train.grad_accum to 2 or more (and train.batch_size to the step's size / it)")
    if not recipe.data.train:
        raise ConfigError("data.train is empty: list at least one JSONL / LLaVA JSON file")
    if not 0.0 <= recipe.data.eval_fraction < 1.0:
        raise ConfigError(f"data.eval_fraction must be in [0, 1), got {recipe.data.eval_fraction}")
    return recipe
