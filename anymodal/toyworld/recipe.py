"""`anymodal train recipes/toyworld/all.yaml`: the whole toy world, from nothing to a scored bundle.

Steps (with ``workers > 1`` a step starts, in a process of its own, as soon as the steps it needs are done and a
worker is free, in the order of ``_steps``: the judges, the encoder and the LLM need nothing, the decoders the
judges, speech the world). Each writes
``OUT/<step>/`` and ends with ``OUT/<step>/metrics.json``, so a rerun skips the steps that finished (delete a
step's folder to redo it, and the folders of the steps after it):

    world           media + task JSONL for train / validation / test (writer.py)
    judges          classifiers that read attributes back from media (judges.py)
    encoder         ImageBind-style encoder: images <-> captions, sounds -> images, videos <-> motion captions
    decoder_<kind>  pixel-diffusion UNets for image / video / audio outputs
    llm             the world's tokenizer + a tiny Llama pretrained on the world's text
    speech          log-mel unitizer + Griffin-Lim vocoder, and the speech tasks as units JSONL
    index           FAISS index of gallery images, carrying the images (the [RET] target space)
    <stage>         the shared Trainer's stages (encoder_alignment, decoder_alignment, instruction_tuning, ...)
    eval            the metrics table on the test split
    bundle          the last stage's bundle with every component packed in (``bundle/model``: it travels whole)

The recipe is plain data (``ToyWorldRecipe``); ``model`` is the ModelConfig the first stage builds, naming
the parts the steps before it wrote (``${output_dir}/encoder``, ...).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tqdm import tqdm

from .. import config as cfg
from ..errors import ConfigError

RECIPE_KEY = "toyworld"  # a YAML with this top-level key is a toy-world recipe, not a single-stage one
DONE = "metrics.json"


@dataclass
class WorldStep:
    train: int = 2048  # training items (each: image, sound, video, spoken caption, spoken question + answer)
    eval: int = 256  # validation and test items each


@dataclass
class StageStep:
    name: str = "instruction_tuning"  # a Trainer stage preset (training/stages.py)
    trains: Optional[list[str]] = None  # the parts it trains (training/stages.py PARTS; default: the preset's)
    losses: dict[str, float] = field(default_factory=dict)  # stage.losses: lm / signal_mse / retrieval ({} = preset's)
    step: str = ""  # its folder under output_dir (default: name; two stages of one preset need two)
    data: list[str] = field(default_factory=list)  # task files: "world/<task>" or "speech/<task>" (split added)
    steps: int = 500
    batch_size: int = 16  # conversations per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-3
    warmup_steps: int = 20
    scheduler: str = "cosine"
    log_every: int = 50
    seed: Optional[int] = None  # its batches' order and fresh weights (default: toyworld.seed)
    sampling: str = "random"  # how batches are drawn (data.sampling: random | group_by_length | batch_rebalance)

    @property
    def folder(self) -> str:
        return self.step or self.name


@dataclass
class ToyWorldSpec:
    output_dir: str = "runs/toyworld"
    seed: int = 0
    world: WorldStep = field(default_factory=WorldStep)
    encoder: dict[str, Any] = field(default_factory=dict)  # keyword arguments of toyworld.encoder.train_encoder
    judges: dict[str, Any] = field(default_factory=dict)  # keyword arguments of toyworld.judges.train_judge
    decoders: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> toyworld.decoder.train_decoder kwargs
    llm: dict[str, Any] = field(default_factory=dict)  # keyword arguments of toyworld.language.train_llm
    speech: dict[str, Any] = field(default_factory=dict)  # keyword arguments of toyworld.speech.build_speech
    gallery: int = 256  # validation images in the [RET] index
    model: Optional[cfg.ModelConfig] = None  # what the first stage builds
    stages: list[StageStep] = field(default_factory=list)
    eval_items: int = 256  # test items scored per path
    threads: int = 0  # torch intra-op threads (0 = torch's default)
    deterministic: bool = False  # the stages' train.deterministic: two runs of the stages end the same
    workers: int = 1  # steps run at once, each in a process of its own, sharing the threads (1 = all in this one)


@dataclass
class ToyWorldRecipe:
    toyworld: ToyWorldSpec = field(default_factory=ToyWorldSpec)


def is_toyworld_recipe(path: str | Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # the single-stage loader reports it
    return isinstance(data, dict) and RECIPE_KEY in data


def load(source: str | Path | dict, overrides: list[str] | None = None) -> ToyWorldSpec:
    """Read and check a toy-world recipe; ``overrides`` are ``toyworld.a.b=c`` strings."""
    spec = cfg.build(ToyWorldRecipe, source, overrides=overrides).toyworld
    if spec.model is None or not spec.stages:
        raise ConfigError("a toy-world recipe needs toyworld.model (the first stage's ModelConfig) and toyworld.stages")
    folders = [stage.folder for stage in spec.stages]
    twice = sorted({f for f in folders if folders.count(f) > 1})
    if twice:
        raise ConfigError(f"toyworld.stages: more than one stage writes {twice}; give each a `step:` folder name")
    unknown = sorted(set(spec.decoders) - {"image", "video", "audio"})
    if unknown:
        raise ConfigError(f"toyworld.decoders has {unknown}; the world has image, video and audio outputs")
    return spec


def run(spec: ToyWorldSpec, progress: bool = True) -> Path:
    """Every step not done yet, then the metrics table. Returns the bundle folder."""
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    out = Path(spec.output_dir)
    steps = _steps(spec, out, progress)
    done = {s.name for s in steps if (out / s.name / DONE).is_file()}
    for name in [s.name for s in steps if s.name in done]:
        tqdm.write(f"[toyworld] {name}: done earlier ({out / name / DONE})")
    if spec.workers > 1:
        _run_in_workers(spec, out, [s for s in steps if s.name not in done], done, progress)
    else:
        for step in steps:
            if step.name not in done:
                tqdm.write(f"[toyworld] {step.name} ...")
                start = time.perf_counter()
                _finish(out / step.name, step.run(_start(out / step.name)), start)
    print(summary(out, [s.name for s in steps]))
    return out / "bundle" / "model"


def _start(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _finish(folder: Path, metrics: dict | None, start: float) -> None:
    metrics = metrics or {}
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    (folder / DONE).write_text(json.dumps(metrics, indent=2) + "\n")  # last: it marks the step done
    tqdm.write(f"[toyworld] {folder.name}: {metrics['seconds']:.0f} s")


def _run_in_workers(spec: ToyWorldSpec, out: Path, todo: list["Step"], done: set[str], progress: bool) -> None:
    """Run ``todo`` in ``spec.workers`` processes, each step once the steps it needs are done, sharing the threads
    among the steps that can run (the stages, one after another, get them all). Small models use two cores better
    as two one-thread processes than as one two-thread process (the parallel steps: 38 -> 31 min). A step's output
    (its progress bars) goes to ``<step>/log.txt``; the bar here shows each running step's latest line. On a
    failure the running steps finish (their work is kept) and the error names the step and its log."""
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = spec.threads or os.cpu_count() or 1
    running: dict = {}  # future -> (step name, start time)
    failure = None
    bar = tqdm(total=len(todo), desc="toyworld steps", disable=not progress)
    with ProcessPoolExecutor(spec.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        while todo or running:
            ready = [s for s in todo if set(s.needs) <= done] if failure is None else []
            share = max(1, threads // min(spec.workers, len(running) + len(ready) or 1))  # a step alone gets them all
            for step in ready[:spec.workers - len(running)]:
                todo.remove(step)
                log = _start(out / step.name) / "log.txt"
                tqdm.write(f"[toyworld] {step.name} ... ({share} thread(s) in a worker; log: {log})")
                running[pool.submit(_run_step, spec, step.name, share, str(log))] = step.name, time.perf_counter()
            if not running:
                break
            finished, _ = wait(running, timeout=5, return_when=FIRST_COMPLETED)
            for future in finished:
                name, start = running.pop(future)
                if future.exception() is not None:
                    failure = failure or (name, future.exception())
                    continue
                _finish(out / name, future.result(), start)
                done.add(name)
                bar.update()
            bar.set_postfix_str(" | ".join(_last_line(out / name / "log.txt") for name, _ in running.values()))
    bar.close()
    if failure is not None:
        name, error = failure
        raise RuntimeError(f"toy-world step {name} failed: {error} (its output: {out / name / 'log.txt'}; "
                           f"rerun the same command to go on from the steps that finished)") from error
    if todo:
        raise RuntimeError(f"toy-world steps {[s.name for s in todo]} wait on steps that are not in the recipe")


def _run_step(spec: ToyWorldSpec, name: str, threads: int, log: str) -> dict:
    """One step in a worker process, its output written to ``log``."""
    from contextlib import redirect_stderr, redirect_stdout

    import torch

    torch.set_num_threads(threads)
    step = next(s for s in _steps(spec, Path(spec.output_dir), progress=True) if s.name == name)
    with open(log, "w", buffering=1) as stream, redirect_stdout(stream), redirect_stderr(stream):
        return step.run(Path(spec.output_dir) / name)


def _last_line(log: Path) -> str:
    """The latest progress-bar state in a step's log (tqdm ends each refresh with a carriage return)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return log.parent.name
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return f"{log.parent.name}: {lines[-1][:60]}" if lines else log.parent.name


def summary(out: Path, names: list[str]) -> str:
    from .evaluate import Row, format_table

    lines = ["step times: " + ", ".join(f"{n} {json.loads((out / n / DONE).read_text()).get('seconds', 0):.0f}s"
                                       for n in names if (out / n / DONE).is_file())]
    rows_file = out / "eval" / DONE
    if rows_file.is_file():
        rows = [Row(**r) for r in json.loads(rows_file.read_text())["rows"]]
        lines.append(format_table(rows))
    return "\n".join(lines)


@dataclass
class Step:
    name: str
    run: Callable[[Path], dict]  # folder -> metrics
    needs: tuple[str, ...] = ()  # steps whose output it reads


def _steps(spec: ToyWorldSpec, out: Path, progress: bool) -> list[Step]:
    seed = spec.seed
    # the judges, the encoder, the decoders and the LLM render their world in memory: none waits for the writer.
    # Workers take ready steps in this order: the decoders (the longest steps, in the recipe's order) before the
    # encoder and the LLM, so that two workers end close together (with the step times of README's timed run: the
    # parts end at ~1860 s instead of 2083, when the encoder went first and held back the sound decoder)
    steps = [Step("world", lambda folder: _world(folder, spec.world, seed, progress)),
             Step("judges", lambda folder: _judges(folder, spec.judges, seed, progress))]
    for kind, options in spec.decoders.items():
        steps.append(Step(f"decoder_{kind}", lambda folder, kind=kind, options=options:
                          _decoder(kind, folder, out / "judges", options, seed, progress), ("judges",)))
    steps += [Step("encoder", lambda folder: _encoder(folder, spec.encoder, seed, progress)),
              Step("llm", lambda folder: _llm(folder, spec.llm, seed, progress)),
              Step("speech", lambda folder: _speech(folder, out, spec, progress), ("world",)),
              Step("index", lambda folder: _index(folder, out, spec.gallery, progress), ("world", "encoder"))]
    previous = None
    parts = tuple(s.name for s in steps)  # the first stage's model is built from all of them
    for stage in spec.stages:
        steps.append(Step(stage.folder, lambda folder, stage=stage, previous=previous:
                          _stage(folder, out, stage, spec, previous), parts if previous is None else (previous,)))
        previous = stage.folder
    steps += [Step("eval", lambda folder: _eval(folder, out, previous, spec, progress), ("judges", previous)),
              Step("bundle", lambda folder: _bundle(folder, out, previous), ("eval", previous))]
    return steps


# ------------------------------------------------------------------------------------------------ steps
def _world(folder: Path, world: WorldStep, seed: int, progress: bool) -> dict:
    from .writer import write_split

    for split in ("train", "validation", "test"):
        write_split(folder, split, world.train if split == "train" else world.eval, seed, progress=progress)
    return {"train": world.train, "validation": world.eval, "test": world.eval}


def _judges(folder: Path, options: dict, seed: int, progress: bool) -> dict:
    from .judges import load_or_train_judges

    judges = load_or_train_judges(folder, ["image", "sound", "video", "speech"], seed=seed, progress=progress, **options)
    return {kind: scores for kind, (_, scores) in judges.items()}


def _encoder(folder: Path, options: dict, seed: int, progress: bool) -> dict:
    from .encoder import train_encoder

    return train_encoder(folder, seed=seed, progress=progress, **options)


def _decoder(kind: str, folder: Path, judges: Path, options: dict, seed: int, progress: bool) -> dict:
    from .decoder import train_decoder
    from .evaluate import KIND_OF

    return train_decoder(KIND_OF[kind], folder, seed=seed, judges_dir=judges, progress=progress, **options)


def _llm(folder: Path, options: dict, seed: int, progress: bool) -> dict:
    from .language import train_llm

    return train_llm(folder, seed=seed, progress=progress, **options)


def _speech(folder: Path, out: Path, spec: ToyWorldSpec, progress: bool) -> dict:
    from .speech import build_speech, write_speech_tasks

    metrics = build_speech(folder, seed=spec.seed, progress=progress, **spec.speech)
    for split in ("train", "validation", "test"):
        write_speech_tasks(folder, out / "world" / split, folder / split)
    return metrics


def _index(folder: Path, out: Path, gallery: int, progress: bool) -> dict:
    from .gallery import build_gallery_index

    return build_gallery_index(folder, out / "encoder", out / "world" / "validation", gallery, progress=progress)


def _task_files(out: Path, names: list[str], split: str) -> list[str]:
    files = []
    for name in names:
        source, _, task = name.partition("/")
        if source not in ("world", "speech") or not task:
            raise ConfigError(f"stage data {name!r}: name task files as world/<task> or speech/<task>")
        path = out / source / split / f"{task}.jsonl"
        if not path.is_file():
            raise ConfigError(f"stage data {name!r}: {path} does not exist (see writer.py / speech.py for the tasks)")
        files.append(str(path))
    return files


def _stage(folder: Path, out: Path, stage: StageStep, spec: ToyWorldSpec, previous: str | None) -> dict:
    from ..training import Trainer, load_recipe

    start = {"model": cfg.to_dict(spec.model)} if previous is None else {"init_from": str(out / previous / "bundle")}
    recipe = load_recipe({
        "stage": {"name": stage.name, "trains": stage.trains, "losses": stage.losses}, **start,
        "data": {"train": _task_files(out, stage.data, "train"), "eval": _task_files(out, stage.data, "validation"),
                 "sampling": stage.sampling},
        "optim": {"lr": stage.lr, "scheduler": stage.scheduler, "warmup_steps": stage.warmup_steps},
        "train": {"steps": stage.steps, "batch_size": stage.batch_size, "grad_accum": stage.grad_accum,
                  "deterministic": spec.deterministic,
                  "seed": spec.seed if stage.seed is None else stage.seed, "eval_batches": 4,
                  "log_every": stage.log_every},
        "output_dir": str(folder)})
    trainer = Trainer(recipe)
    before = trainer.evaluate()
    trainer.fit()  # evaluates once more at the end
    return {"eval_before": before, "eval": trainer.last_eval}


def _eval(folder: Path, out: Path, last_stage: str, spec: ToyWorldSpec, progress: bool) -> dict:
    from dataclasses import asdict

    from ..model import AnyModalModel
    from .evaluate import evaluate, format_table

    model = AnyModalModel.from_pretrained(out / last_stage / "bundle")
    rows = evaluate(model, n=spec.eval_items, seed=spec.seed, judges_dir=out / "judges", progress=progress)
    (folder / "table.txt").write_text(format_table(rows) + "\n")
    return {"rows": [asdict(r) for r in rows]}


PACK = ("llm.name_or_path", "retrieval.name_or_path", "speech.unitizer", "speech.vocoder")


def _bundle(folder: Path, out: Path, last_stage: str) -> dict:
    import shutil

    from ..model import AnyModalModel

    model = AnyModalModel.from_pretrained(out / last_stage / "bundle")
    c = model.config
    pack = [key for key in PACK if cfg.select(c, key)]
    pack += [f"encoders.{m}.name_or_path" for m in c.encoders] + [f"decoders.{m}.name_or_path" for m in c.decoders]
    model.save_pretrained(folder / "model", pack=pack)
    shutil.copy(out / "eval" / "table.txt", folder / "table.txt")
    return {"rows": json.loads((out / "eval" / DONE).read_text())["rows"],
            "megabytes": round(_size(folder / "model") / 2 ** 20, 2)}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
