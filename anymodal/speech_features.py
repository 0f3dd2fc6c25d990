"""Speech in: checked 16 kHz mono waveforms, and log-mel speech units (HuBERT's own first-iteration targets).

Where no HuBERT model is trained (the toy world), units come from log-mel frames:

    peak-normalise -> 64-bin log-mel every 20 ms -> quiet frames = a dedicated silence unit
    -> k-means (K - 1 clusters) on the speech frames -> 3-frame majority smoothing -> collapse repeats

The k-means itself is ``anymodal.speech_units.UnitQuantizer`` (faiss); this file only makes the frames.
On disk (``save(dir)`` / ``load(dir)``) a unitizer is the quantizer's folder plus ``unitizer.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchaudio

from . import io
from .errors import CheckpointError, ConfigError, MediaError
from .media import Audio
from .speech_units import UnitQuantizer, dedup

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.032  # one 512-sample STFT window at 16 kHz
UNITIZER_FILE = "unitizer.json"


# ------------------------------------------------------------------------------------ checked input
def prepare_speech(audio: Audio, max_seconds: float = 30.0, sample_rate: int = SAMPLE_RATE) -> Audio:
    """Any ``Audio`` -> mono at ``sample_rate``, free of NaN, at most ``max_seconds`` long.

    Stereo is downmixed and other rates resampled (torchaudio.functional.resample); empty, NaN, too short
    (under one 32 ms window) or too long audio is a ``MediaError`` naming the fix."""
    name = audio.source or "the audio"
    waveform = audio.waveform  # [C, N]
    if waveform.numel() == 0:
        raise MediaError(f"{name}: the audio holds no samples; record or export at least a fraction of a second")
    if audio.seconds > max_seconds:
        raise MediaError(f"{name}: {audio.seconds:.1f} s of audio is longer than the {max_seconds:g} s limit; cut it "
                         f"shorter or raise the limit (max_seconds / --max-seconds)")
    if not torch.isfinite(waveform).all():
        raise MediaError(f"{name}: the waveform holds NaN or inf samples; re-export the file")
    mono = waveform.mean(dim=0, keepdim=True)  # [1, N]
    if audio.sample_rate != sample_rate:
        mono = torchaudio.functional.resample(mono, audio.sample_rate, sample_rate)
    if mono.shape[1] < MIN_SECONDS * sample_rate:
        raise MediaError(f"{name}: {audio.seconds * 1000:.1f} ms of audio is shorter than one "
                         f"{MIN_SECONDS * 1000:.0f} ms analysis window; record a longer clip")
    return Audio(mono, sample_rate=sample_rate, source=audio.source)


def read_speech(path: str | Path, max_seconds: float = 30.0, sample_rate: int = SAMPLE_RATE) -> Audio:
    """Read an audio file with soundfile (``anymodal.io.read_audio``) and ``prepare_speech`` it: 8-bit,
    44.1 kHz or stereo files are converted; empty, non-audio or too long files are a ``MediaError``."""
    return prepare_speech(io.read_audio(path), max_seconds=max_seconds, sample_rate=sample_rate)


def read_speech_files(inputs: list[str | Path], max_seconds: float = float("inf")) -> list[Audio]:
    """Every speech file named in ``inputs`` or found under the folders among them, read and checked."""
    from tqdm.auto import tqdm

    files: list[Path] = []
    for item in map(Path, inputs):
        found = sorted(p for p in item.rglob("*") if p.suffix.lower() in io.AUDIO_SUFFIXES) if item.is_dir() else None
        files += found if found is not None else [item]
    if not files:
        raise MediaError(f"no speech files (.wav / .flac / .ogg / .mp3) found in {[str(i) for i in inputs]}")
    return [read_speech(f, max_seconds) for f in tqdm(files, desc="reading speech", unit="file")]


# ------------------------------------------------------------------------------------ log-mel units
@dataclass
class LogMelFeatures:
    """How frames are made; stored with the unitizer so units are never assigned from other features."""

    sample_rate: int = SAMPLE_RATE
    n_mels: int = 64
    n_fft: int = 512
    win_length: int = 400  # 25 ms, as HuBERT's window
    hop_length: int = 320  # 20 ms, as HuBERT's frame rate
    silence_db: float = 35.0  # frames this far below the clip's loudest are silence; 0 = no silence unit
    smoothing: int = 3  # majority window over frame units (1 or 3)
    # > 0: each frame also carries its delta (the log-mel slope over +-deltas frames, torchaudio's compute_deltas),
    # so a unit tells a vowel gliding into a nasal from a nasal opening into the vowel, not only the order of units
    deltas: int = 0

    @property
    def dim(self) -> int:
        """Values per frame: the mel bins, twice with deltas."""
        return self.n_mels * (2 if self.deltas else 1)

    def __post_init__(self):
        if self.smoothing not in (1, 3):
            raise ConfigError(f"smoothing must be 1 (none) or 3 (3-frame majority), got {self.smoothing}")
        if self.deltas < 0:
            raise ConfigError(f"deltas must be >= 0 (0 turns delta features off), got {self.deltas}")
        if self.silence_db < 0:
            raise ConfigError(f"silence_db must be >= 0 (0 turns the silence unit off), got {self.silence_db}")


class LogMelUnitizer:
    """Speech -> unit ids from log-mel frames. With ``silence_db`` > 0, unit ``K - 1`` is silence and
    k-means fits the other ``K - 1`` units on speech frames only."""

    def __init__(self, quantizer: UnitQuantizer, features: LogMelFeatures | None = None):
        self.quantizer = quantizer
        self.features = features or LogMelFeatures()
        f = self.features
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=f.sample_rate, n_fft=f.n_fft,
                                                        win_length=f.win_length, hop_length=f.hop_length,
                                                        n_mels=f.n_mels, power=2.0)

    @property
    def num_units(self) -> int:
        """K: the k-means units plus the silence unit, if any."""
        return self.quantizer.k + (1 if self.silence_unit is not None else 0)

    @property
    def silence_unit(self) -> int | None:
        return self.quantizer.k if self.features.silence_db > 0 else None

    @property
    def hop_length(self) -> int:
        return self.features.hop_length

    # ---------------------------------------------------------------------------------------- frames
    def frames(self, audio: Audio) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel frames [T, n_mels] (dB; [T, 2 * n_mels] with their deltas) and a speech mask [T] (False =
        silence) of one clip."""
        waveform = prepare_speech(audio, max_seconds=float("inf"), sample_rate=self.features.sample_rate).waveform[0]
        peak = waveform.abs().max()
        if peak == 0:
            raise MediaError(f"{audio.source or 'the audio'}: the clip is all zeros (digital silence); there is no "
                             f"speech to turn into units")
        power = self.mel(waveform / peak)  # [n_mels, T]; peak-normalised so loudness does not move units
        log_mel = 10 * torch.log10(power.T + 1e-10)  # [T, n_mels]
        if self.features.deltas:
            slope = torchaudio.functional.compute_deltas(log_mel.T, win_length=2 * self.features.deltas + 1).T
            log_mel = torch.cat([log_mel, slope], dim=1)  # [T, 2 * n_mels]
        energy = 10 * torch.log10(power.sum(0) + 1e-10)  # [T] dB
        speech = energy > energy.max() - self.features.silence_db if self.features.silence_db > 0 \
            else torch.ones_like(energy, dtype=torch.bool)
        return log_mel, speech

    @classmethod
    def fit(cls, clips: list[Audio], num_units: int, features: LogMelFeatures | None = None, seed: int = 0,
            restarts: int = 1) -> "LogMelUnitizer":
        """K-means over the speech frames of ``clips``; ``num_units`` counts the silence unit."""
        features = features or LogMelFeatures()
        unitizer = cls(UnitQuantizer(torch.zeros(1, features.dim).numpy()), features)  # for frames() only
        frames = []
        for clip in clips:
            log_mel, speech = unitizer.frames(clip)
            frames.append(log_mel[speech])
        k = num_units - (1 if features.silence_db > 0 else 0)
        quantizer = UnitQuantizer.fit(torch.cat(frames), k, seed=seed, restarts=restarts, source="log-mel")
        return cls(quantizer, features)

    # ---------------------------------------------------------------------------------------- units
    def frame_units(self, audio: Audio) -> torch.Tensor:
        """One unit per 20 ms frame, LongTensor [T], silence marked and smoothed but not deduplicated."""
        log_mel, speech = self.frames(audio)
        units = self.quantizer.assign(log_mel)  # [T]
        if self.silence_unit is not None:
            units[~speech] = self.silence_unit
        if self.features.smoothing == 3 and len(units) >= 3:
            prev, nxt = units[:-2], units[2:]  # neighbours of frames 1..T-2
            middle = units[1:-1]
            units = torch.cat([units[:1], torch.where(prev == nxt, prev, middle), units[-1:]])  # 2 of 3 agree
        return units

    def units(self, audio: Audio) -> list[int]:
        """One clip -> deduplicated unit ids without leading / trailing silence, e.g. [12, 7, 31, 12]."""
        units = dedup(self.frame_units(audio))
        while units and units[0] == self.silence_unit:
            units.pop(0)
        while units and units[-1] == self.silence_unit:
            units.pop()
        if not units:
            raise MediaError(f"{audio.source or 'the audio'}: no speech found (every frame is below the silence "
                             f"threshold); check the recording")
        return units

    def batch_units(self, clips: list[Audio]) -> list[list[int]]:
        return [self.units(clip) for clip in clips]

    # ---------------------------------------------------------------------------------------- disk
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.quantizer.save(directory)
        meta = {"kind": "log-mel", "num_units": self.num_units, "features": asdict(self.features)}
        (directory / UNITIZER_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "LogMelUnitizer":
        directory = Path(directory)
        meta = read_unitizer_meta(directory)
        try:
            features = LogMelFeatures(**meta["features"])
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{directory / UNITIZER_FILE}: bad log-mel features ({e}); "
                                  f"save the unitizer again") from None
        quantizer = UnitQuantizer.load(directory)
        if quantizer.source != "log-mel" or quantizer.dim != features.dim:
            raise CheckpointError(f"{directory}: the quantizer holds {quantizer.dim}-dim {quantizer.source!r} "
                                  f"centroids, not {features.dim}-value log-mel frames; save the unitizer again")
        return cls(quantizer, features)


def read_unitizer_meta(directory: Path) -> dict:
    try:
        return json.loads((directory / UNITIZER_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{directory}: not a speech unitizer folder ({e}); it needs {UNITIZER_FILE}, as "
                              f"written by LogMelUnitizer.save or HubertUnitizer.save") from None
