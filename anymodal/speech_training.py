"""SpeechGPT's three training stages as stage objects: what trains + the loss over a batch.

    stage                    data                                        trains (default)        loss
    unit_adaptation          unit sequences <sosp><u..>..<eosp>          new token rows          next-unit LM
    cross_modal_sft          paired text / units: ASR- and TTS-style     new token rows + LoRA   LM on answers
    chain_of_modality_sft    chain-of-modality exchanges (4 templates)   LoRA                    LM on answers

A stage is the shared trainer's ``anymodal.training.Stage`` (``Trainer(recipe, stage=SpeechStage(...))``
runs it); new token rows train as the trainer's ``TrainableTokenRows``. ``train_stage`` is a small loop over
the plain model API for the speech data below (JSONL records with unit ids), which the trainer's conversation
data cannot carry yet (its text parts refuse unit tokens).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from peft import PeftModel
from tqdm.auto import tqdm

from .config import ModelConfig, build
from .errors import ConfigError
from .processor import IGNORE, Batch, Example
from .speech import ChainExample, ChainOfModality
from .tokens import EOSP, SOSP, unit_token
from .training.stages import Stage
from .training.token_rows import TrainableTokenRows

STAGES = {
    "unit_adaptation": ("new_tokens",),
    "cross_modal_sft": ("new_tokens", "lora"),
    "chain_of_modality_sft": ("lora",),
}
PARTS = ("new_tokens", "lora")


class SpeechStage(Stage):
    """One SpeechGPT stage; ``trains`` overrides its default parts (any of ``PARTS``)."""

    def __init__(self, name: str, trains: list[str] | None = None):
        super().__init__()
        if name not in STAGES:
            raise ConfigError(f"unknown speech stage {name!r}; use one of {sorted(STAGES)}")
        self.name = name
        self.trains = tuple(STAGES[name] if trains is None else trains)
        unknown = sorted(set(self.trains) - set(PARTS))
        if unknown or not self.trains:
            raise ConfigError(f"speech stage trains {list(self.trains)}: use one or more of {list(PARTS)}")
        self.token_rows: TrainableTokenRows | None = None

    def setup(self, model, device: torch.device) -> None:
        if not model.protocol.num_units:
            raise ConfigError("speech stages need unit tokens: set `speech_units: K` in the model config")
        model.requires_grad_(False)
        if "lora" in self.trains:
            if not isinstance(model.llm, PeftModel):
                raise ConfigError(f"the {self.name} stage trains LoRA but the model has none; set llm.lora.enabled")
            for name, param in model.llm.named_parameters():
                if "lora_" in name:
                    param.requires_grad_(True)
        if "new_tokens" in self.trains:  # the unit rows live in the stage until finish() writes them back
            base = model.llm.get_base_model() if isinstance(model.llm, PeftModel) else model.llm
            ids = [model.protocol.ids[s] for s in [SOSP, EOSP] + [unit_token(u) for u in range(model.protocol.num_units)]]
            self.token_rows = TrainableTokenRows(base, ids).to(device)

    def forward(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = model(getattr(batch, "batch", batch)).loss  # the trainer's TrainBatch or a processor Batch
        return loss, {"lm": loss.detach()}

    def finish(self, model) -> None:
        if self.token_rows is not None:
            self.token_rows.write_back()
            self.token_rows = None
        model.requires_grad_(False)


# ------------------------------------------------------------------------------------ examples
def unit_example(model, units: list[int]) -> Example:
    """Stage 1: a bare unit sequence, every token learned (next-unit prediction)."""
    tokenizer = model.tokenizer
    ids = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + model.protocol.unit_ids(units)
    ids.append(tokenizer.eos_token_id)
    return Example(ids, [IGNORE] + ids[1:], [])


def stage_examples(model, stage: str, records: list[dict], template: ChainOfModality) -> list[Example]:
    """Records (plain dicts, e.g. JSONL lines) -> processor examples for ``stage``:

    unit_adaptation        {"units": [..]}
    cross_modal_sft        {"text": "...", "units": [..], "direction": "asr" | "tts"}
    chain_of_modality_sft  {"task": "speech->speech", "instruction", "answer", "instruction_units", "answer_units"}
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown speech stage {stage!r}; use one of {sorted(STAGES)}")
    examples = []
    for i, r in enumerate(records):
        try:
            if stage == "unit_adaptation":
                examples.append(unit_example(model, list(r["units"])))
            elif stage == "cross_modal_sft":
                turns = template.cross_modal(r["text"], list(r["units"]), r.get("direction", "asr"))
                examples.append(model.processor.encode(turns))
            else:
                fields = {k: r[k] for k in ("instruction", "answer", "instruction_units", "answer_units") if k in r}
                examples.append(model.processor.encode(template.conversation(ChainExample(r["task"], **fields))))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"record {i} does not fit the {stage} stage ({type(e).__name__}: {e}); see "
                              f"anymodal.speech_training.stage_examples for the fields") from None
    return examples


def train_stage(model, stage: SpeechStage, examples: list[Example], steps: int, batch_size: int = 4,
                lr: float = 1e-3, seed: int = 0) -> list[float]:
    """AdamW (no weight decay) over shuffled batches of ``examples``; returns the loss of every step."""
    stage.setup(model, model.device)
    params = [p for p in [*model.parameters(), *stage.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    losses = []
    model.train()
    try:
        for _ in tqdm(range(steps), desc=stage.name, unit="step"):
            batch = model.processor.collate(rng.sample(examples, min(batch_size, len(examples))))
            loss, _ = stage(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        stage.finish(model)
        model.eval()
    return losses


# ------------------------------------------------------------------------------------ recipes
@dataclass
class SpeechRecipe:
    """recipes/speechgpt/*.yaml. ``model`` builds from parts, ``init_from`` continues a bundle, ``tiny``
    builds tiny random parts (CPU, seconds) with ``speech_units`` units."""

    stage: str = "unit_adaptation"
    trains: Optional[list[str]] = None
    model: Optional[ModelConfig] = None
    init_from: Optional[str] = None
    tiny: bool = False
    speech_units: int = 16
    data: str = ""  # JSONL records (see stage_examples), relative to the recipe file
    steps: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    seed: int = 0
    output_dir: str = "runs/speechgpt"
    template: dict = field(default_factory=dict)  # ChainOfModality overrides: human, assistant, markers, ...


def run_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Path, list[float]]:
    """Train one stage from a recipe and save the bundle to ``output_dir``; returns it and the losses."""
    from .model import AnyModalModel
    from .tiny import save_tiny_llm, tiny_config

    path = Path(path)
    recipe = build(SpeechRecipe, path, overrides=overrides)
    if sum([recipe.model is not None, recipe.init_from is not None, recipe.tiny]) != 1:
        raise ConfigError(f"{path}: set exactly one of model, init_from or tiny: true")
    stage = SpeechStage(recipe.stage, recipe.trains)  # checks the stage before anything is built
    template = ChainOfModality(**recipe.template)
    torch.manual_seed(recipe.seed)
    if recipe.init_from:
        model = AnyModalModel.from_pretrained(recipe.init_from)
    else:
        config = recipe.model
        if recipe.tiny:
            parts = Path(recipe.output_dir + "-parts").resolve()  # absolute: later stages run from anywhere
            save_tiny_llm(parts / "llm")
            config = tiny_config(parts, decoders=False, retrieval=False)
            config.encoders = {}
            config.speech_units = recipe.speech_units
        config.prompt = template.prompt_config(config.prompt.system)
        model = AnyModalModel.from_config(config)
    data = path.parent / recipe.data
    if not data.is_file():
        raise ConfigError(f"{path}: data file {data} does not exist")
    records = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    examples = stage_examples(model, recipe.stage, records, template)
    losses = train_stage(model, stage, examples, recipe.steps,
                         recipe.batch_size, recipe.lr, recipe.seed)
    return model.save_pretrained(recipe.output_dir), losses
