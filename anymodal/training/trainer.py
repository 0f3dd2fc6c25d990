"""The training loop on accelerate: any ``Stage`` over an AnyModalModel, from a recipe to a bundle.

accelerate does devices, DDP / FSDP / DeepSpeed (`accelerate launch`), mixed precision, gradient
accumulation and save_state / load_state. This file adds what a recipe promises on top:

- everything is checked before step 1 (recipe keys, data files, media paths, modalities);
- checkpoints hold only what trains (+ optimizer, scheduler, RNG, data position), written atomically
  every ``train.checkpoint_every`` steps; ``fit(resume=True)`` continues from the newest one exactly;
- a tqdm bar with loss, lr and tokens/s, stdout log lines, optional tensorboard, periodic eval;
- the end result is a bundle (``<output_dir>/bundle``) that AnyModalModel.from_pretrained loads.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, gather_object, set_seed
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler
from transformers.trainer_pt_utils import BatchRebalanceSampler

from .. import bundle, config as cfg
from ..errors import CheckpointError, ConfigError
from ..media import Modality
from ..model import AnyModalModel
from ..tokens import TokenProtocol
from .data import (Collator, LengthGroupedBatches, Sample, TrainBatch, check_samples, length_hint, read_data,
                   split_eval)
from .recipe import Recipe
from .stages import ModelStage, Stage
from .toydata import build_toy

CHECKPOINTS = "checkpoints"
BUNDLE = "bundle"


class StageModule(nn.Module):
    """The model and the stage as one module, so accelerate wraps (DDP) and checkpoints both together."""

    def __init__(self, model: AnyModalModel, stage: Stage):
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.stage(self.model, batch)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}


@dataclass
class Progress:
    """Where the run is; checkpointed with accelerate's state so a resume picks up the same batch."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of this epoch already consumed
    samples: int = 0
    tokens: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


# ------------------------------------------------------------------------------------- building
def model_config(recipe: Recipe) -> cfg.ModelConfig:
    """The recipe's ModelConfig, or the one stored in its ``init_from`` bundle (verified)."""
    if recipe.init_from is None:
        return recipe.model
    bundle.verify(recipe.init_from)
    return cfg.build(cfg.ModelConfig, Path(recipe.init_from) / "anymodal.yaml")


def load_samples(recipe: Recipe, config: cfg.ModelConfig) -> tuple[list[Sample], list[Sample]]:
    """Read and check every data file: (train, eval) samples. Fails before any model is loaded."""
    protocol = TokenProtocol({Modality(m): d.num_tokens for m, d in config.decoders.items()},
                             retrieval=config.retrieval.enabled, num_units=config.speech_units)
    train = read_data(recipe.data.train, recipe.data.media_root)
    check_samples(train, config, protocol.token_strings())
    if recipe.data.eval:
        held = read_data(recipe.data.eval, recipe.data.media_root)
        check_samples(held, config, protocol.token_strings())
        return train, held
    return split_eval(train, recipe.data.eval_fraction, recipe.train.seed)


def build_model(recipe: Recipe) -> AnyModalModel:
    # fresh projections and LoRA start the same on every rank and every resume
    set_seed(recipe.train.seed)
    # process-wide, and set either way: accelerate's set_seed only ever turns it on, so a recipe without it would
    # otherwise run with the slow deterministic kernels of any deterministic recipe before it in the process
    torch.use_deterministic_algorithms(recipe.train.deterministic)
    if recipe.init_from is not None:
        return AnyModalModel.from_pretrained(recipe.init_from)
    return AnyModalModel.from_config(recipe.model)


def train_data_loader(samples: list[Sample], recipe: Recipe, collate: Collator) -> DataLoader:
    """The train batches ``data.sampling`` asks for, seeded by ``train.seed`` (and the epoch): random batches of
    ``train.batch_size``; ``group_by_length``: batches of like-length conversations (``LengthGroupedBatches``)
    in random order; ``batch_rebalance``: each optimizer step's ``batch_size x grad_accum`` random conversations
    sorted by length into ``grad_accum`` micro-batches of about equal cost (transformers'
    ``BatchRebalanceSampler``: a long conversation shares its micro-batch with few others)."""
    t, data = recipe.train, recipe.data
    if data.sampling == "random":
        return DataLoader(samples, batch_size=t.batch_size, shuffle=True, collate_fn=collate,
                          num_workers=data.num_workers, generator=torch.Generator().manual_seed(t.seed))
    lengths = [length_hint(s) for s in samples]
    if data.sampling == "group_by_length":
        batches = LengthGroupedBatches(lengths, t.batch_size, t.seed)
    else:
        if len(samples) < t.batch_size * t.grad_accum:
            raise ConfigError(f"data.sampling=batch_rebalance draws {t.batch_size} x {t.grad_accum} conversations a "
                              f"step; data.train holds {len(samples)}: lower train.batch_size or train.grad_accum")
        batches = BatchRebalanceSampler(lengths, t.batch_size * t.grad_accum, dp_size=1, grad_accum=t.grad_accum,
                                        seed=t.seed)
    return DataLoader(samples, batch_sampler=batches, collate_fn=collate, num_workers=data.num_workers)


def micro_batch_weight(batch: TrainBatch, recipe: Recipe) -> float:
    """What a micro-batch's loss counts for in its step, relative to a full ``train.batch_size`` one. 1 but under
    ``batch_rebalance``, whose micro-batches differ in size: weighting each by its share of the step's
    conversations keeps every conversation's weight what it is in one random batch of ``batch_size x
    grad_accum``."""
    return batch.num_samples / recipe.train.batch_size if recipe.data.sampling == "batch_rebalance" else 1.0


def trainable_groups(module: nn.Module) -> dict[str, int]:
    """Trainable parameter counts by part: lora, input_projections.image, stage.token_rows, ..."""
    groups: dict[str, int] = defaultdict(int)
    for name, p in module.named_parameters():
        if p.requires_grad:
            parts = name.split(".")
            key = "lora" if "lora_" in name else ".".join(parts[1:3] if parts[0] == "model" else parts[:2])
            groups[key.removesuffix(".weight").removesuffix(".bias")] += p.numel()
    return dict(groups)


# ------------------------------------------------------------------------------------- trainer
class Trainer:
    """``Trainer(recipe).fit()`` -> the bundle folder. ``stage`` replaces the recipe's stage (any ``Stage``);
    ``progress`` False hides the progress bar (log lines still print)."""

    def __init__(self, recipe: Recipe, stage: Stage | None = None, progress: bool = True):
        self.recipe, self.show_progress = recipe, progress
        t = recipe.train
        if t.tensorboard and not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
            raise ConfigError("train.tensorboard is on but tensorboard is not installed: `pip install tensorboard` "
                              "or set train.tensorboard=false")
        self.output_dir = Path(recipe.output_dir)
        try:
            self.accelerator = Accelerator(
                # without a GPU, torchrun / accelerate launch processes must be told to join one gloo group on CPU
                cpu=not torch.accelerator.is_available(),
                gradient_accumulation_steps=t.grad_accum, mixed_precision=t.mixed_precision,
                log_with="tensorboard" if t.tensorboard else None, project_dir=str(self.output_dir),
                dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=t.seed),
                # a batch without [RET] leaves the retrieval projection unused: DDP must allow that
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        except ValueError as e:  # e.g. fp16 where the device has none, or a second mixed-precision setting
            raise ConfigError(f"train.mixed_precision={t.mixed_precision!r} cannot run here: {e}") from None
        acc = self.accelerator
        print(f"process {acc.process_index}/{acc.num_processes} on {acc.device}", flush=True)
        if recipe.toy.build:
            with acc.main_process_first():
                build_toy(recipe.toy)
        config = model_config(recipe)
        train_samples, eval_samples = load_samples(recipe, config)

        self.model = build_model(recipe)
        self.stage = stage if stage is not None else ModelStage(recipe.stage)
        self.stage.setup(self.model, acc.device)
        module = StageModule(self.model, self.stage)
        self.trainable = [p for p in module.parameters() if p.requires_grad]
        if not self.trainable:
            raise ConfigError(f"stage {self.stage.name!r} trains nothing in this model; check stage.trains")
        self.groups = trainable_groups(module)
        self.num_trainable = sum(self.groups.values())
        total = sum(p.numel() for p in module.parameters())
        acc.print(f"stage {self.stage.name}: trainable parameters {self.num_trainable:,} of {total:,} "
                  f"({100 * self.num_trainable / total:.2f}%)")
        for name, count in self.groups.items():
            acc.print(f"  {name}: {count:,}")
        acc.print(f"data: {len(train_samples)} train / {len(eval_samples)} eval conversations")

        o = recipe.optim
        optimizer = torch.optim.AdamW(self.trainable, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        try:  # stepped once per optimizer step, on every rank (not prepared: accelerate would step it per process)
            self.scheduler = get_scheduler(o.scheduler, optimizer, num_warmup_steps=o.warmup_steps,
                                           num_training_steps=t.steps)
        except (ValueError, KeyError) as e:
            raise ConfigError(f"optim.scheduler {o.scheduler!r}: {e}") from None
        collate = Collator(self.model.processor, self.model.protocol)
        train_loader = train_data_loader(train_samples, recipe, collate)
        eval_loader = DataLoader(eval_samples, batch_size=t.batch_size, collate_fn=collate,
                                 num_workers=recipe.data.num_workers) if eval_samples else None
        self.module, self.optimizer, self.train_loader = acc.prepare(module, optimizer, train_loader)
        self.eval_loader = acc.prepare(eval_loader) if eval_loader is not None else None
        self.progress = Progress()
        acc.register_for_checkpointing(self.scheduler, self.progress)
        acc.register_save_state_pre_hook(self._save_trainable_only)
        acc.register_load_state_pre_hook(self._load_trainable_only)
        self.step_times: list[tuple[float, int, int]] = []  # (seconds, samples, tokens) per optimizer step, this rank
        self.last_eval: dict[str, float] | None = None  # the newest evaluate() result

    # --------------------------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> Path:
        """Train ``train.steps`` optimizer steps (continuing the newest checkpoint when ``resume``), evaluate,
        write the bundle. Returns the bundle folder."""
        acc, t = self.accelerator, self.recipe.train
        if resume:
            self._resume()
        if t.tensorboard:
            acc.init_trackers(self.stage.name)
        self.module.train()
        self.model.encoders.eval()  # frozen encoders stay in inference behaviour (dropout, norm stats)
        bar = tqdm(total=t.steps, initial=self.progress.step, desc=self.stage.name,
                   disable=not (acc.is_main_process and self.show_progress))
        window: dict[str, float] = defaultdict(float)  # sums since the last log line, this rank
        step_samples = step_tokens = 0
        started = time.perf_counter()
        while self.progress.step < t.steps:
            self.train_loader.set_epoch(self.progress.epoch)
            loader = acc.skip_first_batches(self.train_loader, self.progress.batches_in_epoch)
            for batch in loader:
                with acc.accumulate(self.module):
                    loss, terms = self.module(batch)
                    acc.backward(loss * micro_batch_weight(batch, self.recipe))
                    if acc.sync_gradients and self.recipe.optim.max_grad_norm:
                        acc.clip_grad_norm_(self.trainable, self.recipe.optim.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                self.progress.batches_in_epoch += 1
                self.progress.samples += batch.num_samples
                self.progress.tokens += batch.num_tokens
                step_samples, step_tokens = step_samples + batch.num_samples, step_tokens + batch.num_tokens
                _add(window, {"loss": loss.detach(), **terms})  # tensors: no device sync until a log line
                if not acc.sync_gradients:
                    continue
                self.scheduler.step()
                self.progress.step += 1
                seconds = time.perf_counter() - started
                self.step_times.append((seconds, step_samples, step_tokens))
                for name, value in (("seconds", seconds), ("samples", step_samples), ("tokens", step_tokens)):
                    window[name] += value
                bar.update(1)
                self._after_step(bar, window)
                step_samples = step_tokens = 0
                started = time.perf_counter()
                if self.progress.step >= t.steps:
                    break
            else:
                self.progress.epoch += 1
                self.progress.batches_in_epoch = 0
        bar.close()
        if self.eval_loader is not None:
            self._log("eval", self.evaluate())
        return self._finish()

    def _after_step(self, bar, window: dict[str, float]) -> None:
        """Log, evaluate and checkpoint on their intervals (every rank takes part in the reductions)."""
        t, step = self.recipe.train, self.progress.step
        if step % t.log_every == 0 or step == t.steps:
            totals = _sum_over_ranks(dict(window))
            seconds = totals.pop("seconds") / self.accelerator.num_processes  # ranks run side by side
            stats = _means(totals)
            stats.update(lr=self.scheduler.get_last_lr()[0], tokens_per_s=totals["tokens"] / seconds,
                         samples_per_s=totals["samples"] / seconds)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}", tok_s=f"{stats['tokens_per_s']:.0f}")
            self._log("train", stats)
            window.clear()
        if t.eval_every and step % t.eval_every == 0 and step < t.steps and self.eval_loader is not None:
            self._log("eval", self.evaluate())
        if t.checkpoint_every and step % t.checkpoint_every == 0:
            self.save_checkpoint()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss and loss terms over the held-out split (``train.eval_batches`` batches, 0 = all); also kept as
        ``last_eval`` (fit's final evaluation, for callers that report it)."""
        if self.eval_loader is None:
            raise ConfigError("the recipe has no held-out data: set data.eval or data.eval_fraction")
        self.module.eval()
        sums: dict[str, float] = defaultdict(float)
        for i, batch in enumerate(self.eval_loader):
            if self.recipe.train.eval_batches and i >= self.recipe.train.eval_batches:
                break
            loss, terms = self.module(batch)
            _add(sums, {"loss": loss, **terms})
        self.module.train()
        self.model.encoders.eval()
        self.last_eval = _means(_sum_over_ranks(dict(sums)))
        return self.last_eval

    def _log(self, split: str, stats: dict[str, float]) -> None:
        line = " ".join(f"{k} {v:.4g}" for k, v in stats.items())
        if self.accelerator.is_main_process:
            tqdm.write(f"{split} step {self.progress.step}/{self.recipe.train.steps} {line}")
        if self.recipe.train.tensorboard:
            self.accelerator.log({f"{split}/{k}": v for k, v in stats.items()}, step=self.progress.step)

    def _finish(self) -> Path:
        """Rows back into the LLM, then the bundle (written by the main process, atomically)."""
        acc = self.accelerator
        self.stage.finish(self.model)
        target = self.output_dir / BUNDLE
        if acc.is_main_process:
            self.model.save_pretrained(target, llm_weights="llm" in self.stage.trains)
            tqdm.write(f"bundle written to {target}")
        acc.wait_for_everyone()
        # DDP's reducer holds the gloo group past destroy_process_group; were it freed at interpreter exit, a gloo
        # worker thread could outlive Python and abort the process ("terminate called without an active exception")
        self.module = acc.unwrap_model(self.module)
        acc.free_memory()  # accelerate's references to the prepared objects, then gc.collect
        acc.end_training()
        return target

    # --------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """accelerate's save_state into a temp folder, renamed when complete; keeps the newest few."""
        acc = self.accelerator
        folder = self.output_dir / CHECKPOINTS / f"step-{self.progress.step:08d}"
        tmp = folder.with_name(folder.name + ".tmp")
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            for old in checkpoints(self.output_dir)[: -self.recipe.train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            tqdm.write(f"checkpoint saved to {folder}")
        acc.wait_for_everyone()
        return folder

    def _resume(self) -> None:
        found = checkpoints(self.output_dir)
        if not found:
            raise CheckpointError(f"--resume found no checkpoint under {self.output_dir / CHECKPOINTS}; run without "
                                  f"--resume, or set train.checkpoint_every so that runs leave checkpoints")
        self.accelerator.load_state(str(found[-1]))
        self.accelerator.print(f"resumed from {found[-1]} at step {self.progress.step}")

    def _save_trainable_only(self, models, weights, output_dir) -> None:
        """accelerate pre-save hook: the checkpoint keeps the trainable parameters, not the frozen model."""
        for i, model in enumerate(models):
            weights[i] = {k: v.contiguous() for k, v in self.accelerator.unwrap_model(model).trainable_state().items()}

    def _load_trainable_only(self, models, input_dir) -> None:
        """accelerate pre-load hook: load the trainable parameters ourselves (the file has nothing else)."""
        module = self.accelerator.unwrap_model(models.pop(0))
        path = Path(input_dir) / "model.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{input_dir} holds no model.safetensors; it is not a complete checkpoint")
        state = load_file(path, device=str(self.accelerator.device))
        expected = set(module.trainable_state())
        if set(state) != expected:
            raise CheckpointError(f"the checkpoint {input_dir} trained other parameters than this recipe: missing "
                                  f"{sorted(expected - set(state))[:3]}, extra {sorted(set(state) - expected)[:3]}; "
                                  f"resume with the recipe the run started with")
        module.load_state_dict(state, strict=False)


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    return sorted(p for p in (Path(output_dir) / CHECKPOINTS).glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))


def _sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Per-key sums over every process (keys may differ between ranks: a term only some batches had)."""
    totals: dict[str, float] = defaultdict(float)
    for part in gather_object([{k: float(v) for k, v in values.items()}]):
        for k, v in part.items():
            totals[k] += v
    return dict(totals)


def _add(sums: dict, terms: dict[str, torch.Tensor]) -> None:
    """Running sums (tensors) and counts of loss terms (a term some batches lack is averaged over those that had it)."""
    for name, value in terms.items():
        sums[name] += value
        sums[f"{name}.count"] += 1


def _means(sums: dict[str, float]) -> dict[str, float]:
    return {k: v / sums[f"{k}.count"] for k, v in sums.items() if f"{k}.count" in sums}
