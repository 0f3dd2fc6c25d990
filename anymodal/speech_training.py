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
from pathlib import Path

import torch
from peft import PeftModel
from tqdm.auto import tqdm

from .errors import ConfigError
from .processor import IGNORE, Example
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
            strings = [SOSP, EOSP] + [unit_token(u) for u in range(model.protocol.num_units)]
            ids = [model.protocol.ids[s] for s in strings]
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
def run_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Path, list[float]]:
    """Train one stage from a recipe in the shared trainer's schema (``anymodal.training.recipe.Recipe``;
    ``stage.name`` is a speech stage, ``data.train`` speech JSONL records) and save the bundle to ``output_dir``.

    With ``toy.build: true`` a tiny random Llama is written to ``<toy.dir>/parts/llm`` when missing (seconds;
    the recipe's ``model.llm.name_or_path`` points there). Returns the bundle folder and every step's loss."""
    from .model import AnyModalModel
    from .tiny import save_tiny_llm
    from .training.recipe import load_recipe
    from .training.trainer import model_config

    recipe = load_recipe(path, overrides)
    stage = SpeechStage(recipe.stage.name, recipe.stage.trains)  # checks the stage before anything is built
    if recipe.toy.build and not (Path(recipe.toy.dir) / "parts" / "llm" / "config.json").is_file():
        save_tiny_llm(Path(recipe.toy.dir) / "parts" / "llm", seed=recipe.train.seed)
    template = ChainOfModality()
    config = model_config(recipe)
    records = []
    for data in map(Path, recipe.data.train):
        if not data.is_file():
            raise ConfigError(f"data file {data} does not exist; fix data.train (paths are relative to where you run)")
        records += [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    torch.manual_seed(recipe.train.seed)
    if recipe.init_from:
        model = AnyModalModel.from_pretrained(recipe.init_from)
    else:
        config.prompt = template.prompt_config(config.prompt.system)  # [Human]: ... [SpeechGPT]: ...
        model = AnyModalModel.from_config(config)
    examples = stage_examples(model, stage.name, records, template)
    losses = train_stage(model, stage, examples, recipe.train.steps, recipe.train.batch_size, recipe.optim.lr,
                         recipe.train.seed)
    return model.save_pretrained(recipe.output_dir), losses
