"""Train the toy world's diffusion decoders (image, sound, video) from scratch on a CPU, and measure them.

    metrics = train_decoder("image", "runs/toyworld/decoder_image")

renders the train split in memory, trains the pixel-diffusion UNet and its text encoder jointly (the DDPM loss
of the scheduler's prediction type with Min-SNR weighting, 10% of captions dropped to "" for classifier-free
guidance) on the accelerator when there is one, saves the pipeline folder with the EMA weights in float16, then
samples captions of the validation split, has the judges read the attributes back, stores the best guidance
scale of the sweep as the pipeline's default, and writes ``metrics.json`` last (its presence means "this step
is done"). The decoder's text embedding (``decoder.encode_text``) is what the LLM's
output projection is later trained to match (NExT-GPT).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.optimization import SchedulerType, get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from tqdm import tqdm

from .. import registry
from ..errors import ConfigError
from .evaluate import JUDGED, TARGETS, judge_score
from .judges import default_judges_dir, load_or_train_judges
from .metrics import judged_accuracy
from .render import world_items
from .spoken import WORDS

MODALITY = {"image": "image", "sound": "audio", "video": "video"}  # world kind -> decoder modality
# training steps per kind, sized to the CPU budget (~0.15 s a step for image and video, ~0.24 s for sound on two
# idle cores); judged results of these defaults are in each folder's metrics.json. Video needs the most: motion +
# colour judged 27% at 2000 steps, 68% at 4000 (one GPU sweep, 256 captions)
STEPS = {"image": 3000, "sound": 1500, "video": 4000}
# per-kind changes to TINY_PIXEL (decoders/diffusion/pixel.py) under ``architecture``. The log-mel layout trains
# without the pooled condition: with it, pitch (judged colour) stayed at chance, 26%, and all attributes 16% at
# 1500 steps; without it 99% and 74% (the same sweep)
ARCHITECTURE = {"sound": {"pooled_condition": False}}
EVAL_BATCH = 64
SCHEDULES = tuple(s.value for s in SchedulerType if s.value != "piecewise_constant")  # it needs a rules string


def train_decoder(kind: str, out: str | Path, *, seed: int = 0, train_items: int = 2048, steps: int | None = None,
                  batch_size: int = 32, lr: float = 1e-3, lr_schedule: str = "constant", warmup_steps: int = 0,
                  ema_decay: float = 0.999, cond_dropout: float = 0.1,
                  snr_gamma: float = 5.0, mixed_precision: str = "no", architecture: dict | None = None,
                  n_eval: int = 256, guidance_scales: tuple[float, ...] = (2.0, 3.0), sample_steps: int = 20,
                  judges_dir: str | Path | None = None, device: str | torch.device | None = None,
                  progress: bool = True) -> dict:
    """Train the ``kind`` (image | sound | video) decoder for ``steps`` (default ``STEPS[kind]``) on
    ``train_items`` rendered train-split items; save it to ``out``; judge ``n_eval`` validation captions at each
    of ``guidance_scales`` (``n_eval=0`` skips judging); return the metrics written to ``out/metrics.json``.
    ``architecture`` overrides ``TINY_PIXEL`` keys, over this kind's ``ARCHITECTURE`` defaults.

    ``lr_schedule``: a diffusers schedule name ("constant", "cosine", "linear", ...) over ``steps``, after
    ``warmup_steps`` of linear warmup.

    ``mixed_precision``: "bf16" runs the training forward and backward under bfloat16 autocast (the weights, the
    optimizer and the EMA stay float32), "no" in float32.

    ``device``: where the UNet trains and samples (default: the accelerator when there is one, else the CPU).
    The noise, timesteps and batches are drawn on the CPU, so a seed picks the same batches everywhere."""
    if kind not in MODALITY:
        raise ConfigError(f"no toy-world decoder for {kind!r}; use one of {sorted(MODALITY)}")
    steps = STEPS[kind] if steps is None else steps
    if mixed_precision not in ("no", "bf16"):
        raise ConfigError(f"mixed_precision must be 'no' or 'bf16', got {mixed_precision!r}")
    if lr_schedule not in SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}")
    if steps < 1 or train_items < 1 or batch_size < 1:
        raise ConfigError(f"steps, train_items and batch_size must be positive, got {steps}, {train_items}, {batch_size}")
    out = Path(out)
    (out / "metrics.json").unlink(missing_ok=True)  # a rerun is "not done" until it finishes

    if device is None:
        device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else "cpu"
    torch.manual_seed(seed)
    architecture = {**ARCHITECTURE.get(kind, {}), **(architecture or {})}
    decoder = registry.resolve("decoders", "pixel-diffusion").from_config(
        {**architecture, "modality": MODALITY[kind], "words": list(WORDS), "seed": seed}, progress=False)
    decoder.to(device)
    samples, captions = _training_data(decoder.pipeline, kind, train_items, seed, progress)
    probe = _probe(decoder.pipeline, samples, captions, snr_gamma, seed)
    probe_start = probe()
    started = time.perf_counter()
    optimizer = torch.optim.AdamW([*decoder.pipeline.unet.parameters(), *decoder.pipeline.text_encoder.parameters()],
                                  lr=lr)
    schedule = get_scheduler(lr_schedule, optimizer, num_warmup_steps=warmup_steps, num_training_steps=steps)
    losses = _fit(decoder.pipeline, samples, captions, steps, batch_size, optimizer, schedule, ema_decay,
                  cond_dropout, snr_gamma, seed, mixed_precision == "bf16", progress)
    train_seconds = time.perf_counter() - started

    pipeline = decoder.pipeline
    for model in (pipeline.unet, pipeline.text_encoder):  # measure exactly the float16 weights that are saved
        model.half().float()
    window = max(1, min(100, steps // 10))
    metrics = {"kind": kind, "modality": MODALITY[kind], "seed": seed, "steps": steps, "train_items": train_items,
               "batch_size": batch_size, "lr": lr, "lr_schedule": lr_schedule, "warmup_steps": warmup_steps,
               "ema_decay": ema_decay, "cond_dropout": cond_dropout,
               "snr_gamma": snr_gamma, "mixed_precision": mixed_precision, "architecture": architecture,
               "parameters": sum(p.numel() for m in (pipeline.unet, pipeline.text_encoder) for p in m.parameters()),
               "loss_start": sum(losses[:window]) / window, "loss_end": sum(losses[-window:]) / window,
               "probe_loss_start": probe_start, "probe_loss_end": probe(),
               "lr_end": schedule.get_last_lr()[0], "train_seconds": round(train_seconds, 1)}
    if n_eval:
        started = time.perf_counter()
        metrics.update(judge_decoder(decoder, kind, n_eval, guidance_scales, sample_steps, seed, judges_dir, progress))
        metrics["eval_seconds"] = round(time.perf_counter() - started, 1)
        pipeline.register_to_config(guidance_scale=metrics["guidance_scale"])

    if out.exists():
        shutil.rmtree(out)
    pipeline.to("cpu")
    pipeline.unet.half()
    pipeline.text_encoder.half()
    pipeline.save_pretrained(str(out))
    metrics["folder_bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _training_data(pipeline, kind: str, n: int, seed: int, progress: bool) -> tuple[torch.Tensor, list[str]]:
    """UNet samples [n, C, h, w] of ``n`` rendered train-split items, and their captions."""
    items = world_items("train", n, seed)
    media = [it.render(kind) for it in tqdm(items, desc=f"render {kind}", disable=not progress)]
    if kind == "image":
        batch = torch.stack([m.pixels for m in media])  # [n, 3, 32, 32]
    elif kind == "video":
        batch = torch.stack([m.frames for m in media])  # [n, 8, 3, 32, 32]: the pipeline downsamples them
    else:
        batch = torch.stack([m.waveform[0] for m in media])  # [n, 16000]
    captions = [it.thing.motion_caption if kind == "video" else it.thing.caption for it in items]
    with torch.no_grad():
        return pipeline.encode_media(batch), captions


def _diffusion_loss(pipeline, x0: torch.Tensor, ids: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                    snr_gamma: float) -> torch.Tensor:
    """The training loss of clean samples ``x0`` [B, C, h, w] with captions ``ids`` [B, tokens], noised by
    ``noise`` at timesteps ``t`` [B].

    ``snr_gamma`` > 0 weighs each sample's loss by min(SNR, gamma) / SNR (epsilon) or / (SNR + 1) (velocity):
    the Min-SNR strategy (Hang et al., 2023), which stops the nearly clean steps from dominating; 0 turns it off."""
    scheduler, device = pipeline.scheduler, pipeline.device
    x0, ids, noise, t = x0.to(device), ids.to(device), noise.to(device), t.to(device)
    noisy = scheduler.add_noise(x0, noise, t)
    predicted = pipeline.unet(noisy, t, encoder_hidden_states=pipeline.text_encoder(ids)[0]).sample
    velocity = scheduler.config.prediction_type == "v_prediction"
    errors = F.mse_loss(predicted, scheduler.get_velocity(x0, noise, t) if velocity else noise,
                        reduction="none").mean((1, 2, 3))  # [B]
    if snr_gamma > 0:
        snr = compute_snr(scheduler, t)  # [B]
        errors = errors * snr.clamp(max=snr_gamma) / (snr + 1 if velocity else snr)
    return errors.mean()


def _probe(pipeline, samples: torch.Tensor, captions: list[str], snr_gamma: float, seed: int):
    """The loss on a fixed batch (the first 64 samples, fixed noise, timesteps spread evenly): comparable before
    and after training, where one training batch's loss swings with its random timesteps."""
    n = min(64, len(samples))
    generator = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(samples[:n].shape, generator=generator)
    t = torch.linspace(0, pipeline.scheduler.config.num_train_timesteps - 1, n).long()
    ids = _caption_ids(pipeline.tokenizer, captions[:n])

    def loss() -> float:
        with torch.no_grad():
            return _diffusion_loss(pipeline, samples[:n], ids, noise, t, snr_gamma).item()
    return loss


def _caption_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids  # [n, tokens]


def _fit(pipeline, samples: torch.Tensor, captions: list[str], steps: int, batch_size: int, optimizer, schedule,
         ema_decay: float, cond_dropout: float, snr_gamma: float, seed: int, bf16: bool,
         progress: bool) -> list[float]:
    """DDPM training of UNet + text encoder (``_diffusion_loss``, under bfloat16 autocast with ``bf16``) with
    ``optimizer`` over their parameters and its learning-rate ``schedule``; leaves the EMA weights in the models.
    Returns the loss per step."""
    unet, text_encoder, scheduler = pipeline.unet, pipeline.text_encoder, pipeline.scheduler
    ids, empty = _caption_ids(pipeline.tokenizer, captions), _caption_ids(pipeline.tokenizer, [""])
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    ema = EMAModel(parameters, decay=ema_decay)
    generator = torch.Generator().manual_seed(seed)
    unet.train()
    text_encoder.train()
    losses = []
    for _ in (bar := tqdm(range(steps), desc="train decoder", disable=not progress)):
        picks = torch.randint(len(samples), (batch_size,), generator=generator)
        x0 = samples[picks]  # [B, C, h, w]
        dropped = torch.rand(batch_size, generator=generator) < cond_dropout  # unconditional: the caption ""
        batch_ids = torch.where(dropped[:, None], empty, ids[picks])  # [B, tokens]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        with torch.autocast(pipeline.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = _diffusion_loss(pipeline, x0, batch_ids, noise, t, snr_gamma)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        ema.step(parameters)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    ema.copy_to(parameters)
    unet.eval()
    text_encoder.eval()
    return losses


def judge_decoder(decoder, kind: str, n: int = 256, guidance_scales: tuple[float, ...] = (2.0, 3.0),
                  sample_steps: int = 20, seed: int = 0, judges_dir: str | Path | None = None,
                  progress: bool = True) -> dict:
    """Generate from the decoder's own embedding of ``n`` validation captions at each guidance scale and let
    the judge read them back: accuracy per attribute and ``target`` (every attribute the eval table scores
    right), per scale, the best scale, and the judge's own accuracy on real samples."""
    modality = MODALITY[kind]
    judge, judge_scores = load_or_train_judges(judges_dir or default_judges_dir(), [kind], seed=seed,
                                               progress=progress)[kind]
    things = [it.thing for it in world_items("validation", n, seed)]
    condition = decoder.encode_text([t.motion_caption if kind == "video" else t.caption for t in things])
    by_scale = {}
    for scale in guidance_scales:
        predicted = []
        for start in tqdm(range(0, n, EVAL_BATCH), desc=f"judge guidance {scale}", disable=not progress):
            media = decoder.decode(condition[start:start + EVAL_BATCH], steps=sample_steps, guidance_scale=scale,
                                   seed=seed + start)
            predicted += judge.predict(media)
        scores = {a: judged_accuracy(predicted, things, (a,)) for a in judge.attributes}
        scores["target"] = judged_accuracy(predicted, things, JUDGED[modality])
        by_scale[str(scale)] = scores
    best = max(by_scale, key=lambda s: by_scale[s]["target"])
    return {"accuracy": by_scale[best]["target"], "target": TARGETS[f"generate {kind}"],
            "judged": list(JUDGED[modality]), "guidance_scale": float(best), "sample_steps": sample_steps,
            "n_eval": n, "by_guidance": by_scale, "judge_on_real": judge_scores,
            "judge_on_real_min": judge_score(judge_scores, JUDGED[modality])}
