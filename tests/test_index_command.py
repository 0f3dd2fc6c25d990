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

CLIP = "encoders.clip:CLIPVisionEncoder"
TINY_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "image_size": 32, "patch_size": 8}


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    index_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["index", *map(str, argv)])
    return args.func(args)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from encoders.clip import CLIPVisionEncoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip")
    CLIPVisionEncoder.from_config(TINY_CLIP).save_pretrained(folder)
    return folder


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


def test_text_query_needs_a_text_tower(tmp_path, clip_dir):
    write_images(tmp_path / "media", 2, seed=6)
    build(tmp_path / "media", clip_dir, tmp_path / "idx")
    with pytest.raises(ConfigError, match="cannot embed text"):
        cli("search", tmp_path / "idx", "--text", "a red square")


def test_bad_arguments(tmp_path, clip_dir):
    with pytest.raises(ConfigError, match="--encoder-path"):
        cli("build", tmp_path, "--encoder", CLIP, "--out", tmp_path / "idx")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        build(tmp_path, clip_dir, tmp_path / "idx", "--option", "nlist")
    with pytest.raises(MediaError, match="no such folder"):
        build(tmp_path / "missing", clip_dir, tmp_path / "idx")
