"""The toy world's ImageBind: a tiny ``encoders.imagebind`` model trained from scratch on the world, the way
ImageBind was built, so that images, sounds and videos land in one embedding space with text.

    images <-> captions         InfoNCE ("a small red circle"); the image tower is the anchor of the space
    sounds <-> images           InfoNCE between a sound and the image of the same thing: ImageBind binds audio
                                to images, never to text, and sound -> caption works through the images
    videos <-> motion captions  InfoNCE ("a small red circle moving left"): the direction of motion is in no
                                still image, so videos cannot be bound through images; they learn it from text

Each step mixes the three pairings. Media are rendered and run through ``ImageBindEncoder.preprocess`` once,
so training sees exactly the tensors inference sees; the result is saved with ``save_pretrained`` (the
official keys as float16 safetensors, ``config.json`` with the toy geometry) and loads back, as float32, with
``ImageBindEncoder.from_pretrained``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .render import world_items
from .world import ALL_THINGS

# The toy geometry: 32x32 images in 8x8 patches (16 tokens; 4x4 patches learned shapes no better per step at 4x
# the cost); one 1-s clip of 32 mel bins x 100 frames (10 ms) in 16x16 patches (2 x 6 tokens); one
# video clip of its first and last frame (8 frames at 8 fps = 1 s), 32x32 frames, one centre crop:
# the 3-D stem's 2-frame kernel sees where the object went.
# Text is 32 wide: its 49408-row CLIP vocabulary is most of the checkpoint (6.3 of ~7.6 MB).
TOY_SPEC: dict[str, Any] = dict(
    image_size=32, kernel_size=(2, 8, 8), out_embed_dim=64,
    vision_embed_dim=64, vision_num_blocks=2, vision_num_heads=4,
    audio_embed_dim=64, audio_num_blocks=2, audio_num_heads=4, audio_num_mel_bins=32, audio_target_len=100,
    audio_kernel_size=16, audio_stride=16, audio_drop_path=0.0,
    text_embed_dim=32, text_num_blocks=1, text_num_heads=2,
    depth_embed_dim=32, depth_num_blocks=1, depth_num_heads=2, thermal_embed_dim=32, thermal_num_blocks=1,
    thermal_num_heads=2, imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=2,
    preprocess=dict(audio_clip_duration=1.0, audio_clips_per_item=1, video_clip_duration=1.0,
                    video_clips_per_item=1, video_crops=1))

CAPTIONS = sorted({thing.caption for thing in ALL_THINGS})  # 32: what images and sounds show
MOTION_CAPTIONS = sorted({thing.motion_caption for thing in ALL_THINGS})  # 128: what videos show
# every shape is left-right symmetric (the triangle points up), so a mirrored image shows the same thing and a
# mirrored video the same thing moving the mirrored way: free extra training data (shape is what is slow to learn)
MIRRORED_DIRECTION = {"left": "right", "right": "left", "up": "up", "down": "down"}
# videos per item in a batch: the shapes of the small moving objects learn slowest, and 64 more
# videos add only ~10% to a step (the text pass over all 160 captions is the fixed cost)
VIDEOS_PER_ITEM = 2
PAIRINGS = {"image": "vision", "sound": "audio", "video": "vision"}  # each world medium -> its model input key


def _world_tensors(encoder, split: str, n: int, seed: int) -> dict[str, Any]:
    """The split's first ``n`` items as model inputs (through ``encoder.preprocess``) + their caption indices."""
    items = world_items(split, n, seed)
    data = {kind: encoder.preprocess([item.render(kind) for item in items]).tensors[key]
            for kind, key in PAIRINGS.items()}
    data["caption"] = torch.tensor([CAPTIONS.index(item.thing.caption) for item in items])  # [N]
    data["motion"] = torch.tensor([MOTION_CAPTIONS.index(item.thing.motion_caption) for item in items])  # [N]
    return data


def _mirrored_motion() -> torch.Tensor:
    """[128]: for each motion caption, the index of its mirror image's motion caption."""
    things = {thing.motion_caption: thing for thing in ALL_THINGS}
    mirrored = [replace(things[c], direction=MIRRORED_DIRECTION[things[c].direction]).motion_caption
                for c in MOTION_CAPTIONS]
    return torch.tensor([MOTION_CAPTIONS.index(c) for c in mirrored])


def _mirror(media: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """[B, ..., W] with the rows where ``flip`` [B] is true mirrored left-right."""
    return torch.where(flip.view(-1, *[1] * (media.ndim - 1)), media.flip(-1), media)


def _batch(data: dict, items: torch.Tensor, videos: torch.Tensor, flip: torch.Tensor,
           mirrored_motion: torch.Tensor) -> dict[str, torch.Tensor]:
    """``items`` [B] (their image, sound, caption) and ``videos`` [V] (video, motion caption), the rows of
    each where ``flip`` [V >= B] is true mirrored."""
    motion = data["motion"][videos]
    return {"image": _mirror(data["image"][items], flip[:len(items)]), "sound": data["sound"][items],
            "caption": data["caption"][items], "video": _mirror(data["video"][videos], flip),
            "motion": torch.where(flip, mirrored_motion[motion], motion)}


def _contrastive_losses(model, batch: dict, texts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One mixed batch (``_batch``) -> the image -> caption, sound <-> image and video -> motion caption
    InfoNCE losses.

    Text logits run against every distinct caption of the world rather than the batch's: a batch of 64
    items repeats the 32 captions, and in-batch negatives would include copies of the positive. For the
    same reason sound <-> image counts every image of the same thing as a positive (soft targets).
    """
    out = model({"text": torch.cat([texts["caption"], texts["motion"]])})["text"]  # [32 + 128, D], scaled
    captions, motions = out[:len(CAPTIONS)], out[len(CAPTIONS):]
    image = model({"vision": batch["image"]})["vision"]  # [B, D] unit length
    video = F.normalize(model({"vision": batch["video"]})["vision"], dim=-1)  # clip mean -> unit again
    sound = model({"audio": batch["sound"]})["audio"]  # [B, D], unit x the audio temperature
    # images are the anchor the sounds bind to (ImageBind binds audio to a frozen image tower): detached, so
    # that sounds cannot pull the image space away from the text
    caption = batch["caption"]  # [B]
    same = (caption[:, None] == caption[None]).float()  # [B, B]
    targets = same / same.sum(-1, keepdim=True)
    sound_logits = sound @ image.detach().T  # [B, B]
    return {"image": F.cross_entropy(image @ captions.T, caption),
            "video": F.cross_entropy(video @ motions.T, batch["motion"]),
            "sound": (F.cross_entropy(sound_logits, targets) + F.cross_entropy(sound_logits.T, targets)) / 2}


@torch.no_grad()
def evaluate_encoder(encoder, n: int = 256, seed: int = 0) -> dict[str, float]:
    """Zero-shot accuracy on ``n`` validation items through the inference path (``preprocess`` + ``encode``):
    the right caption among all 32 (image, sound) or all 128 motion captions (video); and image -> image
    nearest-neighbour agreement on shape, colour and size (mean of the three)."""
    encoder.eval()
    items = world_items("validation", n, seed)
    things = [item.thing for item in items]

    def embed(media) -> torch.Tensor:
        return encoder.encode(encoder.preprocess(media))[:, 0]  # [N, D] unit length

    captions, motions = embed(CAPTIONS), embed(MOTION_CAPTIONS)
    caption = torch.tensor([CAPTIONS.index(t.caption) for t in things])  # [n]
    motion = torch.tensor([MOTION_CAPTIONS.index(t.motion_caption) for t in things])  # [n]
    images = embed([item.render("image") for item in items])
    metrics = {}
    for kind, texts, right in (("image", captions, caption), ("sound", captions, caption), ("video", motions, motion)):
        media = images if kind == "image" else embed([item.render(kind) for item in items])
        metrics[f"{kind}_zero_shot"] = ((media @ texts.T).argmax(-1) == right).float().mean().item()
    similarity = images @ images.T - 2 * torch.eye(n)  # an image is not its own neighbour
    neighbours = similarity.argmax(-1).tolist()
    agreement = [sum(things[i].attribute(a) == things[j].attribute(a) for i, j in enumerate(neighbours)) / n
                 for a in ("shape", "colour", "size")]
    metrics["image_nn_agreement"] = sum(agreement) / len(agreement)
    return metrics


def train_encoder(out: str | Path, *, seed: int = 0, train_items: int = 4096, steps: int = 2000,
                  batch_size: int = 64, lr: float = 2e-3, spec: dict[str, Any] | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Train the toy world's ImageBind from scratch and save it to ``out`` (``ImageBindEncoder.save_pretrained``),
    then write ``out/metrics.json`` last (validation metrics, see ``evaluate_encoder``); returns the metrics.

    ``spec``: the model arguments + ``"preprocess"`` block (``config.json``'s schema); default ``TOY_SPEC``.
    Each of the ``steps`` AdamW steps (one-cycle schedule, peak ``lr``) takes ``batch_size`` items (their image
    and sound) and ``VIDEOS_PER_ITEM * batch_size`` videos from ``train_items`` train-split items.
    """
    from encoders.imagebind import ImageBindEncoder  # the plugin; the core package does not import it at load

    out = Path(out)
    (out / "metrics.json").unlink(missing_ok=True)  # a rerun is not "done" until it has written it again
    start, start_cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    encoder = ImageBindEncoder.from_config(TOY_SPEC if spec is None else spec, trainable=True)
    data = _world_tensors(encoder, "train", train_items, seed)
    texts = {"caption": encoder.preprocess(CAPTIONS).tensors["text"],  # [32, 77]
             "motion": encoder.preprocess(MOTION_CAPTIONS).tensors["text"]}  # [128, 77]
    mirrored_motion = _mirrored_motion()
    model = encoder.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    history = []
    bar = tqdm(range(steps), desc="toy ImageBind", disable=not progress)
    for _ in bar:
        items = torch.randint(train_items, (batch_size,), generator=generator)
        videos = torch.randint(train_items, (VIDEOS_PER_ITEM * batch_size,), generator=generator)
        flip = torch.rand(VIDEOS_PER_ITEM * batch_size, generator=generator) < 0.5
        losses = _contrastive_losses(model, _batch(data, items, videos, flip, mirrored_motion), texts)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append({k: v.item() for k, v in losses.items()})
        bar.set_postfix({k: f"{v:.3f}" for k, v in history[-1].items()})
    train_seconds = time.perf_counter() - start
    metrics: dict[str, Any] = evaluate_encoder(encoder, seed=seed)
    window = history[-max(1, steps // 10):]  # the last tenth's mean: one batch is noisy
    metrics.update(first_loss={k: history[0][k] for k in PAIRINGS},
                   final_loss={k: sum(h[k] for h in window) / len(window) for k in PAIRINGS},
                   steps=steps, train_items=train_items, batch_size=batch_size, lr=lr, seed=seed,
                   train_seconds=round(train_seconds, 1), seconds=round(time.perf_counter() - start, 1),
                   # CPU time of this process: the wall time it would take alone on the machine (one thread)
                   cpu_seconds=round(time.process_time() - start_cpu, 1))
    encoder.save_pretrained(out, safe_serialization=True, dtype=torch.float16)  # 3.9 MB: the bundle ships it
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
