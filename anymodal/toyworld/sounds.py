"""Each object's characteristic (non-speech) sound, 16 kHz, one second:

    colour -> pitch     red 220 Hz, green 330 Hz, blue 440 Hz, yellow 660 Hz
    shape  -> timbre    circle: pure tone; square: odd harmonics (square wave); triangle: all harmonics
                        (sawtooth); cross: a tone with fast vibrato
    size   -> rhythm    small: four short beeps; big: two long ones

with per-sample jitter of pitch (+-3%), onset, gain and background noise, so that a judge must learn the
classes rather than the exact waveform.
"""

from __future__ import annotations

import math
import random

import torch

from ..media import Audio
from .world import Thing

SAMPLE_RATE = 16_000
SECONDS = 1.0
PITCH = {"red": 220.0, "green": 330.0, "blue": 440.0, "yellow": 660.0}
BEEPS = {"small": 4, "big": 2}


def tone(shape: str, f0: float, t: torch.Tensor) -> torch.Tensor:
    """The timbre of ``shape`` at pitch ``f0`` over times ``t`` [N] (seconds), roughly unit peak."""
    if shape == "circle":
        return torch.sin(2 * math.pi * f0 * t)
    if shape == "cross":  # 12 Hz vibrato, +-6%
        phase = 2 * math.pi * f0 * (t - 0.06 / (2 * math.pi * 12) * torch.cos(2 * math.pi * 12 * t))
        return torch.sin(phase)
    harmonics = torch.arange(1, int(SAMPLE_RATE / 2 / f0) + 1).float()  # below Nyquist: no aliasing
    if shape == "square":
        weights = torch.where(harmonics % 2 == 1, 1 / harmonics, torch.zeros_like(harmonics))
    elif shape == "triangle":
        weights = 1 / harmonics
    else:
        raise ValueError(f"unknown shape {shape!r}")
    wave = (weights[:, None] * torch.sin(2 * math.pi * f0 * harmonics[:, None] * t[None])).sum(0)  # [N]
    return wave / wave.abs().max()


def envelope(beeps: int, n: int, onset: int) -> torch.Tensor:
    """[n]: ``beeps`` evenly spaced beeps, each on for 60% of its slot, with 5 ms ramps."""
    slot = (n - onset) // beeps
    on, ramp = int(slot * 0.6), int(0.005 * SAMPLE_RATE)
    shape = torch.ones(on)
    shape[:ramp] = torch.linspace(0, 1, ramp)
    shape[-ramp:] = torch.linspace(1, 0, ramp)
    env = torch.zeros(n)
    for b in range(beeps):
        env[onset + b * slot: onset + b * slot + on] = shape
    return env


def render_sound(thing: Thing, rng: random.Random) -> Audio:
    """[1, 16000] at 16 kHz."""
    n = int(SECONDS * SAMPLE_RATE)
    t = torch.arange(n).float() / SAMPLE_RATE
    f0 = PITCH[thing.colour] * rng.uniform(0.97, 1.03)
    onset = rng.randrange(0, int(0.08 * SAMPLE_RATE))
    wave = tone(thing.shape, f0, t) * envelope(BEEPS[thing.size], n, onset)
    generator = torch.Generator().manual_seed(rng.randrange(2 ** 31))
    gain = 10 ** (rng.uniform(-6, 0) / 20) * 0.5
    noise = torch.randn(n, generator=generator) * 10 ** (-rng.uniform(25, 40) / 20)
    return Audio((gain * wave + gain * noise)[None].clamp(-1, 1), sample_rate=SAMPLE_RATE)
