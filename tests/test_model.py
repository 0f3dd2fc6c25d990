"""The any-to-any loop on tiny random models: splice, loss masking, generation, bundle round trip."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from anymodal import Image, Modality, Turn
from anymodal.errors import CheckpointError, ConfigError, RegistryError, TokenProtocolError
from anymodal.model import AnyModalModel
from anymodal.processor import IGNORE
from anymodal.tiny import tiny_config


@pytest.fixture(scope="module")
def model(tiny_root):
    torch.manual_seed(0)
    return AnyModalModel.from_config(tiny_config(tiny_root)).eval()


def image(seed=0):
    return Image(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed)))


def test_placeholders_expand_to_encoder_tokens_and_labels_mask_non_answer(model):
    conversation = [Turn.user("what is this?", image()), Turn.assistant("a red circle")]
    example = model.processor.encode(conversation)
    holder = model.protocol.placeholder_id(Modality.IMAGE)
    assert example.input_ids.count(holder) == model.encoders["image"].tokens_per_item
    answer = model.tokenizer.encode("a red circle", add_special_tokens=False) + [model.tokenizer.eos_token_id]
    labelled = [lab for lab in example.labels if lab != IGNORE]
    assert labelled == answer  # only the answer (and its eos) is learned
    start = len(example.labels) - len(answer) - len(model.tokenizer.encode(model.config.prompt.separator, add_special_tokens=False))
    assert example.labels[start: start + len(answer)] == answer
    assert all(lab == IGNORE for i, lab in zip(example.input_ids, example.labels) if i == holder)


def test_forward_loss_is_mean_over_answer_tokens_only(model):
    batch = model.processor.collate([model.processor.encode([Turn.user("hi", image()), Turn.assistant("a red circle")]),
                                     model.processor.encode([Turn.user("describe"), Turn.assistant("two")])])
    with torch.no_grad():
        out = model(batch)
        logits = out.logits[:, :-1]
        labels = batch.labels[:, 1:]
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                     ignore_index=IGNORE)
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert (batch.labels != IGNORE).sum() < batch.attention_mask.sum()


def test_image_features_reach_the_llm(model):
    a = model.processor.collate([model.processor.encode([Turn.user("what?", image(0))])])
    b = model.processor.collate([model.processor.encode([Turn.user("what?", image(1))])])
    with torch.no_grad():
        assert not torch.allclose(model(a).logits[0, -1], model(b).logits[0, -1])


def test_forward_returns_signal_and_retrieval_hidden_states(model):
    answer = "here " + model.protocol.signal_text(Modality.IMAGE) + " and [RET]"
    batch = model.processor.collate([model.processor.encode([Turn.user("show me"), Turn.assistant(answer)])])
    with torch.no_grad():
        out = model(batch)
    d = model.llm.get_input_embeddings().embedding_dim
    assert out.signal_hidden[Modality.IMAGE].shape == (1, 4, d)
    assert out.retrieval_hidden.shape == (1, d)


def test_image_in_text_out(model):
    response = model.generate(Turn.user("what is in this image?", image()), max_new_tokens=8)
    assert isinstance(response.text, str) and response.parts
    assert response.media() == [] and response.retrieved == []
    assert 0 < len(response.token_ids) <= 8


def test_batched_generation_matches_single(model):
    turns = [Turn.user("what is this?", image(0)), Turn.user("describe the picture in a few words", image(1))]
    batched = model.generate_batch(turns, max_new_tokens=6)
    single = [model.generate(t, max_new_tokens=6) for t in turns]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]


def test_stream_yields_the_same_text(model):
    turn = Turn.user("describe the picture", image())
    pieces = list(model.stream(turn, max_new_tokens=8))
    assert "".join(p for p in pieces if isinstance(p, str)).strip() == model.generate(turn, max_new_tokens=8).text


def test_placeholder_count_mismatch(model):
    with pytest.raises(TokenProtocolError, match="2 <image> placeholder.*1 image item"):
        model.generate(Turn("compare <image> and <image>", [image()]))
    with pytest.raises(TokenProtocolError, match="0 <image> placeholder.*1 image item"):
        model.generate(Turn("no placeholder here", [image()]))


def test_unknown_generation_option(model):
    with pytest.raises(ConfigError, match="max_new_tokens"):
        model.generate(Turn.user("hi"), max_tokens=3)


def test_save_load_gives_identical_logits_and_ids(model, tmp_path):
    model.save_pretrained(tmp_path / "bundle")
    loaded = AnyModalModel.from_pretrained(tmp_path / "bundle")
    batch = model.processor.collate([model.processor.encode([Turn.user("what is this?", image())])])
    with torch.no_grad():
        assert torch.equal(model(batch).logits, loaded(batch).logits)
    turn = Turn.user("describe", image())
    assert loaded.generate(turn).token_ids == model.generate(turn).token_ids
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert {"anymodal.yaml", "projections.safetensors", "new_tokens.safetensors",
            "adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= set(manifest["files"])
    assert manifest["components"]["encoders"]["image"]["name"] == "clip"


def test_trained_state_survives_the_round_trip(model, tmp_path):
    """Non-trivial LoRA, projection and new-token weights (fresh LoRA is a no-op) come back exactly."""
    torch.manual_seed(1)
    fresh = AnyModalModel.from_config(tiny_config(model.config.llm.name_or_path.rsplit("/", 1)[0]))
    with torch.no_grad():
        for p in fresh.llm.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
        fresh.llm.get_input_embeddings().weight[fresh.protocol.ids["[IMG0]"]] += 1.0
    fresh.save_pretrained(tmp_path / "b")
    loaded = AnyModalModel.from_pretrained(tmp_path / "b")
    ids = torch.tensor([[1, 5, fresh.protocol.ids["[IMG0]"], 7]])
    with torch.no_grad():
        assert torch.equal(fresh.llm(input_ids=ids).logits, loaded.llm(input_ids=ids).logits)


def test_adapter_folder_loads_with_peft_alone(model, tmp_path):
    model.save_pretrained(tmp_path / "bundle")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "bundle" / "tokenizer")
    base = AutoModelForCausalLM.from_pretrained(model.config.llm.name_or_path)
    base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    peft_only = PeftModel.from_pretrained(base, tmp_path / "bundle" / "adapter")
    ids = torch.tensor([tokenizer.encode("what is in this image", add_special_tokens=False)])
    vocab = model.llm.get_base_model().config.vocab_size
    with torch.no_grad():
        theirs = peft_only(input_ids=ids).logits[..., :vocab]
        ours = model.llm(input_ids=ids).logits[..., :vocab]
    assert torch.allclose(theirs, ours, atol=1e-6)


def test_interrupted_save_keeps_the_previous_bundle(model, tmp_path, monkeypatch):
    target = tmp_path / "bundle"
    model.save_pretrained(target)
    before = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("anymodal.model.save_file", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(target)
    after = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temp folder left behind
    AnyModalModel.from_pretrained(target)


def test_bundle_with_a_missing_or_corrupt_file(model, tmp_path):
    model.save_pretrained(tmp_path / "bundle")
    (tmp_path / "bundle" / "projections.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="corrupted: projections.safetensors"):
        AnyModalModel.from_pretrained(tmp_path / "bundle")
    (tmp_path / "bundle" / "projections.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete: projections.safetensors is missing"):
        AnyModalModel.from_pretrained(tmp_path / "bundle")
    with pytest.raises(CheckpointError, match="not an anymodal bundle"):
        AnyModalModel.from_pretrained(tmp_path)


def test_unknown_encoder_name_and_missing_weights(tiny_root):
    config = tiny_config(tiny_root, decoders=False, retrieval=False)
    config.encoders["image"].name = "clipp"
    with pytest.raises(RegistryError, match="unknown encoder 'clipp'"):
        AnyModalModel.from_config(config)
    config = tiny_config(tiny_root, retrieval=False)
    config.decoders["image"].name = "dall-e"
    with pytest.raises(RegistryError, match="unknown decoder 'dall-e'.*stable-diffusion"):
        AnyModalModel.from_config(config)
    config = tiny_config(tiny_root, decoders=False, retrieval=False)
    config.llm.name_or_path = str(tiny_root / "nowhere")
    with pytest.raises(CheckpointError, match="nowhere"):
        AnyModalModel.from_config(config)
    with pytest.raises(ConfigError, match="'sound' is not one of"):
        AnyModalModel.from_config({**_dict(tiny_config(tiny_root, decoders=False, retrieval=False)),
                                   "encoders": {"sound": {"name": "clip", "name_or_path": str(tiny_root / "clip")}}})


def _dict(config):
    from anymodal.config import to_dict

    return to_dict(config)


class Recorder:
    """A DispatchListener that keeps what it is told."""

    def __init__(self):
        self.events = []

    def on_dispatch_start(self, name, inputs):
        self.events.append(("start", name, inputs))
        return len(self.events)

    def on_dispatch_end(self, handle, outputs):
        self.events.append(("end", handle, outputs))

    def on_dispatch_error(self, handle, error):
        self.events.append(("error", handle, error))


def test_text_in_image_out(model):
    """The random LLM never chooses [IMG0] itself: the prefill forces it, the processor completes the block."""
    listener = Recorder()
    response = model.generate(Turn.user("show me a red circle"), prefill="[IMG0]", listener=listener)
    images = response.media(Modality.IMAGE)
    assert len(images) == 1 and images[0].pixels.ndim == 3 and images[0].pixels.shape[0] == 3
    assert 0 <= images[0].pixels.min() and images[0].pixels.max() <= 1
    assert response.token_ids[:4] == model.protocol.block_ids(Modality.IMAGE)
    assert [e[:2] for e in listener.events] == [("start", "decode_image"), ("end", 1)]


def test_ret_retrieves_from_the_index(model):
    response = model.generate(Turn.user("find a picture of a dog"), prefill="[RET]", retrieval_k=3)
    found = response.retrieved
    assert len(found) == 3
    assert all(r.uri.startswith("toy://image/") for r in found)
    assert found[0].score >= found[1].score >= found[2].score


def test_mixed_answer_keeps_part_order(model):
    prefill = "look " + model.protocol.signal_text(Modality.IMAGE) + " similar [RET]"
    response = model.generate(Turn.user("show me", image()), prefill=prefill, max_new_tokens=4)
    kinds = [type(p).__name__ for p in response.parts][:4]
    assert kinds == ["str", "Image", "str", "Retrieved"]
    assert response.parts[0].strip() == "look" and response.parts[2].strip() == "similar"


def test_decoders_and_index_are_built_once(model, monkeypatch):
    model.generate(Turn.user("draw"), prefill="[IMG0]")
    model.generate(Turn.user("find"), prefill="[RET]")
    decoder, retriever = model.decoder(Modality.IMAGE), model.retriever

    def no_reload(*args, **kwargs):
        raise AssertionError("reloaded inside generate")

    monkeypatch.setattr("anymodal.model._load_decoder", no_reload)
    monkeypatch.setattr("anymodal.model._load_retriever", no_reload)
    model.generate(Turn.user("draw again"), prefill="[IMG0]")
    model.generate(Turn.user("find again"), prefill="[RET]")
    assert model.decoder(Modality.IMAGE) is decoder and model.retriever is retriever


def test_stream_delivers_media_after_text(model):
    parts = list(model.stream(Turn.user("draw"), prefill="a [IMG0]", max_new_tokens=6))
    assert isinstance(parts[0], str) and parts[0].strip() == "a"
    assert sum(isinstance(p, Image) for p in parts) == 1


def test_variable_length_encoder_is_refused_with_a_fix(tiny_root, tmp_path):
    from anymodal.config import EncoderConfig
    from tiny_encoders import save_tiny_hubert

    config = tiny_config(tiny_root, decoders=False, retrieval=False)
    config.encoders["audio"] = EncoderConfig(name="hubert", name_or_path=str(save_tiny_hubert(tmp_path / "hubert")))
    with pytest.raises(ConfigError, match="variable number of tokens.*feature: mean"):
        AnyModalModel.from_config(config)


def test_prefix_projection_spreads_one_embedding_over_k_tokens(tiny_root, tmp_path):
    """ClipCap's prefix: ``projection.tokens: 3`` puts 3 LLM tokens per encoder token at each placeholder, and the
    bundle comes back with the same expansion."""
    config = tiny_config(tiny_root, decoders=False, retrieval=False)
    config.encoders["image"].projection.tokens = 3
    torch.manual_seed(0)
    model = AnyModalModel.from_config(config).eval()
    example = model.processor.encode([Turn.user("what is this?", image())])
    assert example.input_ids.count(model.protocol.placeholder_id(Modality.IMAGE)) == 3 * model.encoders["image"].tokens_per_item
    assert model.encode_media(Modality.IMAGE, [image()]).shape[1] == 3 * model.encoders["image"].tokens_per_item
    batch = model.processor.collate([example])
    model.save_pretrained(tmp_path / "bundle")
    loaded = AnyModalModel.from_pretrained(tmp_path / "bundle")
    with torch.no_grad():
        assert torch.equal(model(batch).logits, loaded(batch).logits)
    config.encoders["image"].projection.tokens = 0
    with pytest.raises(ConfigError, match="at least 1 LLM token"):
        AnyModalModel.from_config(config)


def test_speech_units_as_input(tiny_root):
    from anymodal import Units

    config = tiny_config(tiny_root, decoders=False, retrieval=False)
    config.speech_units = 6
    speech_model = AnyModalModel.from_config(config).eval()
    turn = Turn.user("what is said in", Units([4, 2, 5]))
    assert turn.text == "what is said in <sosp><u4><u2><u5><eosp>"
    ids = speech_model.processor.encode([turn]).input_ids
    units = speech_model.protocol.unit_ids([4, 2, 5])
    assert any(ids[i:i + len(units)] == units for i in range(len(ids)))
    assert speech_model.generate(turn, max_new_tokens=3).token_ids


def test_speech_units_need_unit_tokens(model):
    from anymodal import Units

    with pytest.raises(TokenProtocolError, match="no unit tokens.*speech_units"):
        model.generate(Turn.user("hear this", Units([1, 2])))


def test_pack_copies_local_components_into_the_bundle(model, tmp_path):
    model.save_pretrained(tmp_path / "b", pack=["retrieval.name_or_path", "encoders.image.name_or_path"])
    moved = tmp_path / "elsewhere"
    (tmp_path / "b").rename(moved)
    loaded = AnyModalModel.from_pretrained(moved)
    assert loaded.config.retrieval.name_or_path == "components/retrieval_name_or_path"
    assert loaded.config.encoders["image"].name_or_path == "components/encoders_image_name_or_path"
    assert (moved / "components" / "retrieval_name_or_path" / "manifest.json").is_file()
    found = loaded.generate(Turn.user("find"), prefill="[RET]", retrieval_k=2).retrieved
    assert len(found) == 2
    loaded.save_pretrained(tmp_path / "again")  # packed parts travel on re-save
    assert (tmp_path / "again" / "components" / "encoders_image_name_or_path" / "config.json").is_file()
    with pytest.raises(ConfigError, match="no config key 'speech.vocodr'"):
        model.save_pretrained(tmp_path / "c", pack=["speech.vocodr"])
    with pytest.raises(ConfigError, match="cannot pack speech.vocoder"):
        model.save_pretrained(tmp_path / "c", pack=["speech.vocoder"])


def test_pack_copies_a_component_shared_by_several_keys_once(model, tmp_path):
    image_encoder = model.config.encoders["image"].name_or_path
    model.save_pretrained(tmp_path / "b", pack=["encoders.image.name_or_path", "retrieval.name_or_path"])
    assert model.config.encoders["image"].name_or_path == image_encoder  # the live model's config is unchanged
    shared = model.config.retrieval.name_or_path
    model.config.retrieval.name_or_path = image_encoder  # two keys naming one folder (as one ImageBind for 3 modalities)
    try:
        model.save_pretrained(tmp_path / "c", pack=["encoders.image.name_or_path", "retrieval.name_or_path"])
    finally:
        model.config.retrieval.name_or_path = shared
    assert [p.name for p in (tmp_path / "c" / "components").iterdir()] == ["encoders_image_name_or_path"]


def test_answer_turn_writes_the_answer_as_the_model_wrote_it(model):
    from anymodal import Response, Retrieved, Units

    picture = Image(torch.zeros(3, 8, 8))
    response = Response(parts=["here", picture, Retrieved("x.png", 0.5), Units([1, 2])], token_ids=[])
    turn = model.answer_turn(response)
    block = model.protocol.signal_text(Modality.IMAGE)
    assert turn.role == "assistant" and turn.media == []
    assert turn.text == f"here {block} [RET] <sosp><u1><u2><eosp>"


def test_imagebind_frame_tokens_give_a_video_its_frames(tiny_root, tmp_path):
    """encoders.video with ``options: {frame_tokens: 1}``: each video fills (1 clip + 1 frame) x k placeholders, and
    the bundle comes back with the same encoder options."""
    from anymodal.config import EncoderConfig, InputProjectionConfig
    from anymodal.media import Video
    from encoders.imagebind import TINY, ImageBindEncoder

    torch.manual_seed(0)
    ImageBindEncoder.from_config(TINY).save_pretrained(tmp_path / "imagebind")
    config = tiny_config(tiny_root, decoders=False, retrieval=False)
    config.encoders["video"] = EncoderConfig(name="imagebind", name_or_path=str(tmp_path / "imagebind"),
                                             options={"frame_tokens": 1}, projection=InputProjectionConfig(tokens=2))
    model = AnyModalModel.from_config(config).eval()
    video = Video(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(3)), fps=8.0)
    example = model.processor.encode([Turn.user("describe the video", video)])
    assert example.input_ids.count(model.protocol.placeholder_id(Modality.VIDEO)) == 4
    assert model.encode_media(Modality.VIDEO, [video]).shape[:2] == (1, 4)
    batch = model.processor.collate([example])
    model.save_pretrained(tmp_path / "bundle")
    loaded = AnyModalModel.from_pretrained(tmp_path / "bundle")
    assert loaded.encoders["video"].tokens_per_item == 2
    with torch.no_grad():
        assert torch.equal(model(batch).logits, loaded(batch).logits)


def test_frames_through_reads_video_frames_with_the_image_projection(tiny_root, tmp_path):
    """``frames_through: image`` on a frame-token video encoder: the clip embedding goes through the video projection,
    each frame through the image projection, exactly the tokens that frame gives as an image; the bundle keeps it."""
    from anymodal.config import EncoderConfig, InputProjectionConfig
    from anymodal.media import Video
    from encoders.imagebind import TINY, ImageBindEncoder

    torch.manual_seed(0)
    ImageBindEncoder.from_config(TINY).save_pretrained(tmp_path / "imagebind")
    config = tiny_config(tiny_root, decoders=False, retrieval=False)
    config.encoders["image"] = EncoderConfig(name="imagebind", name_or_path=str(tmp_path / "imagebind"),
                                             projection=InputProjectionConfig(tokens=3))
    config.encoders["video"] = EncoderConfig(name="imagebind", name_or_path=str(tmp_path / "imagebind"),
                                             options={"frame_tokens": 2}, projection=InputProjectionConfig(tokens=2),
                                             frames_through="image")
    model = AnyModalModel.from_config(config).eval()
    video = Video(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(3)), fps=8.0)
    example = model.processor.encode([Turn.user("describe the video", video)])
    assert example.input_ids.count(model.protocol.placeholder_id(Modality.VIDEO)) == 2 + 2 * 3
    with torch.no_grad():
        tokens = model.encode_media(Modality.VIDEO, [video])  # [1, 8, D]
        first, last = (model.encode_media(Modality.IMAGE, [Image(video.frames[i])]) for i in (0, 7))
        clip_alone = model.input_projections["video"](model.encoders["video"].encode(
            model.encoders["video"].preprocess([video]))[:, :1])
    assert tokens.shape[:2] == (1, 8)
    torch.testing.assert_close(tokens[:, :2], clip_alone)
    torch.testing.assert_close(tokens[:, 2:5], first)
    torch.testing.assert_close(tokens[:, 5:], last)
    batch = model.processor.collate([example])
    model.save_pretrained(tmp_path / "bundle")
    loaded = AnyModalModel.from_pretrained(tmp_path / "bundle")
    assert loaded.config.encoders["video"].frames_through == "image"
    with torch.no_grad():
        assert torch.equal(model(batch).logits, loaded(batch).logits)


@pytest.mark.parametrize("change, message", [
    ({"frames_through": "audio"}, r"frames_through names .* got 'audio', the other configured encoders are \['image'\]"),
    ({"frames_through": "video"}, "got 'video'"),
    ({"frames_through": "image", "options": {}}, r"gives 1 per item; give it more .*frame_tokens"),
])
def test_frames_through_errors_name_the_fix(tiny_root, tmp_path, change, message):
    from anymodal.config import EncoderConfig
    from encoders.imagebind import TINY, ImageBindEncoder

    ImageBindEncoder.from_config(TINY).save_pretrained(tmp_path / "imagebind")
    config = tiny_config(tiny_root, decoders=False, retrieval=False)
    video = {"name": "imagebind", "name_or_path": str(tmp_path / "imagebind"), "options": {"frame_tokens": 1}}
    config.encoders["video"] = EncoderConfig(**{**video, **change})
    with pytest.raises(ConfigError, match=message):
        AnyModalModel.from_config(config)


def test_frames_through_needs_features_of_the_projections_width(tiny_root, tmp_path):
    from anymodal.config import EncoderConfig
    from encoders.imagebind import TINY, ImageBindEncoder

    ImageBindEncoder.from_config({**TINY, "out_embed_dim": 24}).save_pretrained(tmp_path / "imagebind")
    config = tiny_config(tiny_root, decoders=False, retrieval=False)  # the image encoder: tiny CLIP, 32-d
    config.encoders["video"] = EncoderConfig(name="imagebind", name_or_path=str(tmp_path / "imagebind"),
                                             options={"frame_tokens": 1}, frames_through="image")
    with pytest.raises(ConfigError, match=r"the image projection takes \d+-d features, the video encoder gives \d+-d"):
        AnyModalModel.from_config(config)
