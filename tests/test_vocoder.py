"""Unit vocoder: units -> 16 kHz waveforms, batching, save/load, and fairseq unit HiFi-GAN checkpoints.

The fairseq checkpoint is built by ``FairseqCodeGenerator`` below, which follows fairseq's CodeGenerator
(fairseq/models/text_to_speech/codehifigan.py + hifigan.py + fastspeech2.VariancePredictor) module for module,
so its ``state_dict()`` has fairseq's key layout (``dict.``, ``dur_predictor.conv1.0.``, weight-normed
``weight_g`` / ``weight_v`` convs) and its forward pass is the reference the loaded vocoder must reproduce.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anymodal.errors import CheckpointError, ConfigError, TokenProtocolError
from anymodal.media import Audio, Modality, Units
from decoders.vocoder import UnitVocoder


@pytest.fixture(scope="module")
def vocoder():
    return UnitVocoder.from_config()


def test_units_become_16khz_audio_of_plausible_length(vocoder):
    assert vocoder.modality == Modality.AUDIO and vocoder.num_units == 50 and vocoder.samples_per_unit == 320
    (audio,) = vocoder.decode_units([list(range(50))])
    assert isinstance(audio, Audio) and audio.sample_rate == 16000
    # at least one 20 ms frame per unit; the tiny random duration predictor gives exactly one
    assert audio.waveform.shape == (1, 50 * 320) and audio.seconds == 1.0
    assert torch.isfinite(audio.waveform).all() and audio.waveform.abs().max() <= 1
    assert audio.waveform.std() > 0
    torch.testing.assert_close(vocoder.decode_units([list(range(50))])[0].waveform, audio.waveform)


def test_batch_matches_one_at_a_time(vocoder):
    rows = [list(range(40)), list(range(10, 50)) + list(range(20)), Units([1, 2, 2, 7])]
    batched = vocoder.decode_units(rows)
    singles = vocoder.decode_units(rows, batched=False)
    for b, s, row in zip(batched, singles, rows):
        assert b.waveform.shape == s.waveform.shape == (1, len(getattr(row, "ids", row)) * 320)
    torch.testing.assert_close(batched[1].waveform, singles[1].waveform)  # the longest row has no padding
    # shorter rows agree until HiFi-GAN's receptive field reaches the padding (documented: last ~5 frames)
    torch.testing.assert_close(batched[0].waveform[:, :-6 * 320], singles[0].waveform[:, :-6 * 320])
    torch.testing.assert_close(singles[0].waveform, vocoder.decode_units([rows[0]])[0].waveform)


def test_save_and_load_back(vocoder, tmp_path):
    vocoder.save_pretrained(tmp_path)
    loaded = UnitVocoder.from_pretrained(tmp_path)
    units = [[5, 5, 9, 31, 2]]
    torch.testing.assert_close(loaded.decode_units(units)[0].waveform, vocoder.decode_units(units)[0].waveform)


def test_bad_units_and_options(vocoder):
    with pytest.raises(TokenProtocolError, match=r"ids \[50\] outside this vocoder's 50 units"):
        vocoder.decode_units([[1, 50]])
    with pytest.raises(TokenProtocolError, match="sequence 1 is empty"):
        vocoder.decode_units([[1], []])
    with pytest.raises(TokenProtocolError, match="integer unit ids"):
        vocoder.decode_units([[1.5, 2]])
    # integer tensors / numpy rows are unit ids too
    torch.testing.assert_close(vocoder.decode_units([torch.tensor([3, 4])])[0].waveform,
                               vocoder.decode_units([[3, 4]])[0].waveform)
    with pytest.raises(ConfigError, match="speaker"):
        vocoder.decode_units([[1]], speaker=1)
    with pytest.raises(ConfigError, match="unknown tiny unit vocoder option"):
        UnitVocoder.from_config({"units": 10})


# ---- fairseq unit HiFi-GAN ------------------------------------------------------------------------------

FAIRSEQ_CONFIG = {
    "resblock": "1", "upsample_rates": [5, 4, 4, 2, 2], "upsample_kernel_sizes": [11, 8, 8, 4, 4],
    "upsample_initial_channel": 32, "resblock_kernel_sizes": [3, 7], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "num_embeddings": 20, "embedding_dim": 16, "model_in_dim": 16, "segment_size": 8960, "code_hop_size": 320,
    "sampling_rate": 16000,
    "dur_predictor_params": {"encoder_embed_dim": 16, "var_pred_hidden_dim": 16, "var_pred_kernel_size": 3,
                             "var_pred_dropout": 0.5},
}
weight_norm = nn.utils.weight_norm  # fairseq's (pre-parametrization) weight norm: weight_g / weight_v keys


class FairseqVariancePredictor(nn.Module):
    def __init__(self, dim, kernel):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2), nn.ReLU())
        self.ln1 = nn.LayerNorm(dim)
        self.conv2 = nn.Sequential(nn.Conv1d(dim, dim, kernel, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, 1)

    def forward(self, x):  # [B, T, C] -> [B, T]
        x = self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2))
        x = self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2))
        return self.proj(x).squeeze(2)


class FairseqResBlock(nn.Module):
    def __init__(self, ch, kernel, dilations):
        super().__init__()
        self.convs1 = nn.ModuleList(weight_norm(nn.Conv1d(ch, ch, kernel, 1, dilation=d, padding=(kernel * d - d) // 2))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(weight_norm(nn.Conv1d(ch, ch, kernel, 1, padding=(kernel - 1) // 2))
                                    for _ in dilations)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1)) + x
        return x


class FairseqCodeGenerator(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, dim = cfg["upsample_initial_channel"], cfg["embedding_dim"]
        self.conv_pre = weight_norm(nn.Conv1d(dim * (2 if cfg.get("multispkr") else 1), ch, 7, 1, padding=3))
        self.ups = nn.ModuleList(weight_norm(nn.ConvTranspose1d(ch // 2 ** i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
                                 for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"])))
        self.resblocks = nn.ModuleList(FairseqResBlock(ch // 2 ** (i + 1), k, d) for i in range(len(self.ups))
                                       for k, d in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"]))
        self.conv_post = weight_norm(nn.Conv1d(ch // 2 ** len(self.ups), 1, 7, 1, padding=3))
        self.num_kernels = len(cfg["resblock_kernel_sizes"])
        self.dict = nn.Embedding(cfg["num_embeddings"], dim)
        self.spkr = nn.Embedding(cfg.get("num_speakers", 200), dim) if cfg.get("multispkr") else None
        params = cfg.get("dur_predictor_params")
        self.dur_predictor = FairseqVariancePredictor(dim, params["var_pred_kernel_size"]) if params else None

    def forward(self, code, spkr=None):  # code [1, T] -> waveform [N]
        x = self.dict(code).transpose(1, 2)
        if self.dur_predictor is not None:
            log_dur = self.dur_predictor(x.transpose(1, 2))
            x = torch.repeat_interleave(x, torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=1).view(-1), dim=2)
        if self.spkr is not None:
            x = torch.cat([x, self.spkr(spkr).transpose(1, 2).expand(-1, -1, x.shape[-1])], dim=1)
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x))).view(-1)


def save_fairseq(folder, cfg, name="g_00500000", seed=0):
    """A fairseq CodeHiFiGAN vocoder folder: config.json + {"generator": state_dict}. Returns the reference model."""
    torch.manual_seed(seed)
    generator = FairseqCodeGenerator(cfg).eval()
    if generator.dur_predictor is not None:  # durations of 1-3 frames, so duration prediction is exercised
        nn.init.normal_(generator.dur_predictor.proj.weight, std=0.5)
        nn.init.constant_(generator.dur_predictor.proj.bias, 1.0)
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.save({"generator": generator.state_dict()}, folder / name)
    return generator


def test_fairseq_checkpoint_reproduces_the_fairseq_generator(tmp_path):
    reference = save_fairseq(tmp_path, FAIRSEQ_CONFIG)
    assert "conv_pre.weight_g" in reference.state_dict() and "dur_predictor.conv1.0.weight" in reference.state_dict()
    vocoder = UnitVocoder.from_pretrained(tmp_path)
    assert vocoder.num_units == 20 and vocoder.sample_rate == 16000
    units = [3, 3, 17, 0, 8, 19, 5, 11]
    with torch.inference_mode():
        expected = reference(torch.tensor([units]))
    (audio,) = vocoder.decode_units([units])
    assert expected.numel() > len(units) * 320  # some units lasted more than one frame
    torch.testing.assert_close(audio.waveform[0], expected, atol=1e-5, rtol=1e-4)


def test_fairseq_multispeaker_without_duration_predictor(tmp_path):
    cfg = {**FAIRSEQ_CONFIG, "multispkr": True, "num_speakers": 4, "model_in_dim": 32, "dur_predictor_params": None}
    reference = save_fairseq(tmp_path, cfg, name="vocoder.pt")
    vocoder = UnitVocoder.from_pretrained(tmp_path)
    units = [1, 2, 3, 4, 5]
    with torch.inference_mode():
        expected = reference(torch.tensor([units]), spkr=torch.tensor([[2]]))
    (audio,) = vocoder.decode_units([units], speaker=2)
    assert audio.waveform.shape == (1, len(units) * 320)  # no duration predictor: one frame per unit
    torch.testing.assert_close(audio.waveform[0], expected, atol=1e-5, rtol=1e-4)


def test_fairseq_layouts_that_do_not_map_are_refused(tmp_path):
    for name, cfg, message in [
        ("f0", {**FAIRSEQ_CONFIG, "f0": True}, "conditioned on 'f0'"),
        ("res2", {**FAIRSEQ_CONFIG, "resblock": "2"}, "residual blocks of type 1"),
        ("dur", {**FAIRSEQ_CONFIG, "dur_predictor_params": {"encoder_embed_dim": 16, "var_pred_hidden_dim": 32,
                                                            "var_pred_kernel_size": 3}}, "does not map"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(cfg))
        torch.save({"generator": {}}, folder / "g_00000001")
        with pytest.raises(CheckpointError, match=message):
            UnitVocoder.from_pretrained(folder)


def test_missing_or_ambiguous_vocoder_files(tmp_path):
    with pytest.raises(CheckpointError, match="mhubert"):
        UnitVocoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json"):
        UnitVocoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(FAIRSEQ_CONFIG))
    with pytest.raises(CheckpointError, match="exactly one generator checkpoint .* found none"):
        UnitVocoder.from_pretrained(tmp_path)
    save_fairseq(tmp_path, FAIRSEQ_CONFIG, name="g_00000100")
    save_fairseq(tmp_path, FAIRSEQ_CONFIG, name="g_00000200", seed=1)
    with pytest.raises(CheckpointError, match="g_00000100, g_00000200; pass checkpoint=NAME"):
        UnitVocoder.from_pretrained(tmp_path)
    assert UnitVocoder.from_pretrained(tmp_path, checkpoint="g_00000200").num_units == 20
    (tmp_path / "g_00000100").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read the generator checkpoint"):
        UnitVocoder.from_pretrained(tmp_path, checkpoint="g_00000100")
