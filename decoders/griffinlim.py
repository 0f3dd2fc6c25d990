"""A training-free unit vocoder: each unit's mean magnitude spectrum, held for the unit's mean duration,
turned into a waveform by Griffin-Lim phase recovery (``torchaudio.transforms.GriffinLim``).

Built in seconds from paired data (waveforms + their per-frame units, e.g. ``LogMelUnitizer.frame_units``);
good for small unit sets (the toy world's 32 units) where a learned HiFi-GAN would take many minutes to train.
Same interface as ``decoders.vocoder.UnitVocoder``: ``decode_units(list[list[int]]) -> list[Audio]``.

On disk (``save_pretrained(dir)`` / ``from_pretrained(dir)``)::

    dir/griffinlim.json        {"num_units", "sample_rate", "n_fft", "hop_length", "n_iter"}
    dir/spectra.safetensors    spectra [K, n_fft // 2 + 1] (mean magnitudes), durations [K] (mean frames per run)
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import torch
import torchaudio
from safetensors.torch import load_file, save_file

from anymodal.errors import CheckpointError, ConfigError, TokenProtocolError
from anymodal.media import Audio, Modality, Units

log = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE = "griffinlim.json", "spectra.safetensors"


class GriffinLimVocoder:
    """Units -> mono waveforms at ``sample_rate``; ``spectra`` [K, F] mean magnitudes, ``durations`` [K] frames."""

    modality = Modality.AUDIO

    def __init__(self, spectra: torch.Tensor, durations: torch.Tensor, sample_rate: int = 16_000,
                 n_fft: int = 512, hop_length: int = 320, n_iter: int = 32):
        if spectra.ndim != 2 or spectra.shape[1] != n_fft // 2 + 1 or durations.shape != (spectra.shape[0],):
            raise CheckpointError(f"Griffin-Lim spectra {tuple(spectra.shape)} / durations {tuple(durations.shape)} do "
                                  f"not fit n_fft={n_fft} ([K, {n_fft // 2 + 1}] and [K]); build the vocoder again")
        self.spectra = spectra.float()  # [K, F]
        self.durations = durations.float()  # [K]
        self.sample_rate, self.n_fft, self.hop_length, self.n_iter = sample_rate, n_fft, hop_length, n_iter
        self.griffin_lim = torchaudio.transforms.GriffinLim(n_fft=n_fft, hop_length=hop_length, power=1.0,
                                                            n_iter=n_iter, rand_init=False)

    @property
    def num_units(self) -> int:
        return self.spectra.shape[0]

    # ---- building, loading, saving -----------------------------------------------------------------

    @classmethod
    def fit(cls, clips: list[Audio], frame_units: list[torch.Tensor], num_units: int, n_fft: int = 512,
            hop_length: int = 320, n_iter: int = 32) -> "GriffinLimVocoder":
        """Average each unit's STFT magnitude over its frames and its run length over its runs.

        ``frame_units[i]`` [T_i] gives one unit per ``hop_length`` samples of ``clips[i]`` (mono, one rate),
        centred frames as torchaudio's mel and STFT make them. Units never seen stay silent."""
        if len(clips) != len(frame_units) or not clips:
            raise ConfigError(f"fit needs one frame-unit sequence per clip, got {len(clips)} clips and "
                              f"{len(frame_units)} sequences")
        rates = {clip.sample_rate for clip in clips}
        if len(rates) != 1:
            raise ConfigError(f"fit needs clips at one sample rate, got {sorted(rates)}; resample them first")
        sums = torch.zeros(num_units, n_fft // 2 + 1)  # [K, F]
        frames = torch.zeros(num_units)  # [K]
        runs = torch.zeros(num_units)  # [K]
        window = torch.hann_window(n_fft)
        for clip, units in zip(clips, frame_units):
            magnitude = torch.stft(clip.waveform.mean(0), n_fft, hop_length, window=window,
                                   return_complex=True).abs().T  # [T, F]
            if magnitude.shape[0] != len(units):
                raise ConfigError(f"{clip.source or 'a clip'} has {magnitude.shape[0]} STFT frames at hop {hop_length} "
                                  f"but {len(units)} frame units; make units with the same hop length")
            units = units.long()
            sums.index_add_(0, units, magnitude)
            frames += torch.bincount(units, minlength=num_units).float()
            for unit, _ in itertools.groupby(units.tolist()):
                runs[unit] += 1
        unseen = (frames == 0).nonzero().flatten().tolist()
        if unseen:
            log.warning("units %s never occur in the data; the vocoder will keep them silent", unseen[:10])
        spectra = sums / frames.clamp(min=1)[:, None]
        durations = torch.where(runs > 0, frames / runs.clamp(min=1), torch.ones_like(frames))
        return cls(spectra, durations, rates.pop(), n_fft, hop_length, n_iter)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"spectra": self.spectra.contiguous(), "durations": self.durations.contiguous()},
                  directory / WEIGHTS_FILE)
        config = {"num_units": self.num_units, "sample_rate": self.sample_rate, "n_fft": self.n_fft,
                  "hop_length": self.hop_length, "n_iter": self.n_iter}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, n_iter: int | None = None) -> "GriffinLimVocoder":
        """A folder written by ``save_pretrained``; ``n_iter`` overrides the saved Griffin-Lim iterations."""
        directory = Path(name_or_path)
        try:
            config = json.loads((directory / CONFIG_FILE).read_text())
            tensors = load_file(directory / WEIGHTS_FILE)
        except Exception as e:  # missing files, bad JSON, bad safetensors
            raise CheckpointError(f"{directory}: not a Griffin-Lim vocoder folder ({e}); it needs {CONFIG_FILE} and "
                                  f"{WEIGHTS_FILE}, as GriffinLimVocoder.fit(...).save_pretrained(dir) "
                                  f"writes") from None
        if "spectra" not in tensors or "durations" not in tensors:
            raise CheckpointError(f"{directory / WEIGHTS_FILE} lacks spectra or durations; build the vocoder again")
        return cls(tensors["spectra"], tensors["durations"], config.get("sample_rate", 16_000),
                   config.get("n_fft", 512), config.get("hop_length", 320), n_iter or config.get("n_iter", 32))

    # ---- units -> waveforms ---------------------------------------------------------------------------

    @torch.inference_mode()
    def decode_units(self, units: list[list[int]] | list[Units]) -> list[Audio]:
        """Each unit sequence -> one ``Audio`` [1, T * hop_length]: ``round(mean duration)`` frames per unit."""
        ids = [list(u.ids) if isinstance(u, Units) else list(u) for u in units]
        if not ids:
            raise TokenProtocolError("decode_units needs at least one unit sequence")
        out = []
        for row, seq in enumerate(ids):
            bad = [u for u in seq if not isinstance(u, int) or not 0 <= u < self.num_units]
            if not seq or bad:
                raise TokenProtocolError(f"unit sequence {row} is empty or holds ids {bad[:5]} outside this vocoder's "
                                         f"{self.num_units} units; the unitizer and the vocoder must share one codebook")
            repeats = self.durations[seq].round().clamp(min=1).long()  # [U] frames per unit
            magnitude = self.spectra[seq].repeat_interleave(repeats, dim=0)  # [T, F]
            # one silent frame closes the clip: T frames then give exactly T hops of samples (istft's centred
            # frames give (frames - 1) hops), and a single-unit answer still has the two frames istft needs
            magnitude = torch.cat([magnitude, magnitude.new_zeros(1, magnitude.shape[1])])  # [T + 1, F]
            waveform = self.griffin_lim(magnitude.T)  # [N] = T * hop_length
            peak = waveform.abs().max().clamp(min=1e-8)
            out.append(Audio(waveform=(0.9 * waveform / peak)[None], sample_rate=self.sample_rate))
        return out
