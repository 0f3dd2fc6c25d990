"""Read and write media files. Every unreadable, corrupt or unsupported file is a ``MediaError`` that
names the file and says what would work. Audio goes through soundfile (no system FFmpeg needed),
video through PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import MediaError
from .media import Audio, Image, Media, Modality, Video

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".webm", ".mkv"}


def modality_of(path: str | Path) -> Modality:
    suffix = Path(path).suffix.lower()
    for modality, suffixes in ((Modality.IMAGE, IMAGE_SUFFIXES), (Modality.AUDIO, AUDIO_SUFFIXES),
                               (Modality.VIDEO, VIDEO_SUFFIXES)):
        if suffix in suffixes:
            return modality
    known = sorted(IMAGE_SUFFIXES | AUDIO_SUFFIXES | VIDEO_SUFFIXES)
    raise MediaError(f"{path}: unsupported file type {suffix or '(none)'!r}; anymodal reads {', '.join(known)}")


def load(path: str | Path) -> Media:
    """Any supported media file -> the matching Media container."""
    readers = {Modality.IMAGE: read_image, Modality.AUDIO: read_audio, Modality.VIDEO: read_video}
    return readers[modality_of(path)](path)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    return path


def read_image(path: str | Path) -> Image:
    from PIL import Image as PILImage, UnidentifiedImageError

    path = _existing(path)
    try:
        with PILImage.open(path) as im:
            im.load()  # decodes the whole file: truncated data fails here, not later
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"{path}: not a readable image ({e}); re-export it as PNG or JPEG") from None
    return Image(torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), source=str(path))


def write_image(image: Image, path: str | Path) -> Path:
    from PIL import Image as PILImage

    pixels = (image.pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()  # [H, W, 3]
    PILImage.fromarray(pixels).save(path)
    return Path(path)


def read_audio(path: str | Path) -> Audio:
    import soundfile

    path = _existing(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [N, C]
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise MediaError(f"{path}: not a readable audio file ({e}); use WAV, FLAC, OGG or MP3") from None
    if data.shape[0] == 0:
        raise MediaError(f"{path}: the audio file holds no samples")
    return Audio(torch.from_numpy(data.T.copy()), sample_rate=int(rate), source=str(path))


def write_audio(audio: Audio, path: str | Path) -> Path:
    import soundfile

    soundfile.write(str(path), audio.waveform.clamp(-1, 1).T.cpu().numpy(), audio.sample_rate, subtype="PCM_16")
    return Path(path)


def read_video(path: str | Path) -> Video:
    import av

    path = _existing(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 25)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]  # T x [H, W, 3]
    except (av.FFmpegError, IndexError, ValueError) as e:
        raise MediaError(f"{path}: not a readable video ({e}); re-encode it as H.264 MP4") from None
    if not frames:
        raise MediaError(f"{path}: the video holds no frames")
    pixels = torch.from_numpy(np.stack(frames)).float().div(255).permute(0, 3, 1, 2)  # [T, 3, H, W]
    return Video(pixels.contiguous(), fps=fps, source=str(path))


def write_video(video: Video, path: str | Path, lossless: bool = False) -> Path:
    """H.264 in mp4: yuv420p, which every player plays (an odd last row or column is cropped). ``lossless``: RGB
    H.264 at qp 0 (libx264rgb), which decodes to exactly these frames, for training data: lossy x264 output varies
    from run to run on a busy machine, and with it what a run learns. Browsers do not play it."""
    import av

    frames = (video.frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # [T, H, W, 3]
    height, width = frames.shape[1:3] if lossless else (frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2)
    codec, pix_fmt, options = ("libx264rgb", "rgb24", {"qp": "0"}) if lossless else ("libx264", "yuv420p", {})
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=max(1, round(video.fps)), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame[:height, :width].copy(), format="rgb24")))
        container.mux(stream.encode())
    return Path(path)


def save(media: Media, path: str | Path) -> Path:
    writers = {Modality.IMAGE: write_image, Modality.AUDIO: write_audio, Modality.VIDEO: write_video}
    if media.modality not in writers:
        raise MediaError(f"anymodal cannot write {media.modality.value} files; save the tensor with torch.save")
    return writers[media.modality](media, path)
