"""AnyModalModel: encoders -> input projections -> LoRA LLM -> signal tokens -> decoders / retrieval.

forward(batch)        LM loss over answer tokens + hidden states at signal tokens (for alignment losses)
generate(turn)        one answer as ordered parts: text, generated media, retrieved items, speech units
save_pretrained(dir)  the bundle of bundle.py;  from_pretrained(dir) loads and verifies it
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LogitsProcessorList, TextIteratorStreamer

from . import bundle, config as cfg, registry
from .errors import CheckpointError, ConfigError, TokenProtocolError
from .interfaces import Decoder, DispatchListener, Encoder, Retriever
from .llm import load_llm, load_tokenizer, set_token_rows, token_rows
from .media import Media, Modality, Part, Response, Turn, Units
from .processor import Batch, Processor
from .projection import InputProjection, OutputProjection
from .tokens import RET, RetrievalSegment, SignalSegment, TextSegment, TokenProtocol, UnitSegment, units_text


@dataclass
class AnyModalOutput:
    loss: torch.Tensor | None  # LM loss over answer tokens
    logits: torch.Tensor  # [B, L, V]
    signal_hidden: dict[Modality, torch.Tensor]  # per output modality [n_blocks, k, D_llm], row-major order
    retrieval_hidden: torch.Tensor | None  # [n_ret, D_llm]


class AnyModalModel(nn.Module):
    def __init__(self, config: cfg.ModelConfig, llm, tokenizer, protocol: TokenProtocol,
                 encoders: dict[Modality, Encoder], decoders: dict[Modality, Decoder] | None = None,
                 retriever: Retriever | None = None, bundle_dir: Path | None = None):
        super().__init__()
        self.config, self.llm, self.tokenizer, self.protocol = config, llm, tokenizer, protocol
        self.bundle_dir = bundle_dir
        d_llm = llm.get_input_embeddings().embedding_dim
        _check_frames_through(config, encoders)
        self.encoders = nn.ModuleDict({m.value: e for m, e in encoders.items()})
        self.input_projections = nn.ModuleDict({
            m.value: InputProjection(e.embed_dim, d_llm, config.encoders[m.value].projection) for m, e in encoders.items()})
        self.output_projections = nn.ModuleDict({
            m: OutputProjection(d_llm, tuple(d.condition_shape), d.projection) for m, d in config.decoders.items()})
        self.retrieval_projection = (OutputProjection(d_llm, (config.retrieval.dim,), config.retrieval.projection)
                                     if config.retrieval.enabled else None)
        self.processor = Processor(tokenizer, protocol, {m: self._llm_tokens_per_item(m) for m in encoders}, config.prompt)
        self._decoders: dict[Modality, Decoder] = dict(decoders or {})  # built once, on first use
        self._retriever = retriever

    # --------------------------------------------------------------------------------- building
    @classmethod
    def from_config(cls, config: cfg.ModelConfig | dict | str | Path, overrides: list[str] | None = None,
                    bundle_dir: Path | None = None) -> "AnyModalModel":
        """Build from pretrained parts: fresh projections, fresh LoRA adapter, added token rows randomly set."""
        return cls._build(cfg.build(cfg.ModelConfig, config, overrides=overrides), bundle_dir)

    @classmethod
    def _build(cls, config: cfg.ModelConfig, bundle_dir: Path | None = None, saved: bool = False) -> "AnyModalModel":
        def where(path: str | None) -> str | None:
            return _resolve(path, bundle_dir)

        protocol = TokenProtocol({Modality(m): d.num_tokens for m, d in config.decoders.items()},
                                 retrieval=config.retrieval.enabled, num_units=config.speech_units)
        tokenizer_src = str(bundle_dir / "tokenizer") if saved else where(config.llm.tokenizer or config.llm.name_or_path)
        tokenizer = load_tokenizer(tokenizer_src, protocol)
        llm = load_llm(config.llm, where(config.llm.name_or_path), tokenizer,
                       adapter_dir=bundle_dir / "adapter" if saved and (bundle_dir / "adapter").is_dir() else None)

        encoders: dict[Modality, Encoder] = {}
        shared: dict[tuple, Encoder] = {}  # one ImageBind serves several modalities
        for name, e in config.encoders.items():
            modality = _modality(name, "encoders")
            key = (e.name, where(e.name_or_path), repr(sorted(e.options.items())))
            if key not in shared:
                shared[key] = registry.resolve("encoders", e.name).from_pretrained(where(e.name_or_path), **e.options)
            encoders[modality] = shared[key]
            if encoders[modality].tokens_per_item < 1:
                raise ConfigError(f"the {name} encoder {e.name!r} gives a variable number of tokens per item, which "
                                  f"cannot be spliced at a placeholder; choose a pooled feature in encoders.{name}.options "
                                  f"(e.g. feature: mean for HuBERT)")

        decoders: dict[Modality, Decoder] = {}
        for name, d in config.decoders.items():
            modality = _modality(name, "decoders")
            if not d.condition_shape:  # first build: ask the decoder what it needs
                decoders[modality] = _load_decoder(d, where)
                d.condition_shape = list(decoders[modality].condition_shape)
        retriever = None
        if config.retrieval.enabled and not config.retrieval.dim:
            if not config.retrieval.name_or_path:
                raise ConfigError("retrieval.enabled needs retrieval.dim or retrieval.name_or_path (an index folder)")
            retriever = _load_retriever(config.retrieval, where)
            config.retrieval.dim = retriever.dim
        return cls(config, llm, tokenizer, protocol, encoders, decoders, retriever, bundle_dir)

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    def decoder(self, modality: Modality | str) -> Decoder:
        """The decoder for ``modality``, built on first use and kept."""
        modality = Modality(modality)
        if modality not in self._decoders:
            if modality.value not in self.config.decoders:
                raise ConfigError(f"no {modality.value} decoder configured; configured: {sorted(self.config.decoders)}")
            d = self.config.decoders[modality.value]
            decoder = _load_decoder(d, lambda p: _resolve(p, self.bundle_dir))
            if tuple(decoder.condition_shape) != tuple(d.condition_shape):
                raise ConfigError(f"the {modality.value} decoder at {d.name_or_path} takes conditions of shape "
                                  f"{tuple(decoder.condition_shape)}, but this model's output projection was trained "
                                  f"for {tuple(d.condition_shape)}; use the decoder it was trained with")
            self._decoders[modality] = decoder
        return self._decoders[modality]

    @property
    def retriever(self) -> Retriever | None:
        """The ``[RET]`` index, opened on first use and kept (None when retrieval is off)."""
        if self._retriever is None and self.config.retrieval.enabled:
            retriever = _load_retriever(self.config.retrieval, lambda p: _resolve(p, self.bundle_dir))
            if retriever.dim != self.config.retrieval.dim:
                raise ConfigError(f"the index at {self.config.retrieval.name_or_path} holds {retriever.dim}-d vectors "
                                  f"but the retrieval projection gives {self.config.retrieval.dim}-d queries")
            self._retriever = retriever
        return self._retriever

    def attach_retriever(self, retriever: Retriever, name_or_path: str | None = None) -> None:
        """Use ``retriever`` for ``[RET]`` (e.g. an index of the user's own photos)."""
        if retriever.dim != self.config.retrieval.dim:
            raise ConfigError(f"the retriever gives {retriever.dim}-d results; this model queries {self.config.retrieval.dim}-d")
        self._retriever = retriever
        if name_or_path is not None:
            self.config.retrieval.name_or_path = name_or_path

    # --------------------------------------------------------------------------------- forward
    def _frames_projection(self, modality: Modality) -> InputProjection | None:
        """The input projection that reads an item's tokens after its first (``frames_through``); None: its own."""
        through = self.config.encoders[modality.value].frames_through
        return None if through is None else self.input_projections[through]

    def _llm_tokens_per_item(self, modality: Modality) -> int:
        tokens, projection = self.encoders[modality.value].tokens_per_item, self.input_projections[modality.value]
        frames = self._frames_projection(modality)
        return tokens * projection.tokens if frames is None else projection.tokens + (tokens - 1) * frames.tokens

    def encode_media(self, modality: Modality, items: list[Media]) -> torch.Tensor:
        """Items of one modality -> projected features [N, T * k, D_llm], k the projection's tokens per encoder
        token (gradients flow into the projections only). With ``frames_through``: [N, k + (T - 1) * k', D_llm],
        the first token through this modality's projection, the rest through the named one's."""
        encoder = self.encoders[modality.value]
        projection = self.input_projections[modality.value]
        batch = encoder.preprocess(items).to(self.device)
        features = encoder.encode(batch).clone()  # [N, T, D_enc]; clone leaves inference mode
        features = features.to(next(projection.parameters()).dtype)
        frames_projection = self._frames_projection(modality)
        if frames_projection is None:
            return projection(features)  # [N, T * k, D_llm]
        return torch.cat([projection(features[:, :1]), frames_projection(features[:, 1:])], dim=1)

    def embed(self, input_ids: torch.Tensor, media: dict[Modality, list[Media]]) -> torch.Tensor:
        """Token embeddings with projected media features written into the placeholder positions."""
        embeds = self.llm.get_input_embeddings()(input_ids)  # [B, L, D]
        for name in self.encoders:
            modality = Modality(name)
            mask = input_ids == self.protocol.placeholder_id(modality)  # [B, L]
            items = media.get(modality, [])
            if not items and not mask.any():
                continue
            features = self.encode_media(modality, items) if items else embeds.new_zeros(0, 1, embeds.shape[-1])
            if int(mask.sum()) != features.shape[0] * features.shape[1]:
                raise TokenProtocolError(f"{int(mask.sum())} {modality.value} placeholder positions but {features.shape[0]} "
                                         f"item(s) x {features.shape[1]} tokens of features; build batches with the Processor")
            embeds = embeds.masked_scatter(mask[..., None], features.to(embeds.dtype))
        return embeds

    def forward(self, batch: Batch) -> AnyModalOutput:
        batch = batch.to(self.device)
        embeds = self.embed(batch.input_ids, batch.media)
        out = self.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask, labels=batch.labels,
                       output_hidden_states=True)
        hidden = out.hidden_states[self.config.llm.signal_hidden_layer]  # [B, L, D]
        signal_hidden = {}
        for name in self.config.decoders:
            modality = Modality(name)
            per_token = [hidden[batch.input_ids == i] for i in self.protocol.block_ids(modality)]  # k x [n, D]
            if len({t.shape[0] for t in per_token}) > 1:
                raise TokenProtocolError(f"the batch holds incomplete {modality.value} signal blocks; each block needs "
                                         f"all of {self.protocol.signal_text(modality)}")
            signal_hidden[modality] = torch.stack(per_token, dim=1)  # [n, k, D]
        ret_id = self.protocol.ret_id
        retrieval_hidden = hidden[batch.input_ids == ret_id] if ret_id is not None else None  # [n, D]
        return AnyModalOutput(out.loss, out.logits, signal_hidden, retrieval_hidden)

    # --------------------------------------------------------------------------------- generation
    def generate(self, conversation: Turn | list[Turn], *, prefill: str = "",
                 listener: DispatchListener | None = None, **generation: Any) -> Response:
        """Answer the last user turn. ``prefill`` forces the answer's start (e.g. ``"[IMG0]"``);
        ``generation`` overrides GenerationConfig fields (max_new_tokens, do_sample, ...)."""
        return self.generate_batch([conversation], prefill=prefill, listener=listener, **generation)[0]

    def answer_turn(self, response: Response) -> Turn:
        """``response`` as the assistant turn the model wrote: text, whole signal blocks for generated media,
        ``[RET]`` for retrieved items, unit spans for speech. Append it to the conversation to go on with a
        multi-turn chat in the form the model was trained on."""
        texts = []
        for part in response.parts:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Units):
                texts.append(units_text(part.ids))
            elif isinstance(part, Media):
                texts.append(self.protocol.signal_text(part.modality))
            else:
                texts.append(RET)
        return Turn(" ".join(t.strip() for t in texts if t.strip()), role="assistant")

    def generate_batch(self, conversations: list[Turn | list[Turn]], *, prefill: str = "",
                       listener: DispatchListener | None = None, streamer=None, **generation: Any) -> list[Response]:
        try:
            gen = dataclasses.replace(self.config.generation, **generation)
        except TypeError as e:
            fields = [f.name for f in dataclasses.fields(cfg.GenerationConfig)]
            raise ConfigError(f"unknown generation option ({e}); known: {fields}") from None
        examples = [self.processor.encode([c] if isinstance(c, Turn) else list(c), add_generation_prompt=True,
                                          prefill=prefill) for c in conversations]
        batch = self.processor.collate(examples, padding_side="left").to(self.device)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        with torch.inference_mode():
            embeds = self.embed(batch.input_ids, batch.media)
            processor = self.protocol.logits_processor(gen.max_media_per_answer, [e.prefill_ids for e in examples])
            sampling = dict(temperature=gen.temperature, top_p=gen.top_p) if gen.do_sample else {}
            new_ids = self.llm.generate(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                                        max_new_tokens=gen.max_new_tokens, min_new_tokens=gen.min_new_tokens,
                                        do_sample=gen.do_sample,
                                        logits_processor=LogitsProcessorList([processor]), eos_token_id=eos,
                                        pad_token_id=pad, streamer=streamer, **sampling)  # [B, G]
            answers = []
            for row, e in enumerate(examples):
                ids = new_ids[row].tolist()
                ids = ids[: ids.index(eos)] if eos in ids else ids
                answers.append(e.prefill_ids + ids)
            segments = [self.protocol.parse(a) for a in answers]
            hidden = self._answer_hidden(batch, examples, answers, segments)
            return self._dispatch(answers, segments, hidden, gen, listener)

    def stream(self, conversation: Turn | list[Turn], *, prefill: str = "",
               listener: DispatchListener | None = None, **generation: Any) -> Iterator[Part]:
        """Yield text pieces as they are generated, then each generated media / retrieved / units part."""
        streamer = TextIteratorStreamer(self.tokenizer, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def run():
            try:
                result["response"] = self.generate_batch([conversation], prefill=prefill, listener=listener,
                                                         streamer=streamer, **generation)[0]
            except BaseException as e:  # re-raised in the caller's thread
                result["error"] = e
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        if prefill:
            yield self.tokenizer.decode(self.tokenizer.encode(prefill, add_special_tokens=False), skip_special_tokens=True)
        for text in streamer:
            if text:
                yield text
        thread.join()
        if "error" in result:
            raise result["error"]
        yield from (p for p in result["response"].parts if not isinstance(p, str))

    def _answer_hidden(self, batch: Batch, examples, answers, segments) -> torch.Tensor | None:
        """Hidden states of every answer token [B, A, D], from one forward over prompt + answer; run only
        when the answer holds signals (their last token's state is never computed during generation)."""
        if not any(isinstance(s, (SignalSegment, RetrievalSegment)) for segs in segments for s in segs):
            return None
        width = max(len(a) for a in answers)
        pad = self.tokenizer.pad_token_id
        prompt_ids = batch.input_ids[:, : batch.input_ids.shape[1] - len(examples[0].prefill_ids)]  # one prefill for all rows
        answer_ids = torch.full((len(answers), width), pad, dtype=torch.long, device=self.device)
        answer_mask = torch.zeros_like(answer_ids)
        for r, a in enumerate(answers):
            answer_ids[r, : len(a)] = torch.tensor(a, device=self.device)
            answer_mask[r, : len(a)] = 1
        prompt_mask = batch.attention_mask[:, : prompt_ids.shape[1]]
        ids = torch.cat([prompt_ids, answer_ids], 1)  # [B, P + A]
        mask = torch.cat([prompt_mask, answer_mask], 1)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
        out = self.llm(inputs_embeds=self.embed(ids, batch.media), attention_mask=mask, position_ids=position_ids,
                       output_hidden_states=True)
        return out.hidden_states[self.config.llm.signal_hidden_layer][:, prompt_ids.shape[1]:]  # [B, A, D]

    def _dispatch(self, answers, segments, hidden, gen: cfg.GenerationConfig,
                  listener: DispatchListener | None) -> list[Response]:
        """Run every signal: one decoder call per modality for the whole batch, one index search for all [RET]."""
        requests: dict[Modality, list[tuple[int, int, torch.Tensor]]] = defaultdict(list)
        ret_requests: list[tuple[int, int, torch.Tensor]] = []
        for row, segs in enumerate(segments):
            for j, s in enumerate(segs):
                if isinstance(s, SignalSegment):
                    requests[s.modality].append((row, j, hidden[row, s.positions]))  # [k, D]
                elif isinstance(s, RetrievalSegment):
                    ret_requests.append((row, j, hidden[row, s.position]))  # [D]
        filled: dict[tuple[int, int], list[Part]] = {}
        for modality, reqs in requests.items():
            signal_hidden = torch.stack([h for _, _, h in reqs])  # [n, k, D]
            projection = self.output_projections[modality.value]
            condition = projection(signal_hidden.to(next(projection.parameters()).dtype))  # [n, *condition_shape]
            options = dict(self.config.decoders[modality.value].decode_options)
            items = _traced(listener, f"decode_{modality.value}", {"signals": len(reqs), **options},
                            lambda: self.decoder(modality).decode(condition, **options))
            for (row, j, _), item in zip(reqs, items):
                filled[(row, j)] = [item]
        if ret_requests:
            if self.retriever is None:
                raise ConfigError("the answer holds [RET] but no index is attached; set retrieval.name_or_path "
                                  "or call attach_retriever()")
            queries = self.retrieval_projection(torch.stack([h for _, _, h in ret_requests])[:, None].float())  # [n, dim]
            found = _traced(listener, "retrieve", {"queries": len(ret_requests), "k": gen.retrieval_k},
                            lambda: self.retriever.search(queries, gen.retrieval_k))
            for (row, j, _), items in zip(ret_requests, found):
                filled[(row, j)] = list(items)

        responses = []
        for row, segs in enumerate(segments):
            parts: list[Part] = []
            for j, s in enumerate(segs):
                if isinstance(s, TextSegment):
                    text = self.tokenizer.decode(s.ids, skip_special_tokens=True)
                    if text:
                        parts.append(text)
                elif isinstance(s, UnitSegment):
                    parts.append(Units(s.units))
                else:
                    parts.extend(filled[(row, j)])
            responses.append(Response(parts, token_ids=answers[row]))
        return responses

    # --------------------------------------------------------------------------------- bundle
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Projections (the state the bundle's projections.safetensors holds)."""
        state = {f"input_projections.{k}": v for k, v in self.input_projections.state_dict().items()}
        state.update({f"output_projections.{k}": v for k, v in self.output_projections.state_dict().items()})
        if self.retrieval_projection is not None:
            state.update({f"retrieval_projection.{k}": v for k, v in self.retrieval_projection.state_dict().items()})
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def save_pretrained(self, directory: str | Path, pack: list[str] | tuple[str, ...] = (),
                        llm_weights: bool = False) -> Path:
        """Write the bundle atomically: a failure part-way leaves any previous bundle at ``directory`` intact.

        ``llm_weights`` also writes the LLM itself (``llm/`` inside the bundle, which the saved config then names):
        for stages that trained its weights, not only LoRA and new rows.

        ``pack`` names config keys of local components to copy into the bundle so that it travels whole, e.g.
        ``["speech.unitizer", "speech.vocoder", "retrieval.name_or_path"]``; the saved config then names them
        by their path inside the bundle. Components already inside the bundle always travel with it."""
        config, packed = self.config, {}
        for key in pack:
            source = _resolve(cfg.select(config, key), self.bundle_dir)
            if not source or not Path(source).exists():
                raise ConfigError(f"cannot pack {key}: {source!r} is not a local file or folder; pack only components "
                                  f"that are on disk (hub ids are downloaded by whoever loads the bundle)")
            source = Path(source).resolve()
            same = [t for t, s in packed.items() if s == source]  # e.g. one ImageBind serving three modalities
            suffix = source.suffix if source.is_file() else ""
            target = same[0] if same else f"components/{key.replace('.', '_')}{suffix}"
            packed[target] = source
            config = cfg.replace(config, key, target)
        if llm_weights:
            if isinstance(self.llm, PeftModel):
                raise ConfigError("llm_weights saves a plain LLM; this one has a LoRA adapter (save the adapter instead)")
            config = cfg.replace(config, "llm.name_or_path", "llm")

        def fill(tmp: Path) -> dict:
            for path in self._relative_component_paths():
                _copy(self.bundle_dir / path, tmp / path)
            for target, source in packed.items():
                _copy(source, tmp / target)
            cfg.save_yaml(config, tmp / "anymodal.yaml")
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            if llm_weights:
                self.llm.save_pretrained(tmp / "llm")
            if isinstance(self.llm, PeftModel):
                self.llm.save_pretrained(tmp / "adapter", save_embedding_layers=False)  # new rows: new_tokens.safetensors
            save_file(self.trainable_state(), tmp / "projections.safetensors")
            ids = list(self.protocol.ids.values())
            rows = token_rows(self.llm.get_base_model() if isinstance(self.llm, PeftModel) else self.llm, ids)
            rows["ids"] = torch.tensor(ids, dtype=torch.long)
            save_file({k: v.cpu().contiguous() for k, v in rows.items()}, tmp / "new_tokens.safetensors")
            return self._components(config)

        return bundle.write_atomically(directory, fill)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "AnyModalModel":
        """Load a bundle written by ``save_pretrained``, verifying every file against the manifest."""
        directory = Path(directory).resolve()
        bundle.verify(directory)
        config = cfg.build(cfg.ModelConfig, directory / "anymodal.yaml")
        model = cls._build(config, bundle_dir=directory, saved=True)
        model.load_state_dict_parts(load_file(directory / "projections.safetensors"))
        rows = load_file(directory / "new_tokens.safetensors")
        base = model.llm.get_base_model() if isinstance(model.llm, PeftModel) else model.llm
        set_token_rows(base, rows.pop("ids").tolist(), rows)
        return model.eval()

    def load_state_dict_parts(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.trainable_state()) - set(state)
        unexpected = set(state) - set(self.trainable_state())
        if missing or unexpected:
            raise CheckpointError(f"projection weights do not fit this config: missing {sorted(missing)[:5]}, "
                                  f"unexpected {sorted(unexpected)[:5]}")
        for prefix, module in (("input_projections.", self.input_projections),
                               ("output_projections.", self.output_projections),
                               ("retrieval_projection.", self.retrieval_projection)):
            if module is not None:
                module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def _components(self, c: cfg.ModelConfig) -> dict:
        return {"llm": c.llm.name_or_path, "tokenizer": "tokenizer",
                "adapter": "adapter" if isinstance(self.llm, PeftModel) else None,
                "encoders": {m: {"name": e.name, "name_or_path": e.name_or_path} for m, e in c.encoders.items()},
                "decoders": {m: {"name": d.name, "name_or_path": d.name_or_path, "condition_shape": d.condition_shape}
                             for m, d in c.decoders.items()},
                "retrieval": {"name": c.retrieval.name, "name_or_path": c.retrieval.name_or_path} if c.retrieval.enabled else None,
                "quantization": cfg.to_dict(c.llm.quantization) if c.llm.quantization.scheme != "none" else None}

    def _relative_component_paths(self) -> list[str]:
        """Component paths the config names inside the current bundle: they travel with the bundle."""
        c = self.config
        paths = [c.llm.name_or_path, c.llm.tokenizer, c.retrieval.name_or_path, c.speech.unitizer, c.speech.vocoder]
        paths += [e.name_or_path for e in c.encoders.values()] + [d.name_or_path for d in c.decoders.values()]
        return sorted({p for p in paths if p and self.bundle_dir and not Path(p).is_absolute()
                       and (self.bundle_dir / p).exists()})


# ------------------------------------------------------------------------------------- helpers
def _resolve(path: str | None, bundle_dir: Path | None) -> str | None:
    """A component path relative to the bundle if it exists there, else as given (hub id or path)."""
    if path and bundle_dir is not None and not Path(path).is_absolute() and (bundle_dir / path).exists():
        return str(bundle_dir / path)
    return path


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def _modality(name: str, kind: str) -> Modality:
    try:
        return Modality(name)
    except ValueError:
        raise ConfigError(f"{kind} are keyed by modality; {name!r} is not one of "
                          f"{[m.value for m in Modality if m != Modality.TEXT]}") from None


def _check_frames_through(config: cfg.ModelConfig, encoders: dict[Modality, Encoder]) -> None:
    for modality, encoder in encoders.items():
        through = config.encoders[modality.value].frames_through
        if through is None:
            continue
        key = f"encoders.{modality.value}.frames_through"
        if through == modality.value or through not in config.encoders:
            others = sorted(set(config.encoders) - {modality.value})
            raise ConfigError(f"{key} names the modality whose input projection reads the tokens after an item's "
                              f"first; got {through!r}, the other configured encoders are {others}")
        if encoder.tokens_per_item < 2:
            raise ConfigError(f"{key}: {through!r} reads the tokens after an item's first, but the {modality.value} "
                              f"encoder gives {encoder.tokens_per_item} per item; give it more (ImageBind: "
                              f"options: {{frame_tokens: N}}) or drop {key}")
        if encoders[Modality(through)].embed_dim != encoder.embed_dim:
            raise ConfigError(f"{key}: the {through} projection takes {encoders[Modality(through)].embed_dim}-d "
                              f"features, the {modality.value} encoder gives {encoder.embed_dim}-d ones")


def _load_decoder(d: cfg.DecoderConfig, where) -> Decoder:
    return registry.resolve("decoders", d.name).from_pretrained(where(d.name_or_path), **d.load_options)


def _load_retriever(r: cfg.RetrievalConfig, where) -> Retriever:
    return registry.resolve("decoders", r.name).from_pretrained(where(r.name_or_path))


def _traced(listener: DispatchListener | None, name: str, inputs: dict, run):
    if listener is None:
        return run()
    handle = listener.on_dispatch_start(name, inputs)
    try:
        result = run()
    except BaseException as e:
        listener.on_dispatch_error(handle, e)
        raise
    listener.on_dispatch_end(handle, {"items": len(result)})
    return result
