"""`anymodal bench speech`: the unit round trip units -> vocoder -> speech -> units on synthetic speech.

The Griffin-Lim vocoder (each unit's mean spectrum for its mean duration) against the baseline that isolates
Griffin-Lim itself: the clip's TRUE magnitude spectrogram through the same Griffin-Lim, measured in the same
run on the same held-out clips. Unit error rate = edit distance / reference units."""

from __future__ import annotations

import time

import torch
from torchaudio.functional import edit_distance


def register(subparsers) -> None:
    parser = subparsers.add_parser("speech", help="unit round-trip error of the Griffin-Lim vocoder vs an oracle")
    parser.add_argument("--train-clips", type=int, default=64, help="synthetic clips to fit units + vocoder on")
    parser.add_argument("--test-clips", type=int, default=32, help="held-out synthetic clips measured")
    parser.add_argument("--units", type=int, default=32, help="K units, silence included (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="corpus and k-means seed")
    parser.set_defaults(func=run)


def run(args) -> int:
    from decoders.griffinlim import GriffinLimVocoder

    from ..media import Audio
    from ..speech_features import LogMelUnitizer
    from ..speech_synth import RATE, corpus

    clips = [Audio(w, sample_rate=RATE) for w in corpus(args.train_clips + args.test_clips, seed=args.seed)]
    train, test = clips[: args.train_clips], clips[args.train_clips:]
    start = time.perf_counter()
    unitizer = LogMelUnitizer.fit(train, args.units, seed=args.seed)
    vocoder = GriffinLimVocoder.fit(train, [unitizer.frame_units(c) for c in train], unitizer.num_units,
                                    silence_unit=unitizer.silence_unit)
    build = time.perf_counter() - start

    def oracle(clip: Audio) -> Audio:  # the true magnitudes, phase recovered by the same Griffin-Lim
        window = torch.hann_window(vocoder.n_fft)
        magnitude = torch.stft(clip.waveform[0], vocoder.n_fft, vocoder.hop_length, window=window,
                               return_complex=True).abs()  # [F, T]
        return Audio(vocoder.griffin_lim(magnitude)[None], sample_rate=RATE)

    def ours(clip: Audio) -> Audio:
        return vocoder.decode_units([unitizer.units(clip)])[0]

    rows = {}
    for name, synthesize in (("oracle STFT + Griffin-Lim", oracle), ("units in context + Griffin-Lim", ours)):
        errors = total = 0
        seconds = audio_seconds = 0.0
        for clip in test:
            reference = unitizer.units(clip)
            tick = time.perf_counter()
            audio = synthesize(clip)
            seconds += time.perf_counter() - tick
            audio_seconds += audio.seconds
            errors += edit_distance(reference, unitizer.units(audio))
            total += len(reference)
        rows[name] = (errors / total, seconds / audio_seconds)
    base_uer, base_rtf = rows["oracle STFT + Griffin-Lim"]
    print(f"{len(test)} held-out clips, {args.units} units; unitizer + vocoder built in {build:.2f} s from "
          f"{len(train)} clips ({sum(c.seconds for c in train):.0f} s), {torch.get_num_threads()} threads")
    print(f"{'synthesis':28s} {'unit error rate':>16s} {'s per audio s':>14s} {'UER vs oracle':>14s}")
    for name, (uer, rtf) in rows.items():
        ratio = f"{uer / base_uer:.2f}x" if base_uer else "n/a"
        print(f"{name:28s} {uer:16.3f} {rtf:14.3f} {ratio:>14s}")
    uer = rows["units in context + Griffin-Lim"][0]
    print(f"griffinlim_unit_error_rate={uer:.3f} oracle_unit_error_rate={base_uer:.3f}")
    return 0
