"""`anymodal encode`: many files -> one safetensors file keyed by path; bad files are named."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from anymodal import cli, io
from anymodal.media import Audio, Image
from encoders.clip import CLIPVisionEncoder
from encoders.hubert import HubertEncoder
from tiny_encoders import save_tiny_clip, save_tiny_hubert

CLIP = "encoders.clip:CLIPVisionEncoder"
HUBERT = "encoders.hubert:HubertEncoder"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    g = torch.Generator().manual_seed(0)
    images = [str(io.save(Image(torch.rand(3, 24 + 8 * i, 32, generator=g)), root / f"img{i}.png")) for i in range(3)]
    sounds = [str(io.save(Audio(0.3 * torch.rand(1, n, generator=g) - 0.15, 16000), root / f"s{n}.wav"))
              for n in (1600, 4000, 8000)]
    corrupt = root / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    return images, sounds, str(corrupt)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return (str(save_tiny_clip(tmp_path_factory.mktemp("clip"))),
            str(save_tiny_hubert(tmp_path_factory.mktemp("hubert"))))


def test_clip_embeddings_file(tmp_path, media, checkpoints):
    images, _, _ = media
    out = tmp_path / "emb.safetensors"
    rc = cli.main(["encode", *images, "--encoder", CLIP, "--encoder-path", checkpoints[0], "--feature", "embeds",
                   "--batch-size", "2", "--out", str(out)])
    assert rc == 0
    tensors = load_file(out)
    assert sorted(tensors) == sorted(images)
    encoder = CLIPVisionEncoder.from_pretrained(checkpoints[0], feature="embeds")
    want = encoder.encode(encoder.preprocess([io.load(p) for p in images]))  # [3, 1, 24]
    for path, row in zip(images, want):
        assert tensors[path].shape == (1, 24)
        torch.testing.assert_close(tensors[path], row, atol=1e-5, rtol=1e-5)
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["encoder"] == CLIP and f.metadata()["feature"] == "embeds"
    assert not list(tmp_path.glob("*.partial"))


def test_hubert_frames_keep_each_files_length(tmp_path, media, checkpoints):
    _, sounds, _ = media
    out = tmp_path / "frames.safetensors"
    assert cli.main(["encode", *sounds, "--encoder", HUBERT, "--encoder-path", checkpoints[1], "--layer", "2",
                     "--out", str(out)]) == 0
    tensors = load_file(out)
    assert [tensors[p].shape for p in sounds] == [(4, 32), (12, 32), (24, 32)]
    encoder = HubertEncoder.from_pretrained(checkpoints[1], layer=2)
    torch.testing.assert_close(tensors[sounds[1]], encoder.frame_features([io.load(sounds[1])])[0],
                               atol=2e-5, rtol=1e-4)


def test_bad_files_are_named(tmp_path, media, checkpoints, capsys):
    images, sounds, corrupt = media
    out = tmp_path / "emb.safetensors"
    args = ["--encoder", HUBERT, "--encoder-path", checkpoints[1], "--out", str(out)]
    assert cli.main(["encode", sounds[0], corrupt, *args]) == 2
    assert f"{corrupt}: not a readable audio file" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["encode", sounds[0], images[0], *args]) == 2
    assert f"{images[0]}: a image file, but HubertEncoder takes audio" in capsys.readouterr().err
    assert cli.main(["encode", sounds[0], str(tmp_path / "gone.wav"), *args]) == 2
    assert "gone.wav: no such file" in capsys.readouterr().err

    assert cli.main(["encode", sounds[0], corrupt, images[0], sounds[1], *args, "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert f"skipped {corrupt}" in err and f"skipped {images[0]}" in err
    assert sorted(load_file(out)) == sorted([sounds[0], sounds[1]])


def test_unknown_encoder_and_duplicates(tmp_path, media, capsys):
    images, _, _ = media
    assert cli.main(["encode", images[0], "--encoder", "encoders.nothing:Nope", "--out", str(tmp_path / "x")]) == 2
    assert "cannot be imported" in capsys.readouterr().err
    assert cli.main(["encode", images[0], images[0], "--encoder", CLIP, "--encoder-path", "x",
                     "--out", str(tmp_path / "x")]) == 2
    assert "given more than once" in capsys.readouterr().err
