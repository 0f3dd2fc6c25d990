"""The toy world's language model: its tokenizer, pretraining through the Trainer (stage language_modeling), the
saved folder; the speech units and the speech conversations of the toy spoken language."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from anymodal.config import LLMConfig, LoraConfig, ModelConfig, to_dict
from anymodal.errors import ConfigError
from anymodal.model import AnyModalModel
from anymodal.speech import ChainExample, ChainOfModality, load_unitizer
from anymodal.toyworld.language import build_tokenizer, language_metrics, text_conversations, train_llm
from anymodal.toyworld.render import world_items
from anymodal.toyworld.speech import build_speech, speech_conversations, write_speech_tasks
from anymodal.toyworld.spoken import WORDS
from anymodal.training import Trainer, load_recipe
from anymodal.training.data import Collator, read_data
from decoders.griffinlim import GriffinLimVocoder
from speech_fixtures import build_model


def test_tokenizer_gives_world_words_whole_and_any_text_bytes(tmp_path):
    build_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    for word in WORDS:
        assert len(tokenizer.encode(word)) == 1 and len(tokenizer.encode(" " + word)) == 1, word
    for text in ("USER: what colour is a small red circle\nASSISTANT: red", "Zürich, 42°C — naïve 😀 Ωmega"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None  # nothing is unknown: unseen characters are bytes


def test_text_conversations_are_balanced_and_seeded():
    records = text_conversations("train", 64, seed=1)
    assert records == text_conversations("train", 64, seed=1) != text_conversations("validation", 64, seed=1)
    tasks = [r["task"] for r in records]
    assert {tasks.count(t) for t in set(tasks)} == {16}
    assert all(p["type"] == "text" for r in records for m in r["messages"] for p in m["content"])


def test_short_pretraining_lowers_loss_and_the_folder_reloads(tmp_path):
    out = tmp_path / "llm"
    metrics = train_llm(out, steps=40, n_train=256, n_eval=32, batch_size=16, hidden_size=32, layers=1, heads=2,
                        lr=1e-2, progress=False)
    assert metrics["perplexity"] < metrics["perplexity_before"] / 4
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert max(f.stat().st_mtime for f in out.iterdir()) == (out / "metrics.json").stat().st_mtime  # written last
    plain = AutoModelForCausalLM.from_pretrained(out)  # a plain transformers checkpoint
    assert plain.get_input_embeddings().num_embeddings == len(AutoTokenizer.from_pretrained(out))
    model = AnyModalModel.from_config(ModelConfig(llm=LLMConfig(name_or_path=str(out), lora=LoraConfig(enabled=False))))
    held = tmp_path / "validation.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in text_conversations("validation", 32)))
    assert language_metrics(model, held)["perplexity"] == pytest.approx(metrics["perplexity"], rel=0.05)


def _lm_recipe(tmp_path, lora: bool):
    from anymodal.tiny import save_tiny_llm

    save_tiny_llm(tmp_path / "llm")
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in text_conversations("train", 8)))
    config = ModelConfig(llm=LLMConfig(name_or_path=str(tmp_path / "llm"), lora=LoraConfig(enabled=lora)))
    return load_recipe({"stage": {"name": "language_modeling"}, "model": to_dict(config), "data": {"train": [str(data)]},
                        "train": {"steps": 3, "batch_size": 4}, "output_dir": str(tmp_path / "run")})


def test_language_modeling_bundle_holds_the_trained_llm(tmp_path):
    trainer = Trainer(_lm_recipe(tmp_path, lora=False))
    bundle = trainer.fit()
    loaded = AnyModalModel.from_pretrained(bundle)
    assert loaded.config.llm.name_or_path == "llm" and (bundle / "llm" / "config.json").is_file()
    batch = Collator(loaded.processor, loaded.protocol)(read_data([str(tmp_path / "text.jsonl")])).batch
    with torch.no_grad():
        assert torch.allclose(loaded(batch).logits, trainer.model.eval()(batch).logits, atol=1e-5)
        fresh = AnyModalModel.from_config(loaded.config.__class__(llm=LLMConfig(
            name_or_path=str(tmp_path / "llm"), lora=LoraConfig(enabled=False))))
        assert not torch.allclose(fresh(batch).logits, loaded(batch).logits, atol=1e-3)  # the weights did train


def test_language_modeling_refuses_lora(tmp_path):
    with pytest.raises(ConfigError, match="lora.enabled: false"):
        Trainer(_lm_recipe(tmp_path, lora=True))


# ------------------------------------------------------------------------------------- speech
@pytest.fixture(scope="module")
def tiny_judges(tmp_path_factory):
    """A quickly trained speech judge (a few steps: only the plumbing is under test here)."""
    from anymodal.toyworld.judges import save_judge, train_judge

    root = tmp_path_factory.mktemp("judges")
    judge, accuracy = train_judge("speech", n=16, steps=3, n_eval=4, progress=False)
    save_judge(judge, root / "speech", accuracy)
    return root


def test_build_speech_writes_parts_and_metrics_last(tmp_path, tiny_judges):
    out = tmp_path / "speech"
    metrics = build_speech(out, train_items=8, eval_items=4, units=16, judges=tiny_judges, progress=False)
    assert load_unitizer(out / "unitizer").num_units == 16
    assert GriffinLimVocoder.from_pretrained(out / "vocoder").num_units == 16
    assert set(metrics["recipes"]) == {"clean", "deltas", "plain"} and metrics["recipe"] == "deltas"
    for result in metrics["recipes"].values():
        assert 0.0 < result["unit_accuracy"] <= 1.0 and 0.0 <= result["judged_words"] <= 1.0
    assert json.loads((out / "metrics.json").read_text()) == metrics
    newest = max(f.stat().st_mtime for f in out.rglob("*") if f.is_file())
    assert (out / "metrics.json").stat().st_mtime == newest
    with pytest.raises(ConfigError, match="speech recipe 'loud' is unknown"):
        build_speech(out, recipe="loud")


def test_speech_conversations_tokenize_as_the_templates_do(tmp_path, tiny_judges):
    from anymodal.toyworld.writer import write_split

    build_speech(tmp_path / "speech", train_items=8, eval_items=2, units=16, judges=tiny_judges, progress=False)
    unitizer = load_unitizer(tmp_path / "speech" / "unitizer")
    items = world_items("validation", 2)
    records = speech_conversations(unitizer, items)
    assert [r["task"] for r in records[:3]] == ["transcribe", "spoken_question", "chain"]
    data = tmp_path / "speech.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    model = build_model(tmp_path / "model", speech_units=16)
    batch = Collator(model.processor, model.protocol)(read_data([str(data)])[2:3]).batch
    asked, answer, question, spoken = items[0].spoken_question()
    chain = ChainOfModality().conversation(ChainExample("speech->speech", asked, answer, unitizer.units(question),
                                                        unitizer.units(spoken)))
    assert batch.input_ids[0].tolist() == model.processor.encode(chain).input_ids  # same ids as at inference
    # the same records from the files the world writer saves (the recipe's path)
    tasks = write_speech_tasks(tmp_path / "speech", write_split(tmp_path / "world", "validation", 2, progress=False),
                               tmp_path / "tasks")
    for task in ("transcribe", "spoken_question", "chain"):
        written = [json.loads(line) for line in (tasks / f"{task}.jsonl").read_text().splitlines()]
        assert written == [r for r in records if r["task"] == task]
