"""`anymodal train recipes/toyworld/all.yaml`: the whole toy world, from nothing to a scored bundle.

Steps, in order. Each writes ``OUT/<step>/`` and ends with ``OUT/<step>/metrics.json``, so a rerun skips the
steps that finished (delete a step's folder to redo it, and the folders of the steps after it):

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
    data: list[str] = field(default_factory=list)  # task files: "world/<task>" or "speech/<task>" (split added)
    steps: int = 500
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 20
    scheduler: str = "cosine"
    log_every: int = 50


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
    for name, step in steps:
        folder = out / name
        if (folder / DONE).is_file():
            tqdm.write(f"[toyworld] {name}: done earlier ({folder / DONE})")
            continue
        tqdm.write(f"[toyworld] {name} ...")
        start = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        metrics = step(folder) or {}
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        (folder / DONE).write_text(json.dumps(metrics, indent=2) + "\n")
        tqdm.write(f"[toyworld] {name}: {metrics['seconds']:.0f} s")
    print(summary(out, [name for name, _ in steps]))
    return out / "bundle" / "model"


def summary(out: Path, names: list[str]) -> str:
    from .evaluate import Row, format_table

    lines = ["step times: " + ", ".join(f"{n} {json.loads((out / n / DONE).read_text()).get('seconds', 0):.0f}s"
                                       for n in names if (out / n / DONE).is_file())]
    rows_file = out / "eval" / DONE
    if rows_file.is_file():
        rows = [Row(**r) for r in json.loads(rows_file.read_text())["rows"]]
        lines.append(format_table(rows))
    return "\n".join(lines)


def _steps(spec: ToyWorldSpec, out: Path, progress: bool) -> list[tuple[str, Callable[[Path], dict]]]:
    seed = spec.seed
    steps: list[tuple[str, Callable[[Path], dict]]] = [
        ("world", lambda folder: _world(folder, spec.world, seed, progress)),
        ("judges", lambda folder: _judges(folder, spec.judges, seed, progress)),
        ("encoder", lambda folder: _encoder(folder, spec.encoder, seed, progress)),
    ]
    for kind, options in spec.decoders.items():
        steps.append((f"decoder_{kind}", lambda folder, kind=kind, options=options:
                      _decoder(kind, folder, out / "judges", options, seed, progress)))
    steps += [("llm", lambda folder: _llm(folder, spec.llm, seed, progress)),
              ("speech", lambda folder: _speech(folder, out, spec, progress)),
              ("index", lambda folder: _index(folder, out, spec.gallery, progress))]
    previous = None
    for stage in spec.stages:
        steps.append((stage.name, lambda folder, stage=stage, previous=previous:
                      _stage(folder, out, stage, spec, previous)))
        previous = stage.name
    steps += [("eval", lambda folder: _eval(folder, out, previous, spec, progress)),
              ("bundle", lambda folder: _bundle(folder, out, previous))]
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
        "stage": {"name": stage.name}, **start,
        "data": {"train": _task_files(out, stage.data, "train"), "eval": _task_files(out, stage.data, "validation")},
        "optim": {"lr": stage.lr, "scheduler": stage.scheduler, "warmup_steps": stage.warmup_steps},
        "train": {"steps": stage.steps, "batch_size": stage.batch_size, "seed": spec.seed, "eval_batches": 4,
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
