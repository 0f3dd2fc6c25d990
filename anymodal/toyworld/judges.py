"""Judges: small classifiers trained on real world samples that read a thing's attributes back from media,
so that generated images / sounds / videos and spoken answers can be scored automatically.

    AttributeJudge("image")   CNN over [3, 32, 32] pixels                    -> shape, colour, size
    AttributeJudge("sound")   CNN over a [1, 32, 51] log-mel spectrogram (20 ms)    -> shape, colour, size
    AttributeJudge("video")   CNN over the 8 frames stacked as [24, 32, 32]  -> shape, colour, direction
    SpeechJudge               conv + BiGRU + CTC over log-mel frames (20 ms) -> the spoken words

``train_judge(kind)`` trains one on the train split and measures it on the validation split (real, held-out
items and speakers): a judge is only as trustworthy as that number, which the eval table prints beside it.
Judges save to / load from a folder (``judge.json`` + ``judge.safetensors``). ``judge.json`` records a
fingerprint of what the judge learned from (``judge_fingerprint``): a run that needs a judge the package already
ships, trained on the same world, copies it instead of training it again.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..errors import CheckpointError, ConfigError, MediaError
from ..media import Audio, Image, Media, Video
from .render import world_items
from .shipped import SHIPPED
from .sounds import SAMPLE_RATE
from .spoken import WORDS, speak, speaker_ids
from .videos import FRAMES, VIDEO_SIZE
from .world import ATTRIBUTES, Thing, split_seed

JUDGED = {"image": ("shape", "colour", "size"), "sound": ("shape", "colour", "size"),
          "video": ("shape", "colour", "direction")}
MEDIA = {"image": Image, "sound": Audio, "video": Video}


class LogMel(nn.Module):
    """Waveform [N] (16 kHz) -> log-mel [bins, frames]; ``hop`` samples per frame."""

    def __init__(self, hop: int, bins: int):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=1024, hop_length=hop, n_mels=bins)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return (self.mel(wave) + 1e-5).log()


def _mono_16k(audio: Audio) -> torch.Tensor:
    """[N] mono at 16 kHz, peak-normalised (loudness is not an attribute)."""
    wave = audio.waveform.mean(0)
    if audio.sample_rate != SAMPLE_RATE:
        wave = torchaudio.functional.resample(wave, audio.sample_rate, SAMPLE_RATE)
    return wave / wave.abs().max().clamp_min(1e-4)


class AttributeJudge(nn.Module):
    """One CNN, one linear head per judged attribute."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in JUDGED:
            raise ConfigError(f"no attribute judge for {kind!r}; judges exist for {sorted(JUDGED)}")
        self.kind, self.attributes = kind, JUDGED[kind]
        channels = {"image": 3, "sound": 1, "video": 3 * FRAMES}[kind]
        self.log_mel = LogMel(hop=320, bins=32) if kind == "sound" else None
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten())  # [B, 256]
        self.heads = nn.ModuleDict({a: nn.Linear(256, len(ATTRIBUTES[a])) for a in self.attributes})

    def features(self, items: list[Media]) -> torch.Tensor:
        """Media -> the judge's input batch, resampled to the world's sizes (generated media may differ)."""
        wanted = MEDIA[self.kind]
        wrong = [type(m).__name__ for m in items if not isinstance(m, wanted)]
        if wrong:
            raise MediaError(f"the {self.kind} judge reads {wanted.__name__} items, got {wrong[0]}")
        if self.kind == "image":
            return torch.stack([F.interpolate(m.pixels[None], size=(32, 32), mode="area")[0] for m in items])
        if self.kind == "video":
            return torch.stack([_video_input(m.frames) for m in items])  # [B, 24, 32, 32]
        waves = torch.stack([F.pad(w, (0, max(0, SAMPLE_RATE - w.shape[0])))[:SAMPLE_RATE]
                             for w in map(_mono_16k, items)])  # [B, 16000]: one second
        return self.log_mel(waves)[:, None]  # [B, 1, 32, 51]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)  # [B, 256]
        return {a: head(h) for a, head in self.heads.items()}  # {attribute: [B, classes]}

    @torch.no_grad()
    def predict(self, items: list[Media]) -> list[dict[str, str]]:
        """The attributes the judge reads from each item."""
        self.eval()
        logits = self(self.features(items))
        return [{a: ATTRIBUTES[a][int(logits[a][i].argmax())] for a in self.attributes} for i in range(len(items))]


def _video_input(frames: torch.Tensor) -> torch.Tensor:
    """[T, 3, H, W] -> [24, 32, 32]: FRAMES frames picked evenly, area-resized, stacked as channels."""
    picks = torch.linspace(0, frames.shape[0] - 1, FRAMES).round().long()
    small = F.interpolate(frames[picks], size=(VIDEO_SIZE, VIDEO_SIZE), mode="area")  # [8, 3, 32, 32]
    return small.reshape(-1, VIDEO_SIZE, VIDEO_SIZE)


def _voiced(log_mel: torch.Tensor) -> torch.Tensor:
    """Bool [frames]: the frames of ``log_mel`` [frames, bins] within 35 dB of the loudest (at least two), whose
    statistics normalise the utterance: the share of pause in a clip then does not shift them."""
    energy = log_mel.exp().sum(-1).log()  # [frames], natural log of power
    voiced = energy > energy.max() - 35 / 10 * math.log(10)
    return voiced if voiced.sum() >= 2 else torch.ones_like(voiced)


class SpeechJudge(nn.Module):
    """A recogniser of the toy language: log-mel frames every 20 ms -> BiGRU -> per-frame word logits, CTC."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.kind = "speech"
        self.log_mel = LogMel(hop=320, bins=64)
        self.front = nn.Sequential(nn.Conv1d(64, 2 * hidden, 5, padding=2), nn.ReLU())  # phone-sized context
        self.gru = nn.GRU(2 * hidden, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, len(WORDS) + 1)  # class 0 is the CTC blank

    def features(self, items: list[Audio]) -> list[torch.Tensor]:
        """Each item's log-mel frames [frames, 64], normalised per utterance by the mean and spread of its voiced
        frames over all bins: the GRU then sees the same scale whatever the speaker's gain, and however long the
        pauses. Not per bin, as ASR front ends do: a single word's own mean spectrum is most of what tells it
        apart, and per-bin statistics subtracted it (the judge read "circle" alone 4 times in 20)."""
        if any(not isinstance(m, Audio) for m in items):
            raise MediaError("the speech judge reads Audio items")
        mels = [self.log_mel(_mono_16k(m)).T for m in items]
        voiced = [m[_voiced(m)] for m in mels]
        return [(m - v.mean()) / v.std().clamp_min(1e-3) for m, v in zip(mels, voiced)]

    @staticmethod
    def pad(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, frames, 64] zero-padded, lengths [B])."""
        return nn.utils.rnn.pad_sequence(mels, batch_first=True), torch.tensor([len(m) for m in mels])

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        h = self.front(mels.transpose(1, 2)).transpose(1, 2)  # [B, frames, 2 * hidden]
        return self.out(self.gru(h)[0])  # [B, frames, words + 1]

    @torch.no_grad()
    def transcribe(self, items: list[Audio]) -> list[list[str]]:
        """Greedy CTC: best class per frame, repeats collapsed, blanks dropped."""
        self.eval()
        mels, lengths = self.pad(self.features(items))
        best = self(mels).argmax(-1)  # [B, frames]
        words = []
        for row, length in zip(best.tolist(), lengths.tolist()):
            ids = [c for i, c in enumerate(row[:length]) if c and (i == 0 or c != row[i - 1])]
            words.append([WORDS[c - 1] for c in ids])
        return words


# ------------------------------------------------------------------------------------- training
def _attribute_data(kind: str, split: str, n: int, seed: int) -> tuple[list[Media], list[Thing]]:
    items = world_items(split, n, seed)
    return [it.render(kind) for it in items], [it.thing for it in items]


def _sentences(split: str, n: int, seed: int) -> tuple[list[Audio], list[list[str]]]:
    """``n`` random sentences of 1-6 words from the vocabulary, by the split's speakers. A third are single
    words, as the assistant's spoken answers are."""
    rng = random.Random(split_seed(seed, split) + 7)
    words = [rng.choices(WORDS, k=1 if rng.random() < 1 / 3 else rng.randint(2, 6)) for _ in range(n)]
    speakers = speaker_ids(split, n, rng)
    return [speak(w, s, random.Random(rng.randrange(2 ** 31))) for w, s in zip(words, speakers)], words


def with_pauses(clip: Audio, rng: random.Random) -> Audio:
    """``clip`` between two pauses of 0-200 ms of noise 25-60 dB below its loudness: the judge normalises each
    utterance, so without these it learned the world's own edge silence and misread vocoded speech, whose
    pauses are longer and cleaner."""
    wave = clip.waveform  # [1, N]
    level = wave.pow(2).mean().sqrt() * 10 ** (-rng.uniform(25, 60) / 20)
    generator = torch.Generator().manual_seed(rng.randrange(2 ** 31))
    before, after = (int(rng.uniform(0, 0.2) * SAMPLE_RATE) for _ in range(2))
    pause = torch.randn(1, before + after, generator=generator) * level
    return Audio(torch.cat([pause[:, :before], wave, pause[:, before:]], 1), sample_rate=clip.sample_rate)


def attribute_accuracy(judge: AttributeJudge, media: list[Media], things: list[Thing]) -> dict[str, float]:
    """Per-attribute accuracy and ``all`` (every judged attribute right)."""
    predicted = judge.predict(media)
    scores = {a: sum(p[a] == t.attribute(a) for p, t in zip(predicted, things)) / len(things) for a in judge.attributes}
    scores["all"] = sum(all(p[a] == t.attribute(a) for a in judge.attributes)
                        for p, t in zip(predicted, things)) / len(things)
    return scores


# (steps, batch size) that reach >= 99% on real held-out samples (seed 0; one core: ~65 / 50 / 18 / 235 s)
SCHEDULE = {"image": (300, 64), "sound": (300, 64), "video": (300, 64), "speech": (1200, 32)}


def train_judge(kind: str, n: int = 1024, steps: int | None = None, batch_size: int | None = None,
                n_eval: int = 256, seed: int = 0, progress: bool = True) -> tuple[nn.Module, dict[str, float]]:
    """Train the judge of ``kind`` (image | sound | video | speech) on ``n`` train-split samples for ``steps``
    AdamW steps (default: ``SCHEDULE``); returns (judge, accuracy on ``n_eval`` validation-split samples)."""
    if kind not in SCHEDULE:
        raise ConfigError(f"no judge for {kind!r}; judges exist for {sorted(SCHEDULE)}")
    steps, batch_size = steps or SCHEDULE[kind][0], batch_size or SCHEDULE[kind][1]
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if kind == "speech":
        judge, (media, targets) = SpeechJudge(), _sentences("train", n, seed)
        media = [with_pauses(clip, rng) if rng.random() < 0.5 else clip for clip in media]
    else:
        judge, (media, targets) = AttributeJudge(kind), _attribute_data(kind, "train", n, seed)
    with torch.no_grad():  # features once, not every step: the log-mel of 1024 sounds is most of the cost
        features = judge.features(media)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    judge.train()
    for _ in tqdm(range(steps), desc=f"{kind} judge", disable=not progress):
        picks = rng.sample(range(len(media)), min(batch_size, len(media)))
        loss = _loss(judge, [features[i] for i in picks], [targets[i] for i in picks])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return judge, judge_accuracy(judge, n_eval, seed)


def judge_accuracy(judge: nn.Module, n: int = 256, seed: int = 0) -> dict[str, float]:
    """The judge's accuracy on ``n`` real validation-split samples (speech: word accuracy, 1 - WER)."""
    from .metrics import word_accuracy

    if judge.kind == "speech":
        media, words = _sentences("validation", n, seed)
        return {"words": word_accuracy(judge.transcribe(media), words)}
    return attribute_accuracy(judge, *_attribute_data(judge.kind, "validation", n, seed))


def _loss(judge: nn.Module, features: list[torch.Tensor], targets: list) -> torch.Tensor:
    if judge.kind == "speech":
        mels, lengths = judge.pad(features)
        log_probs = judge(mels).log_softmax(-1).transpose(0, 1)  # [frames, B, classes], as ctc_loss takes
        labels = torch.tensor([WORDS.index(w) + 1 for words in targets for w in words])
        return F.ctc_loss(log_probs, labels, lengths, torch.tensor([len(w) for w in targets]), zero_infinity=True)
    logits = judge(torch.stack(features))
    return sum(F.cross_entropy(logits[a], torch.tensor([ATTRIBUTES[a].index(t.attribute(a)) for t in targets]))
               for a in judge.attributes)


# ------------------------------------------------------------------------------------- persistence
# bump a kind's revision when train_judge changes what its judge learns, so old ones retrain
# (speech 2: pauses; 3: a third single words, utterance-wide normalisation)
JUDGE_REVISION = {"image": 2, "sound": 2, "video": 2, "speech": 3}
MEDIA_TENSOR = {"image": "pixels", "sound": "waveform", "video": "frames", "speech": "waveform"}


def judge_fingerprint(kind: str, seed: int = 0, options: dict | None = None) -> str:
    """What a judge of ``kind`` learns from: its first validation samples as the world renders them for ``seed``
    (rounded, so that last-bit differences between CPUs do not count), the training options and its JUDGE_REVISION."""
    if kind not in SCHEDULE:
        raise ConfigError(f"no judge for {kind!r}; judges exist for {sorted(SCHEDULE)}")
    digest = hashlib.sha256(json.dumps([kind, seed, options or {}, SCHEDULE[kind], JUDGE_REVISION[kind]]).encode())
    samples = _sentences("validation", 4, seed) if kind == "speech" else _attribute_data(kind, "validation", 4, seed)
    for item in samples[0]:
        digest.update((getattr(item, MEDIA_TENSOR[kind]) * 1e3).round().to(torch.int32).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_judge(judge: nn.Module, directory: str | Path, accuracy: dict[str, float],
               fingerprint: str | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, directory / "judge.safetensors")
    meta = {"kind": judge.kind, "accuracy": accuracy, "fingerprint": fingerprint}
    (directory / "judge.json").write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def load_judge(directory: str | Path) -> tuple[nn.Module, dict[str, float]]:
    """(judge, its recorded validation accuracy) from a folder written by ``save_judge``."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "judge.json").read_text())
        state = load_file(directory / "judge.safetensors")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{directory}: not a toy-world judge folder ({e}); train one with "
                              f"anymodal.toyworld.judges.train_judge and save_judge") from None
    judge = SpeechJudge() if meta["kind"] == "speech" else AttributeJudge(meta["kind"])
    try:
        judge.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{directory}: judge weights do not match the {meta['kind']} judge ({e}); "
                              f"delete the folder to retrain it") from None
    return judge.eval(), meta["accuracy"]


CACHED_JUDGES_DIR = Path.home() / ".cache/anymodal/toyworld-judges"  # trained once, shared by every eval
SHIPPED_JUDGES_DIR = SHIPPED / "judges"  # the judges that scored the shipped bundle


def default_judges_dir() -> Path:
    """The judges shipped with the package when they are there (no training on a fresh machine), else the cache."""
    return SHIPPED_JUDGES_DIR if SHIPPED_JUDGES_DIR.is_dir() else CACHED_JUDGES_DIR


def load_or_train_judges(directory: str | Path, kinds: list[str], seed: int = 0, progress: bool = True,
                         **train_options) -> dict[str, tuple[nn.Module, dict[str, float]]]:
    """Judges of ``kinds`` from ``directory/<kind>``; one that is not there yet is copied from the package's
    shipped judges when those learned from the same world (``judge_fingerprint``), else trained and saved there.
    ``train_options`` (n, steps, batch_size, n_eval) go to ``train_judge``."""
    judges = {}
    for kind in kinds:
        folder = Path(directory) / kind
        if not (folder / "judge.json").exists():
            fingerprint = judge_fingerprint(kind, seed, train_options)
            shipped = SHIPPED_JUDGES_DIR / kind
            if folder.resolve() != shipped.resolve() and _recorded_fingerprint(shipped) == fingerprint:
                shutil.copytree(shipped, folder)
            else:
                judge, accuracy = train_judge(kind, seed=seed, progress=progress, **train_options)
                save_judge(judge, folder, accuracy, fingerprint)
        judges[kind] = load_judge(folder)
    return judges


def _recorded_fingerprint(folder: Path) -> str | None:
    try:
        return json.loads((folder / "judge.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None
