"""Train the learned unit vocoder (``decoders.vocoder.UnitVocoder``, transformers' SeamlessM4TCodeHifiGan) on
paired speech and per-frame units, with spectral losses only (no discriminator: enough for small unit sets).

Each step takes random ``segment_frames``-frame windows of the clips; the window's units are collapsed into
runs, the HiFi-GAN generator is driven with the TRUE run lengths (teacher forcing, so the output lines up with
the target waveform) and the duration predictor learns those run lengths on the side:

    loss = multi-resolution STFT loss (spectral convergence + log-magnitude L1) + MSE(log(1 + duration))
"""

from __future__ import annotations

import itertools
import random

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from anymodal.errors import ConfigError
from anymodal.media import Audio

from .vocoder import UnitVocoder

RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (256, 64, 256))  # (n_fft, hop, window) as in HiFi-GAN papers


def stft_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss between waveforms [B, N]."""
    loss = predicted.new_zeros(())
    for n_fft, hop, win in RESOLUTIONS:
        window = torch.hann_window(win, device=predicted.device)
        p = torch.stft(predicted, n_fft, hop, win, window, return_complex=True).abs().clamp(min=1e-7)  # [B, F, T]
        t = torch.stft(target, n_fft, hop, win, window, return_complex=True).abs().clamp(min=1e-7)
        loss = loss + torch.linalg.norm(t - p) / torch.linalg.norm(t) + F.l1_loss(p.log(), t.log())
    return loss / len(RESOLUTIONS)


def _runs(frames: list[int]) -> tuple[list[int], list[int]]:
    """[5, 5, 3, 3, 3] -> units [5, 3], durations [2, 3]."""
    runs = [(unit, len(list(group))) for unit, group in itertools.groupby(frames)]
    return [u for u, _ in runs], [d for _, d in runs]


def vocoder_loss(vocoder: UnitVocoder, segments: list[tuple[list[int], torch.Tensor]]) -> tuple[torch.Tensor, dict]:
    """``segments``: (frame units [F], waveform [F * hop]) pairs, all F frames long."""
    model = vocoder.model
    hidden, dur_losses = [], []
    for frames, _ in segments:
        units, durations = _runs(frames)
        ids = torch.tensor(units, device=model.device) + model.config.vocoder_offset  # [U]
        embeds = model.unit_embedding(ids)  # [U, C]
        log_dur = model.dur_predictor(embeds[None])[0]  # [U]
        target = torch.tensor(durations, dtype=log_dur.dtype, device=log_dur.device)
        dur_losses.append(F.mse_loss(log_dur, torch.log1p(target)))
        hidden.append(torch.repeat_interleave(embeds, target.long(), dim=0))  # [F, C]
    hidden = torch.stack(hidden).transpose(1, 2)  # [B, C, F]
    batch, frames = hidden.shape[0], hidden.shape[2]
    zeros = torch.zeros(batch, 1, dtype=torch.long, device=model.device)
    lang = model.language_embedding(zeros).transpose(1, 2).repeat(1, 1, frames)  # [B, 0, F] without a table
    spkr = model.speaker_embedding(zeros).transpose(1, 2).repeat(1, 1, frames)
    waveform = model.hifi_gan(torch.cat([lang, hidden, spkr], dim=1))  # [B, F * hop]
    target = torch.stack([w for _, w in segments]).to(waveform)  # [B, F * hop]
    spectral, duration = stft_loss(waveform, target), torch.stack(dur_losses).mean()
    return spectral + duration, {"stft": spectral.detach(), "duration": duration.detach()}


def train_unit_vocoder(vocoder: UnitVocoder, clips: list[Audio], frame_units: list[torch.Tensor], steps: int,
                       batch_size: int = 4, segment_frames: int = 32, lr: float = 2e-4, seed: int = 0) -> list[float]:
    """Train ``vocoder`` in place on ``clips`` (mono, the vocoder's rate) and their per-frame units (one unit
    per ``vocoder.samples_per_unit`` samples, e.g. ``LogMelUnitizer.frame_units``); returns every step's loss."""
    hop = vocoder.samples_per_unit
    pairs = []
    for clip, units in zip(clips, frame_units):
        if clip.sample_rate != vocoder.sample_rate:
            raise ConfigError(f"clips must be at the vocoder's {vocoder.sample_rate} Hz, got {clip.sample_rate} Hz")
        if len(units) > segment_frames:
            pairs.append((units.tolist(), clip.waveform.mean(0)))
    if not pairs:
        raise ConfigError(f"no clip is longer than segment_frames={segment_frames} frames; lower it or add longer clips")
    bad = {u for units, _ in pairs for u in units if not 0 <= u < vocoder.num_units}
    if bad:
        raise ConfigError(f"units {sorted(bad)[:5]} lie outside the vocoder's {vocoder.num_units} units")
    rng = random.Random(seed)
    model = vocoder.model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.8, 0.99))
    losses = []
    try:
        for _ in tqdm(range(steps), desc="vocoder", unit="step"):
            segments = []
            for units, wave in rng.sample(pairs, min(batch_size, len(pairs))):
                start = rng.randrange(0, min(len(units), wave.numel() // hop) - segment_frames + 1)
                window = wave[start * hop:(start + segment_frames) * hop]
                window = F.pad(window, (0, segment_frames * hop - window.numel()))
                segments.append((units[start:start + segment_frames], window))
            loss, _ = vocoder_loss(vocoder, segments)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        model.eval().requires_grad_(False)
    return losses
