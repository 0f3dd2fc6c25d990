"""`anymodal index build / search` with a tiny CLIP saved in the transformers layout."""

import argparse

import pytest
import torch

from anymodal import io
from anymodal.commands import index as index_command
from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.index import VectorIndex
from anymodal.media import Image
from anymodal.registry import available
from encoders.clip import CLIPVisionEncoder
from tiny_encoders import save_tiny_clip

CLIP = "encoders.clip:CLIPVisionEncoder"


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    index_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["index", *map(str, argv)])
    return args.func(args)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))  # a CLIPModel folder: both towers + tokenizer


def write_images(folder, n, seed):
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        io.write_image(Image(torch.rand(3, 32, 32, generator=generator)), folder / f"img{seed}_{i}.png")


def build(media, clip_dir, out, *extra):
    return cli("build", media, "--encoder", CLIP, "--encoder-path", clip_dir, "--out", out, "--batch-size", 4, *extra)


def test_build_then_search_finds_the_query_image(tmp_path, clip_dir, capsys):
    write_images(tmp_path / "media" / "sub", 10, seed=1)
    (tmp_path / "media" / "notes.txt").write_text("not media: ignored")
    assert build(tmp_path / "media", clip_dir, tmp_path / "idx") == 0
    index = VectorIndex.load(tmp_path / "idx", expect_encoder=CLIP, expect_dim=32)
    assert len(index) == 10 and index.encoder_path == str(clip_dir)
    assert index.items[0]["metadata"] == {"path": "sub/img1_0.png", "modality": "image"}

    capsys.readouterr()
    query = tmp_path / "media" / "sub" / "img1_3.png"
    assert cli("search", tmp_path / "idx", "--image", query, "--k", 3) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    score, uri = lines[0].split("\t")
    assert uri == str(query.resolve()) and float(score) == pytest.approx(1.0, abs=1e-3)


def test_rerun_skips_indexed_items_and_adds_new_ones(tmp_path, clip_dir, capsys):
    write_images(tmp_path / "media", 6, seed=2)
    build(tmp_path / "media", clip_dir, tmp_path / "idx", "--save-every", 1)
    assert "indexed 6 new items (0 already there" in capsys.readouterr().out
    before = VectorIndex.load(tmp_path / "idx")

    build(tmp_path / "media", clip_dir, tmp_path / "idx")
    assert "indexed 0 new items (6 already there" in capsys.readouterr().out
    write_images(tmp_path / "media", 2, seed=3)
    (tmp_path / "media" / "broken.png").write_bytes(b"\x89PNG broken")
    build(tmp_path / "media", clip_dir, tmp_path / "idx")
    assert "indexed 2 new items (6 already there, 1 unreadable)" in capsys.readouterr().out
    after = VectorIndex.load(tmp_path / "idx")
    assert len(after) == 8 and after.items[:6] == before.items


def test_trained_kind_collects_enough_vectors_before_training(tmp_path, clip_dir):
    write_images(tmp_path / "media", 12, seed=4)
    build(tmp_path / "media", clip_dir, tmp_path / "idx", "--kind", "ivf", "--option", "nlist=2",
          "--option", "nprobe=2")
    index = VectorIndex.load(tmp_path / "idx")
    assert (index.kind, len(index), index.options["nlist"]) == ("ivf", 12, 2)
    with pytest.raises(ConfigError, match="needs at least 64 vectors to train, got 12"):
        build(tmp_path / "media", clip_dir, tmp_path / "idx2", "--kind", "ivf", "--option", "nlist=64")
    assert not (tmp_path / "idx2").exists()


def test_resume_refuses_another_encoder_or_kind(tmp_path, clip_dir):
    write_images(tmp_path / "media", 2, seed=5)
    build(tmp_path / "media", clip_dir, tmp_path / "idx")
    with pytest.raises(CheckpointError, match="encoder checkpoint"):
        build(tmp_path / "media", tmp_path / "elsewhere", tmp_path / "idx")
    with pytest.raises(ConfigError, match="already exists as a flat index"):
        build(tmp_path / "media", clip_dir, tmp_path / "idx", "--kind", "hnsw")
    if "clip" in available("encoders"):  # the same class under its entry-point name is another encoder id
        with pytest.raises(CheckpointError, match="was built with encoder"):
            cli("build", tmp_path / "media", "--encoder", "clip", "--encoder-path", clip_dir, "--out", tmp_path / "idx")


def test_text_search_in_the_joint_space(tmp_path, clip_dir, capsys):
    write_images(tmp_path / "media", 6, seed=6)
    build(tmp_path / "media", clip_dir, tmp_path / "idx", "--feature", "embeds")
    index = VectorIndex.load(tmp_path / "idx")
    assert (index.dim, index.encoder_options) == (24, {"feature": "embeds"})

    capsys.readouterr()
    assert cli("search", tmp_path / "idx", "--text", "a cat", "--k", 6) == 0
    printed = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]

    encoder = CLIPVisionEncoder.from_pretrained(str(clip_dir), feature="embeds")
    paths = sorted((tmp_path / "media").glob("*.png"))
    images = encoder.encode(encoder.preprocess([io.read_image(p) for p in paths]))[:, 0]  # [6, 24]
    text = encoder.encode_text(["a cat"], normalize=True)  # [1, 24]
    cosine = (torch.nn.functional.normalize(images, dim=-1) @ text.T)[:, 0]  # [6]
    want = sorted(zip(cosine.tolist(), [str(p.resolve()) for p in paths]), reverse=True)
    assert [uri for _, uri in printed] == [uri for _, uri in want]
    assert [float(score) for score, _ in printed] == pytest.approx([s for s, _ in want], abs=1e-3)


def test_text_search_needs_the_joint_space(tmp_path, clip_dir):
    write_images(tmp_path / "media", 2, seed=7)
    build(tmp_path / "media", clip_dir, tmp_path / "idx")  # pooled vision features: 32-dim, not CLIP's space
    with pytest.raises(ConfigError, match="--feature embeds"):
        cli("search", tmp_path / "idx", "--text", "a cat")


def test_bad_arguments(tmp_path, clip_dir):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        build(tmp_path, clip_dir, tmp_path / "idx", "--option", "nlist")
    with pytest.raises(MediaError, match="no such folder"):
        build(tmp_path / "missing", clip_dir, tmp_path / "idx")
    with pytest.raises(ConfigError, match="--batch-size"):
        build(tmp_path, clip_dir, tmp_path / "idx", "--batch-size", 0)
