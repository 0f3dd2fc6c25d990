"""`anymodal vocoder-train SPEECH... --unitizer U --out DIR`: train the learned unit vocoder (unit HiFi-GAN,
``decoders.vocoder.UnitVocoder``) on speech files and their units, spectral losses only."""

from __future__ import annotations

from tqdm.auto import tqdm


def register(subparsers) -> None:
    parser = subparsers.add_parser("vocoder-train", help="train the unit HiFi-GAN vocoder on speech + its units")
    parser.add_argument("inputs", nargs="+", help="speech files or folders of them (.wav / .flac / .ogg / .mp3)")
    parser.add_argument("--unitizer", required=True, help="the unitizer folder whose units the vocoder will speak")
    parser.add_argument("--out", required=True, help="output folder (transformers layout, loads as unit-hifigan)")
    parser.add_argument("--init", help="a unit vocoder folder to continue from (default: a fresh tiny one, "
                                       "decoders.vocoder.TINY_VOCODER sized to the unitizer)")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=8, help="segments per step (default 8)")
    parser.add_argument("--segment-frames", type=int, default=32, help="20 ms frames per segment (default 32)")
    parser.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (default 2e-4)")
    parser.add_argument("--seed", type=int, default=0, help="segment sampling and init seed (default 0)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from decoders.vocoder import UnitVocoder
    from decoders.vocoder_training import train_unit_vocoder

    from ..speech import load_unitizer
    from ..speech_features import read_speech_files

    unitizer = load_unitizer(args.unitizer)
    clips = read_speech_files(args.inputs)
    frame_units = [unitizer.frame_units(c) for c in tqdm(clips, desc="units", unit="clip")]
    vocoder = (UnitVocoder.from_pretrained(args.init) if args.init
               else UnitVocoder.from_config({"num_units": unitizer.num_units, "seed": args.seed}))
    losses = train_unit_vocoder(vocoder, clips, frame_units, args.steps, args.batch_size, args.segment_frames,
                                args.lr, args.seed)
    vocoder.save_pretrained(args.out)
    tenth = max(1, len(losses) // 10)
    print(f"loss {sum(losses[:tenth]) / tenth:.3f} -> {sum(losses[-tenth:]) / tenth:.3f} over {len(losses)} steps; "
          f"wrote {args.out} (load it with speech.vocoder_name: unit-hifigan)")
    return 0
