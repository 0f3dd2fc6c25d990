"""A tiny synthetic spoken language for speech tests and `anymodal bench speech` (the toy world, issue 9,
has the full one).

Eight "phones": five vowels (a ~140 Hz harmonic source through two formants) and three fricatives (noise
in one band), 80-120 ms each with 10 ms ramps; words are 2-3 phones; 60 ms gaps between words.
"""

import torch

RATE = 16_000
VOWELS = [(300, 2300), (500, 1800), (700, 1200), (400, 800), (600, 2600)]  # formants F1, F2 (Hz)
FRICATIVES = [(2600, 3600), (4000, 5200), (5600, 7200)]  # noise bands (Hz)
PHONES = len(VOWELS) + len(FRICATIVES)
WORDS = [[0, 5], [1, 6, 2], [3, 7], [4, 5, 0], [2, 3], [6, 1, 4]]


def _ramp(n: int) -> torch.Tensor:
    ramp = torch.ones(n)
    edge = min(160, n // 2)
    ramp[:edge] = torch.linspace(0, 1, edge)
    ramp[-edge:] = torch.linspace(1, 0, edge)
    return ramp


def phone(p: int, g: torch.Generator, pitch: float = 140.0) -> torch.Tensor:
    n = int(RATE * (0.08 + 0.04 * torch.rand(1, generator=g).item()))
    t = torch.arange(n) / RATE
    if p < len(VOWELS):
        f1, f2 = VOWELS[p]
        harmonics = torch.arange(1, int(7000 / pitch))  # [H]
        freqs = harmonics * pitch
        gain = (torch.exp(-((freqs - f1) / 120) ** 2) + 0.6 * torch.exp(-((freqs - f2) / 160) ** 2))  # [H]
        wave = (gain[:, None] * torch.sin(2 * torch.pi * freqs[:, None] * t[None])).sum(0)
    else:
        low, high = FRICATIVES[p - len(VOWELS)]
        spectrum = torch.fft.rfft(torch.randn(n, generator=g))
        f = torch.fft.rfftfreq(n, 1 / RATE)
        wave = torch.fft.irfft(spectrum * ((f >= low) & (f <= high)), n)
    return wave / wave.abs().max() * _ramp(n)


def utterance(words: list[int], seed: int = 0, gain: float = 0.5) -> torch.Tensor:
    """Mono waveform [1, N] at 16 kHz of ``words`` (indices into WORDS), a little noise added."""
    g = torch.Generator().manual_seed(seed)
    gap = torch.zeros(int(0.06 * RATE))
    pieces = [gap]
    for w in words:
        pieces += [phone(p, g) for p in WORDS[w]] + [gap]
    wave = torch.cat(pieces) * gain
    return (wave + 1e-3 * torch.randn(len(wave), generator=g))[None]


def corpus(count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [utterance(torch.randint(len(WORDS), (3,), generator=g).tolist(), seed=seed * 1000 + i)
            for i in range(count)]
