"""A toy spoken language: every word of the world's vocabulary is a fixed sequence of 2-4 synthetic
phones, spoken by speakers who differ in pitch, formants, speed, gain and noise (the recipe measured in
TOYWORLD-NOTES.md, where a BiGRU-CTC recogniser reads it at >99%).

    16 phones: 8 vowels   a harmonic source (~140 Hz) through two formants
               5 fricatives band-limited noise between 2.6 and 7.2 kHz
               3 nasals   a low murmur (one formant near 250 Hz), quieter
    each phone 60-120 ms with 10 ms ramps; words separated by 40-90 ms of near-silence; 16 kHz.

A word's phones come from its position in ``WORDS`` through a fixed seed, so the language is the same on
every machine; a speaker's voice comes from the speaker id alone. Splits use disjoint speakers. The assistant
answers in one voice of its own (``ASSISTANT``, the language's reference voice), as SpeechGPT's unit vocoder
speaks in one: its units for a sentence do not depend on who asked.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..media import Audio
from .world import COLOURS, DIRECTIONS, SHAPES, SIZES

SAMPLE_RATE = 16_000
FUNCTION_WORDS = ("a", "the", "is", "it", "what", "colour", "shape", "show", "me", "moving", "yes", "no")
WORDS = (*COLOURS, *SHAPES, *SIZES, *DIRECTIONS, *FUNCTION_WORDS)  # 26
VOWELS = [(300, 2300), (400, 2000), (550, 1800), (700, 1200), (650, 1000), (500, 900), (350, 800), (450, 1500)]
FRICATIVES = [(2600, 3600), (3400, 4600), (4200, 5400), (5000, 6300), (6000, 7200)]  # noise bands, Hz
NASALS = [(250, 1000), (250, 1400), (250, 2200)]  # (murmur formant, weak second formant)
PHONES = [("vowel", f) for f in VOWELS] + [("fricative", b) for b in FRICATIVES] + [("nasal", f) for f in NASALS]
SPEAKERS = {"train": range(0, 1000), "validation": range(1000, 1100), "test": range(1100, 1200)}
ASSISTANT = -1  # the speaker id of the assistant's voice (no split's speaker)


def _lexicon() -> dict[str, tuple[int, ...]]:
    """word -> phone ids: 2-4 phones, alternating vowel and consonant, every word distinct."""
    rng, lexicon, taken = random.Random(2026), {}, set()
    vowels, consonants = range(8), range(8, 16)
    for word in WORDS:
        while True:
            length, start_vowel = rng.randint(2, 4), rng.random() < 0.5
            phones = tuple(rng.choice(vowels if (i % 2 == 0) == start_vowel else consonants) for i in range(length))
            if phones not in taken:
                break
        taken.add(phones)
        lexicon[word] = phones
    return lexicon


LEXICON = _lexicon()


@dataclass(frozen=True)
class Voice:
    """One speaker's jitter: multiplies pitch / formants / phone durations, and a gain and SNR range."""

    pitch: float
    formants: float
    speed: float
    gain_db: float

    @classmethod
    def of(cls, speaker: int) -> "Voice":
        if speaker == ASSISTANT:  # the reference voice: no jitter
            return cls(140.0, 1.0, 1.0, 0.0)
        rng = random.Random(speaker * 7919 + 13)
        return cls(140 * rng.uniform(0.95, 1.05), rng.uniform(0.95, 1.05), rng.uniform(0.9, 1.1), rng.uniform(-6, 0))


def speaker_ids(split: str, count: int, rng: random.Random) -> list[int]:
    """``count`` speakers of ``split`` (repeats allowed); splits never share a speaker."""
    if split not in SPEAKERS:
        raise ConfigError(f"unknown split {split!r}; use one of {tuple(SPEAKERS)}")
    return [rng.choice(SPEAKERS[split]) for _ in range(count)]


def _harmonic(f0: float, formants: list[tuple[float, float]], t: torch.Tensor) -> torch.Tensor:
    """A harmonic source at ``f0`` shaped by (centre, weight) formants (80 Hz bandwidth resonances)."""
    harmonics = torch.arange(1, int(4000 / f0) + 1).float() * f0  # [H] Hz
    amplitude = sum(w / (1 + ((harmonics - f) / 80.0) ** 2) for f, w in formants)  # [H]
    return (amplitude[:, None] * torch.sin(2 * math.pi * harmonics[:, None] * t[None])).sum(0)  # [N]


def _band_noise(low: float, high: float, n: int, generator: torch.Generator) -> torch.Tensor:
    spectrum = torch.fft.rfft(torch.randn(n, generator=generator))
    freqs = torch.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    return torch.fft.irfft(spectrum * ((freqs >= low) & (freqs <= high)), n)


def phone_wave(phone: int, voice: Voice, seconds: float, generator: torch.Generator) -> torch.Tensor:
    """[N] one phone in ``voice``, peak ~1 (nasals ~0.4), with 10 ms ramps."""
    n = int(seconds * SAMPLE_RATE)
    t = torch.arange(n).float() / SAMPLE_RATE
    kind, spec = PHONES[phone]
    if kind == "vowel":
        wave = _harmonic(voice.pitch, [(spec[0] * voice.formants, 1.0), (spec[1] * voice.formants, 0.6)], t)
    elif kind == "nasal":
        wave = _harmonic(voice.pitch, [(spec[0] * voice.formants, 1.0), (spec[1] * voice.formants, 0.15)], t)
    else:
        wave = _band_noise(spec[0] * voice.formants, spec[1] * voice.formants, n, generator)
    wave = wave / wave.abs().max().clamp_min(1e-6) * (0.4 if kind == "nasal" else 1.0)
    ramp = min(int(0.01 * SAMPLE_RATE), n // 2)
    wave[:ramp] *= torch.linspace(0, 1, ramp)
    wave[n - ramp:] *= torch.linspace(1, 0, ramp)
    return wave


def speak(words: list[str] | str, speaker: int, rng: random.Random) -> Audio:
    """The spoken sentence ``words`` (a list or a space-separated string) by ``speaker``, [1, N] at 16 kHz."""
    words = words.split() if isinstance(words, str) else list(words)
    unknown = [w for w in words if w not in LEXICON]
    if unknown or not words:
        raise ConfigError(f"the toy language has no word(s) {unknown or '(empty sentence)'}; it knows {list(WORDS)}")
    voice = Voice.of(speaker)
    generator = torch.Generator().manual_seed(rng.randrange(2 ** 31))

    def gap() -> torch.Tensor:
        return torch.zeros(int(rng.uniform(0.04, 0.09) * SAMPLE_RATE))

    pieces = [gap()]
    for word in words:
        pieces += [phone_wave(p, voice, rng.uniform(0.06, 0.12) * voice.speed, generator) for p in LEXICON[word]]
        pieces.append(gap())
    wave = torch.cat(pieces) * 10 ** (voice.gain_db / 20) * 0.5
    snr_db = rng.uniform(25, 40)
    noise = torch.randn(wave.shape[0], generator=generator) * wave.pow(2).mean().sqrt() * 10 ** (-snr_db / 20)
    return Audio((wave + noise)[None].clamp(-1, 1), sample_rate=SAMPLE_RATE)
