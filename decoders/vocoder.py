"""Discrete speech units -> waveform: the unit HiFi-GAN of speech resynthesis / SpeechGPT, run by transformers'
``SeamlessM4TCodeHifiGan`` (unit embedding -> duration predictor -> HiFi-GAN generator, 16 kHz).

Two folder layouts load:
  - transformers: ``config.json`` (model_type seamless_m4t) + ``model.safetensors``, as ``save_pretrained`` writes;
  - fairseq unit HiFi-GAN, as SpeechGPT publishes it (fairseq's ``CodeHiFiGANVocoder``): ``config.json``
    (``num_embeddings``, ``embedding_dim``, ``upsample_rates``, ``dur_predictor_params``, ...) + a generator
    checkpoint (``g_00500000`` or ``vocoder.pt``) holding ``{"generator": state_dict}`` with weight-normed convs.
    Its keys map one to one onto the transformers module (see ``_fairseq_state_dict``); f0-conditioned and
    speaker-embedder (d-vector) vocoders have parts the transformers module lacks and are refused.
"""

from __future__ import annotations

import json
import math
import operator
import re
from pathlib import Path
from typing import Any

import torch
from transformers import SeamlessM4TConfig
from transformers.models.seamless_m4t.modeling_seamless_m4t import SeamlessM4TCodeHifiGan

from anymodal.errors import CheckpointError, ConfigError, TokenProtocolError
from anymodal.media import Audio, Modality, Units

from .options import merge_spec, parse_dtype

TINY_VOCODER = {
    "num_units": 50,  # k-means clusters of the speech tokenizer (1000 for SpeechGPT's mHuBERT units)
    "embed_dim": 16,  # unit embedding width (128 in the fairseq vocoders)
    "upsample_initial_channel": 32,
    "upsample_rates": [5, 4, 4, 2, 2],  # 320 samples per unit frame: HuBERT's 20 ms at 16 kHz
    "upsample_kernel_sizes": [11, 8, 8, 4, 4],
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3]],
    "num_speakers": 1,  # > 1: a speaker table as wide as the unit embedding (fairseq ``multispkr``)
    "sampling_rate": 16000,
    "seed": 0,
}
FAIRSEQ_CHECKPOINT_NAMES = ("g_*", "*.pt", "*.pth")


def _config(num_units: int, embed_dim: int, num_speakers: int, **generator: Any) -> SeamlessM4TConfig:
    """Unit ids are 0..num_units-1 and one extra row, ``num_units``, pads batches. No language table
    (width 0); a speaker table only for multi-speaker vocoders."""
    return SeamlessM4TConfig(
        unit_hifi_gan_vocab_size=num_units + 1, t2u_pad_token_id=num_units, vocoder_offset=0,
        unit_embed_dim=embed_dim, lang_embed_dim=0, vocoder_num_langs=1,
        spkr_embed_dim=embed_dim if num_speakers > 1 else 0, vocoder_num_spkrs=num_speakers, **generator)


class UnitVocoder:
    """Speech units -> mono waveforms at the vocoder's rate (16 kHz), a whole batch in one forward pass."""

    modality = Modality.AUDIO

    def __init__(self, model: SeamlessM4TCodeHifiGan):
        self.model = model.eval().requires_grad_(False)
        config = model.config
        self.sample_rate: int = config.sampling_rate
        # units below vocoder_offset are SeamlessM4T's specials; the pad row counts as a unit only when below it
        self.num_units: int = (config.unit_hifi_gan_vocab_size - config.vocoder_offset
                               - (config.t2u_pad_token_id >= config.vocoder_offset))

    @property
    def samples_per_unit(self) -> int:
        """Waveform samples per frame (one unit before duration prediction)."""
        return math.prod(self.model.config.upsample_rates)

    # ---- building, loading, saving -----------------------------------------------------------------

    @classmethod
    def from_config(cls, spec: dict[str, Any] | None = None) -> "UnitVocoder":
        """A tiny random vocoder; ``spec`` overrides ``TINY_VOCODER``."""
        spec = merge_spec(TINY_VOCODER, spec, "tiny unit vocoder")
        torch.manual_seed(spec.pop("seed"))
        return cls(SeamlessM4TCodeHifiGan(_config(**spec)))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, torch_dtype: torch.dtype | str | None = None,
                        device: str | torch.device | None = None, checkpoint: str | None = None) -> "UnitVocoder":
        """A folder in the transformers layout (``save_pretrained``), a hub id of one, or a fairseq unit HiFi-GAN
        folder (``config.json`` + generator checkpoint; ``checkpoint`` names the file when there are several)."""
        path = Path(name_or_path).expanduser()
        config_file = path / "config.json"
        if path.is_dir() and not config_file.is_file():
            raise CheckpointError(f"{path} has no config.json: expected a unit vocoder folder (transformers "
                                  f"save_pretrained, or fairseq's config.json + g_00500000). {_DOWNLOAD_HINT}")
        if path.is_dir() and "model_type" not in _read_json(config_file):
            model = _load_fairseq(path, checkpoint)
        else:
            model = _load_transformers(str(name_or_path))
        model.to(device=device, dtype=parse_dtype(torch_dtype))
        return cls(model)

    def save_pretrained(self, directory: str | Path) -> None:
        """Writes the transformers layout (config.json + model.safetensors)."""
        self.model.save_pretrained(directory)

    # ---- units -> waveforms ---------------------------------------------------------------------------

    @torch.inference_mode()
    def decode_units(self, units: list[list[int]] | list[Units], speaker: int = 0,
                     batched: bool = True) -> list[Audio]:
        """Each unit sequence -> one ``Audio`` ``[1, samples]``; its length follows the predicted durations
        (at least ``samples_per_unit`` per unit). ``batched``: all sequences in one padded forward pass; rows
        shorter than the longest then differ from a one-at-a-time decode in their last ~5 frames (~100 ms),
        as far as HiFi-GAN's receptive field reaches into the padding. ``batched=False`` decodes row by row."""
        ids = self._check_units([u.ids if isinstance(u, Units) else u for u in units])
        if not 0 <= speaker < self.model.config.vocoder_num_spkrs:
            raise ConfigError(f"speaker must be in [0, {self.model.config.vocoder_num_spkrs}), got {speaker}")
        if not batched:
            return [audio for seq in ids for audio in self._forward([seq], speaker)]
        return self._forward(ids, speaker)

    def _forward(self, ids: list[list[int]], speaker: int) -> list[Audio]:
        config, device = self.model.config, self.model.device
        pad = config.t2u_pad_token_id
        input_ids = torch.full((len(ids), max(map(len, ids))), pad, dtype=torch.long)  # [B, T]
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)] = torch.tensor(seq) + config.vocoder_offset
        input_ids = input_ids.to(device)
        speakers = torch.full((len(ids), 1), speaker, dtype=torch.long, device=device)  # [B, 1]
        languages = torch.zeros_like(speakers)
        waveforms, _ = self.model(input_ids, spkr_id=speakers, lang_id=languages)  # [B, N_max]
        # the model's own lengths count one pad unit into short rows, so the frames are counted here from the
        # same durations it predicted (the same batch, hence the same numbers)
        log_durations = self.model.dur_predictor(self.model.unit_embedding(input_ids))  # [B, T]
        durations = torch.clamp(torch.round(torch.expm1(log_durations)).long(), min=1) * (input_ids != pad)
        lengths = self.model._get_output_hifigan_lengths(durations.sum(1))  # [B] samples
        return [Audio(waveform=w[None, :n].float().cpu(), sample_rate=self.sample_rate)
                for w, n in zip(waveforms, lengths.tolist())]

    def _check_units(self, rows: list) -> list[list[int]]:
        """Plain int lists (numpy / torch integers accepted), every id inside the vocoder's codebook."""
        if not rows:
            raise TokenProtocolError("decode_units needs at least one unit sequence")
        ids = []
        for row, seq in enumerate(rows):
            try:
                seq = [operator.index(u) for u in seq]
            except TypeError:
                raise TokenProtocolError(f"unit sequence {row} must hold integer unit ids, got {seq!r:.80}") from None
            if not seq:
                raise TokenProtocolError(f"unit sequence {row} is empty: a <sosp>...<eosp> block needs units")
            ids.append(seq)
            bad = [u for u in seq if not 0 <= u < self.num_units]
            if bad:
                raise TokenProtocolError(f"unit sequence {row} holds ids {bad[:5]} outside this vocoder's "
                                         f"{self.num_units} units (0..{self.num_units - 1}); the speech tokenizer "
                                         f"and the vocoder must share one k-means codebook")
        return ids


_DOWNLOAD_HINT = ("SpeechGPT's vocoder: download fairseq's mHuBERT unit HiFi-GAN (g_00500000 and config.json from "
                  "dl.fbaipublicfiles.com/fairseq/speech_to_speech/vocoder/code_hifigan/"
                  "mhubert_vp_en_es_fr_it3_400k_layer11_km1000_lj/) into one folder and pass that folder")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def _load_transformers(name_or_path: str) -> SeamlessM4TCodeHifiGan:
    try:
        model, info = SeamlessM4TCodeHifiGan.from_pretrained(name_or_path, output_loading_info=True)
    except Exception as e:  # hub / file errors come in many types
        raise CheckpointError(f"cannot load a unit vocoder from {name_or_path!r}: {e}. {_DOWNLOAD_HINT}") from None
    if info["missing_keys"]:  # e.g. a whole SeamlessM4T checkpoint: its vocoder sits under another prefix
        raise CheckpointError(f"{name_or_path!r} lacks vocoder weights {sorted(info['missing_keys'])[:4]}...; "
                              f"it is not a SeamlessM4TCodeHifiGan checkpoint")
    return model


# ---- fairseq unit HiFi-GAN -> transformers -------------------------------------------------------------

def _load_fairseq(folder: Path, checkpoint: str | None) -> SeamlessM4TCodeHifiGan:
    cfg = _read_json(folder / "config.json")
    file = _find_generator(folder, checkpoint)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read the generator checkpoint {file}: {e}") from None
    if not isinstance(state, dict) or "generator" not in state:
        raise CheckpointError(f"{file} holds no 'generator' state dict: not a fairseq unit HiFi-GAN checkpoint")
    config = _fairseq_config(cfg, folder)
    model = SeamlessM4TCodeHifiGan(config)
    try:
        model.load_state_dict(_fairseq_state_dict(state["generator"], cfg), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{file} does not match its config.json: {e}") from None
    return model


def _find_generator(folder: Path, checkpoint: str | None) -> Path:
    if checkpoint is not None:
        file = folder / checkpoint
        if not file.is_file():
            raise CheckpointError(f"no generator checkpoint {file}")
        return file
    found = sorted({p for pattern in FAIRSEQ_CHECKPOINT_NAMES for p in folder.glob(pattern) if p.is_file()})
    if len(found) != 1:
        what = "none" if not found else ", ".join(p.name for p in found)
        raise CheckpointError(f"{folder} needs exactly one generator checkpoint ({' / '.join(FAIRSEQ_CHECKPOINT_NAMES)}), "
                              f"found {what}; pass checkpoint=NAME. {_DOWNLOAD_HINT}")
    return found[0]


def _fairseq_config(cfg: dict[str, Any], folder: Path) -> SeamlessM4TConfig:
    """fairseq's CodeGenerator options -> the transformers config, refusing what has no counterpart."""
    missing = [k for k in ("num_embeddings", "embedding_dim", "upsample_rates", "upsample_kernel_sizes",
                           "upsample_initial_channel", "resblock_kernel_sizes", "resblock_dilation_sizes") if k not in cfg]
    if missing:
        raise CheckpointError(f"{folder / 'config.json'} lacks {missing}: not a fairseq unit HiFi-GAN config")
    if str(cfg.get("resblock", "1")) != "1":
        raise CheckpointError("only HiFi-GAN residual blocks of type 1 map onto the transformers vocoder; this "
                              f"config uses resblock {cfg['resblock']!r}")
    for feature in ("embedder_params", "f0", "f0_quantizer"):
        if cfg.get(feature):
            raise CheckpointError(f"this vocoder is conditioned on {feature!r}, which the transformers unit vocoder "
                                  f"has no input for; use a units-only (optionally multi-speaker) vocoder")
    dim, dur = cfg["embedding_dim"], cfg.get("dur_predictor_params")
    if dur and not (dur.get("encoder_embed_dim") == dur.get("var_pred_hidden_dim") == dim
                    and dur.get("var_pred_kernel_size") == 3):
        raise CheckpointError(f"the duration predictor {dur} does not map: transformers' needs width == embedding_dim "
                              f"({dim}) and kernel size 3")
    return _config(num_units=cfg["num_embeddings"], embed_dim=dim,
                   num_speakers=cfg.get("num_speakers", 200) if cfg.get("multispkr") else 1,
                   upsample_rates=cfg["upsample_rates"], upsample_kernel_sizes=cfg["upsample_kernel_sizes"],
                   upsample_initial_channel=cfg["upsample_initial_channel"],
                   resblock_kernel_sizes=cfg["resblock_kernel_sizes"],
                   resblock_dilation_sizes=cfg["resblock_dilation_sizes"],
                   sampling_rate=cfg.get("sampling_rate", 16000), variance_predictor_kernel_size=3)


# fairseq key -> transformers key; weight-normed convs are folded first (weight_g/weight_v -> weight)
_FAIRSEQ_KEYS = [
    (r"^dict\.", "unit_embedding."),
    (r"^spkr\.", "speaker_embedding."),
    (r"^dur_predictor\.(conv[12])\.0\.", r"dur_predictor.\1."),  # nn.Sequential(Conv1d, ReLU) -> Conv1d
    (r"^dur_predictor\.", "dur_predictor."),
    (r"^conv_pre\.", "hifi_gan.conv_pre."),
    (r"^ups\.", "hifi_gan.upsampler."),
    (r"^resblocks\.", "hifi_gan.resblocks."),
    (r"^conv_post\.", "hifi_gan.conv_post."),
]


def _fairseq_state_dict(generator: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = _fold_weight_norm(generator)
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for pattern, replacement in _FAIRSEQ_KEYS:
            if re.match(pattern, key):
                mapped[re.sub(pattern, replacement, key)] = tensor
                break
        else:
            raise CheckpointError(f"fairseq generator key {key!r} has no counterpart in the transformers vocoder")
    # the extra pad row (zeros: it only ever fills batch padding, which is cut off)
    units = mapped["unit_embedding.weight"]  # [num_units, dim]
    mapped["unit_embedding.weight"] = torch.cat([units, units.new_zeros(1, units.shape[1])])
    mapped["language_embedding.weight"] = units.new_zeros(1, 0)  # no language table
    if not cfg.get("multispkr"):
        mapped["speaker_embedding.weight"] = units.new_zeros(1, 0)
    if not cfg.get("dur_predictor_params"):
        # no duration predictor: every unit lasts one frame. A zero projection with bias log(2) predicts
        # round(expm1(log 2)) = 1 frame for every unit, which is exactly that
        dim = units.shape[1]
        mapped.update({
            "dur_predictor.conv1.weight": units.new_zeros(dim, dim, 3), "dur_predictor.conv1.bias": units.new_zeros(dim),
            "dur_predictor.conv2.weight": units.new_zeros(dim, dim, 3), "dur_predictor.conv2.bias": units.new_zeros(dim),
            "dur_predictor.ln1.weight": units.new_ones(dim), "dur_predictor.ln1.bias": units.new_zeros(dim),
            "dur_predictor.ln2.weight": units.new_ones(dim), "dur_predictor.ln2.bias": units.new_zeros(dim),
            "dur_predictor.proj.weight": units.new_zeros(1, dim),
            "dur_predictor.proj.bias": units.new_full((1,), math.log(2.0)),
        })
    return mapped


def _fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weight = g * v / ||v||`` (norm over all but dim 0, torch's weight_norm default), for both the old
    ``weight_g``/``weight_v`` keys and the ``parametrizations.weight.original0/1`` keys of newer torch."""
    folded, pairs = {}, {}
    for key, tensor in state.items():
        match = re.match(r"^(.*)\.(?:weight_(g|v)|parametrizations\.weight\.original([01]))$", key)
        if match:
            part = match.group(2) or ("g" if match.group(3) == "0" else "v")
            pairs.setdefault(match.group(1), {})[part] = tensor.float()
        else:
            folded[key] = tensor.float()
    for prefix, p in pairs.items():
        if set(p) != {"g", "v"}:
            raise CheckpointError(f"weight-normed {prefix!r} lacks its {'g' if 'v' in p else 'v'} half")
        norm = p["v"].norm(dim=tuple(range(1, p["v"].ndim)), keepdim=True)
        folded[f"{prefix}.weight"] = p["g"] * p["v"] / norm
    return folded
