"""Stages: what trains and the loss over a batch. The Trainer runs any ``Stage``; ``ModelStage`` runs the
presets below (or any mix of ``PARTS`` and ``LOSSES``) over the model's own forward.

    stage                 trains (default)                                         losses (default weights)
    encoder_alignment     input projections                                        lm
    decoder_alignment     output projections, retrieval projection, signal rows     lm + signal_mse + retrieval
    retrieval_alignment   input projections, retrieval projection, signal rows      lm + retrieval   (FROMAGe)
    instruction_tuning    LoRA, all projections, new-token rows                     lm + signal_mse + retrieval
    language_modeling     llm: every weight of the base LLM (no LoRA)               lm   (pretraining, e.g. the toy world's LLM)
    unit_adaptation       unit rows (<sosp>, <eosp>, <u0>..)                        lm   (SpeechGPT 1: next-unit prediction)
    cross_modal_sft       unit rows, LoRA                                           lm   (SpeechGPT 2: ASR / TTS pairs)
    chain_of_modality_sft LoRA                                                      lm   (SpeechGPT 3: chain of modality)

The speech stages' data may be SpeechGPT speech records (unit sequences, text / unit pairs, chain-of-modality
exchanges): the reader turns them into conversations with ``units`` parts (speech_records.py).

New-token rows come in two parts: ``signal_tokens`` ([IMGi] / [AUDi] / [VIDi] / [RET]) and ``unit_tokens``
(<sosp>, <eosp>, <uK>); ``new_tokens`` is both. Each preset trains only the rows its data writes: the LM loss
of a stage that never writes units only pushes their logits down.

Parts a model does not have (no decoders -> no output projections) are skipped; a loss term whose
targets a batch lacks (no ``[RET]``) is left out of that batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import PeftModel
from torch import nn

from .. import registry
from ..errors import ConfigError, TokenProtocolError
from ..media import Media, Modality
from ..model import AnyModalModel
from ..tokens import TokenProtocol
from .data import TrainBatch
from .losses import LogitScale, info_nce, signal_mse
from .recipe import StageConfig
from .token_rows import TrainableTokenRows

TOKEN_PARTS = ("new_tokens", "signal_tokens", "unit_tokens")
PARTS = ("input_projections", "output_projections", "retrieval_projection", *TOKEN_PARTS, "lora", "llm")
LOSSES = ("lm", "signal_mse", "retrieval")


@dataclass(frozen=True)
class Preset:
    trains: tuple[str, ...]
    losses: dict[str, float]


PRESETS = {
    "encoder_alignment": Preset(("input_projections",), {"lm": 1.0}),
    "decoder_alignment": Preset(("output_projections", "retrieval_projection", "signal_tokens"),
                                {"lm": 1.0, "signal_mse": 1.0, "retrieval": 1.0}),
    "retrieval_alignment": Preset(("input_projections", "retrieval_projection", "signal_tokens"),
                                  {"lm": 1.0, "retrieval": 1.0}),
    "instruction_tuning": Preset(("lora", "input_projections", "output_projections", "retrieval_projection",
                                  "new_tokens"), {"lm": 1.0, "signal_mse": 1.0, "retrieval": 1.0}),
    "language_modeling": Preset(("llm",), {"lm": 1.0}),
    "unit_adaptation": Preset(("unit_tokens",), {"lm": 1.0}),
    "cross_modal_sft": Preset(("unit_tokens", "lora"), {"lm": 1.0}),
    "chain_of_modality_sft": Preset(("lora",), {"lm": 1.0}),
}


class Stage(nn.Module):
    """The Trainer's contract. ``setup`` freezes the model, unfreezes what trains and creates the stage's own
    parameters (as submodules, so they are checkpointed and synchronised like the model's); ``forward``
    returns the loss of one micro-batch and its terms (for logs); ``finish`` runs once before the bundle
    is written."""

    name = "stage"
    trains: tuple[str, ...] = ()  # the PARTS it trains; "llm" makes the Trainer save the LLM's weights in the bundle

    def setup(self, model: AnyModalModel, device: torch.device) -> None:
        raise NotImplementedError

    def forward(self, model: AnyModalModel, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def finish(self, model: AnyModalModel) -> None:
        pass


class ModelStage(Stage):
    """A preset (or any mix of ``PARTS`` and ``LOSSES``) over the model's own forward."""

    def __init__(self, config: StageConfig):
        super().__init__()
        if config.name not in PRESETS:
            raise ConfigError(f"stage.name {config.name!r} is unknown; use one of {sorted(PRESETS)}")
        preset = PRESETS[config.name]
        self.name = config.name
        self.trains = tuple(preset.trains if config.trains is None else config.trains)
        unknown = sorted(set(self.trains) - set(PARTS))
        if unknown:
            raise ConfigError(f"stage.trains names {unknown}, which are not parts; use any of {list(PARTS)}")
        given = {k: getattr(config.losses, k) for k in LOSSES}
        self.weights = {k: preset.losses.get(k, 0.0) if v is None else float(v) for k, v in given.items()}
        if not any(self.weights.values()):
            raise ConfigError("every stage.losses weight is 0: nothing would train")
        self.config = config
        self.token_rows: TrainableTokenRows | None = None
        self.logit_scale: LogitScale | None = None
        self._target_encoders: dict[Modality, nn.Module] = {}  # embed [RET] targets; frozen, not ours
        self._target_encoder = None  # the recipe's explicit retrieval_encoder, loaded in setup

    def setup(self, model: AnyModalModel, device: torch.device) -> None:
        model.requires_grad_(False)
        row_ids: set[int] = set()
        for part in self.trains:
            if part == "input_projections":
                model.input_projections.requires_grad_(True)
            elif part == "output_projections":
                model.output_projections.requires_grad_(True)
            elif part == "retrieval_projection" and model.retrieval_projection is not None:
                model.retrieval_projection.requires_grad_(True)
            elif part == "lora":
                if not isinstance(model.llm, PeftModel):
                    raise ConfigError("stage.trains has lora but the model has no LoRA adapter; set "
                                      "model.llm.lora.enabled: true (or start from a bundle that has one)")
                for name, param in model.llm.named_parameters():
                    if "lora_" in name:
                        param.requires_grad_(True)
            elif part == "llm":
                if isinstance(model.llm, PeftModel):
                    raise ConfigError("stage.trains has llm (every LLM weight) but the model has a LoRA adapter; "
                                      "set model.llm.lora.enabled: false to train the whole LLM")
                model.llm.requires_grad_(True)
            elif part in TOKEN_PARTS:
                row_ids |= token_part_ids(model.protocol, part)
        if row_ids:
            base = model.llm.get_base_model() if isinstance(model.llm, PeftModel) else model.llm
            self.token_rows = TrainableTokenRows(base, sorted(row_ids)).to(device)
        if self.weights["signal_mse"]:
            for modality in model.config.decoders:
                decoder = model.decoder(modality)
                if hasattr(decoder, "to"):
                    decoder.to(device)
        if self.weights["retrieval"] and model.retrieval_projection is not None:
            self.logit_scale = LogitScale(self.config.temperature, self.config.learn_temperature).to(device)
            encoder = self.config.retrieval_encoder
            if encoder is not None:
                loaded = registry.resolve("encoders", encoder.name).from_pretrained(encoder.name_or_path, **encoder.options)
                self._target_encoder = loaded.requires_grad_(False).to(device) if isinstance(loaded, nn.Module) else loaded

    def forward(self, model: AnyModalModel, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(batch.batch)
        terms: dict[str, torch.Tensor] = {}
        if self.weights["lm"]:
            terms["lm"] = out.loss
        if self.weights["signal_mse"]:
            mse = [self._signal_mse(model, m, out.signal_hidden[m], captions) for m, captions in batch.captions.items()]
            mse = [t for t in mse if t is not None]
            if mse:
                terms["signal_mse"] = torch.stack(mse).mean()
        if self.weights["retrieval"] and self.logit_scale is not None and batch.retrieval_targets:
            queries = model.retrieval_projection(out.retrieval_hidden[:, None])  # [n, dim]
            targets = self._embed_targets(model, batch.retrieval_targets).to(queries.device)  # [n, dim]
            terms["retrieval"] = info_nce(queries, targets, self.logit_scale())
        # `+ 0 * logits.sum()` keeps a graph when a batch has no weighted term (every rank must run backward)
        loss = sum(self.weights[k] * v for k, v in terms.items()) + 0.0 * out.logits.sum()
        return loss, {k: v.detach() for k, v in terms.items()}

    def finish(self, model: AnyModalModel) -> None:
        if self.token_rows is not None:
            self.token_rows.write_back()

    # ---------------------------------------------------------------------------------- targets
    def _signal_mse(self, model: AnyModalModel, modality: Modality, hidden: torch.Tensor,
                    captions: list[str]) -> torch.Tensor | None:
        """MSE over the blocks that have a caption; ``hidden`` [n, k, D] in the order of ``captions``."""
        if len(captions) != hidden.shape[0]:
            raise TokenProtocolError(f"{hidden.shape[0]} {modality.value} signal blocks but {len(captions)} output parts; "
                              f"write signal tokens only through typed output parts")
        keep = [i for i, caption in enumerate(captions) if caption]
        if not keep:
            return None
        predicted = model.output_projections[modality.value](hidden[keep])  # [n', *condition_shape]
        target = model.decoder(modality).encode_text([captions[i] for i in keep]).clone()  # out of inference mode
        return signal_mse(predicted, target.to(predicted.device))

    @torch.no_grad()
    def _embed_targets(self, model: AnyModalModel, items: list[Media]) -> torch.Tensor:
        """[n, dim] embeddings of the [RET] targets in the index's space, in order (grouped by modality)."""
        out: list[torch.Tensor | None] = [None] * len(items)
        for modality in {item.modality for item in items}:
            rows = [i for i, item in enumerate(items) if item.modality == modality]
            encoder = self._target_encoder_for(model, modality)
            media = encoder.preprocess([items[i] for i in rows]).to(model.device)
            embeds = encoder.encode(media).clone()[:, 0]  # [n_m, dim]: pooled encoders give T = 1
            for row, embed in zip(rows, embeds):
                out[row] = embed
        return torch.stack(out)

    def _target_encoder_for(self, model: AnyModalModel, modality: Modality):
        if self._target_encoder is not None:
            return self._target_encoder
        if modality not in self._target_encoders:
            self._target_encoders[modality] = _own_encoder_for_retrieval(model, modality)
        return self._target_encoders[modality]


def token_part_ids(protocol: TokenProtocol, part: str) -> set[int]:
    """The token ids a ``TOKEN_PARTS`` part trains, read from the protocol's own groups (placeholders are in
    neither: media features replace them)."""
    signals = {i for m in protocol.signal_counts for i in protocol.block_ids(m)}
    signals |= {protocol.ret_id} if protocol.retrieval else set()
    units = set(protocol.unit_ids(list(range(protocol.num_units)))) if protocol.num_units else set()
    return {"signal_tokens": signals, "unit_tokens": units, "new_tokens": signals | units}[part]


def _own_encoder_for_retrieval(model: AnyModalModel, modality: Modality):
    """The model's own encoder embeds [RET] targets when it is the index's encoder, pooled and as wide."""
    config = model.config.encoders.get(modality.value)
    index_encoder = getattr(model.retriever, "encoder", None)  # IndexRetriever records it
    encoder = model.encoders[modality.value] if config is not None else None
    fits = (encoder is not None and encoder.tokens_per_item == 1 and encoder.embed_dim == model.config.retrieval.dim
            and index_encoder in (None, config.name))
    if not fits:
        raise ConfigError(f"cannot embed {modality.value} [RET] targets in the index's space with the model's own "
                          f"encoder (the index was built with {index_encoder!r}, {model.config.retrieval.dim}-d); set "
                          f"stage.retrieval_encoder to the encoder the index was built with")
    return encoder
