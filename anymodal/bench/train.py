"""`anymodal bench train RECIPE --steps N`: samples/s and tokens/s of a recipe's stage with anymodal's Trainer
(accelerate, logging, progress bar) against the same model, stage and data in a plain PyTorch loop, in one
run. The last line is ``overhead_vs_plain_pytorch=<x>x`` (Trainer time per sample / plain time per sample).
A recipe whose ``data.sampling`` is not random also runs the Trainer on random batches of the same step size
(the baseline) and prints ``sampling_vs_random=<x>x`` (samples/s with the recipe's sampling / samples/s random)
above it."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from itertools import count, islice

import torch
from torch.utils.data import DataLoader
from transformers import get_scheduler


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="training throughput: anymodal Trainer vs a plain PyTorch loop")
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/toyworld/instruction_tuning.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per loop (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two loops this often, keep each one's best")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ConfigError
    from ..training.recipe import load_recipe
    from ..training.toydata import build_toy

    if args.steps <= args.warmup:
        raise ConfigError(f"--steps ({args.steps}) must be larger than --warmup ({args.warmup})")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*args.overrides, f"train.steps={args.steps}", "train.checkpoint_every=0", "train.eval_every=0",
                     f"train.log_every={args.steps}", "data.eval=[]", "data.eval_fraction=0.0", f"output_dir={tmp}"]
        recipe = load_recipe(args.recipe, overrides)
        if recipe.toy.build:
            build_toy(recipe.toy)
        loops = {"plain PyTorch": (plain_loop, recipe), "anymodal Trainer": (trainer_loop, recipe)}
        if recipe.data.sampling != "random":
            loops["Trainer, random"] = (trainer_loop, random_sampling(recipe))
        runs = {name: [] for name in loops}
        for _ in range(max(1, args.repeats)):  # a shared CPU is noisy: alternate the loops, keep each one's best
            for name, (loop, loop_recipe) in loops.items():
                runs[name].append(_throughput(loop(loop_recipe), args.warmup))
        rows = {name: max(results, key=lambda r: r[1]) for name, results in runs.items()}
    print(f"{'loop':<18} {'steps':>6} {'samples/s':>10} {'tokens/s':>10} {'s/step':>8}")
    for name, (steps, samples_s, tokens_s, step_s) in rows.items():
        print(f"{name:<18} {steps:>6} {samples_s:>10.1f} {tokens_s:>10.1f} {step_s:>8.4f}")
    if "Trainer, random" in rows:
        print(f"sampling_vs_random={rows['anymodal Trainer'][1] / rows['Trainer, random'][1]:.2f}x")
    overhead = rows["plain PyTorch"][1] / rows["anymodal Trainer"][1]
    print(f"overhead_vs_plain_pytorch={overhead:.2f}x")
    return 0


def random_sampling(recipe):
    """``recipe`` on random batches of the same conversations per optimizer step."""
    t = recipe.train
    steps = dataclasses.replace(t, batch_size=t.batch_size * t.grad_accum, grad_accum=1) \
        if recipe.data.sampling == "batch_rebalance" else t
    return dataclasses.replace(recipe, train=steps, data=dataclasses.replace(recipe.data, sampling="random"))


def trainer_loop(recipe) -> list[tuple[float, int, int]]:
    from ..training.trainer import Trainer

    trainer = Trainer(recipe)
    trainer.fit()
    return trainer.step_times


def plain_loop(recipe) -> list[tuple[float, int, int]]:
    """The Trainer's math without accelerate: same model build, stage, collator, batches, optimizer and schedule."""
    from ..training.data import Collator
    from ..training.stages import ModelStage
    from ..training.trainer import StageModule, build_model, load_samples, micro_batch_weight, train_data_loader

    t, o = recipe.train, recipe.optim
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(recipe)
    samples, _ = load_samples(recipe, model.config)
    stage = ModelStage(recipe.stage)
    stage.setup(model, device)
    module = StageModule(model, stage).to(device)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    scheduler = get_scheduler(o.scheduler, optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=t.steps)
    loader = train_data_loader(samples, recipe, Collator(model.processor, model.protocol))
    module.train()
    model.encoders.eval()
    batches = cycle_epochs(loader)
    times = []
    for _ in range(t.steps):
        started, n_samples, n_tokens = time.perf_counter(), 0, 0
        for batch in islice(batches, t.grad_accum):
            loss, _ = module(batch.to(device))
            (loss * micro_batch_weight(batch, recipe) / t.grad_accum).backward()
            n_samples, n_tokens = n_samples + batch.num_samples, n_tokens + batch.num_tokens
        if o.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        times.append((time.perf_counter() - started, n_samples, n_tokens))
    return times


def cycle_epochs(loader: DataLoader):
    """Endless batches, a fresh order each epoch (itertools.cycle would replay the first epoch's batches)."""
    for epoch in count():
        if hasattr(loader.batch_sampler, "set_epoch"):  # length-aware samplers draw their order from the epoch
            loader.batch_sampler.set_epoch(epoch)
        yield from loader


def _throughput(times: list[tuple[float, int, int]], warmup: int) -> tuple[int, float, float, float]:
    timed = times[warmup:]
    seconds = sum(s for s, _, _ in timed)
    return len(timed), sum(n for _, n, _ in timed) / seconds, sum(k for _, _, k in timed) / seconds, seconds / len(timed)
