"""The toy-world recipe: schema checks, step bookkeeping (resumable), task-file names, `anymodal train` dispatch."""

import json

import pytest

from anymodal.errors import ConfigError
from anymodal.toyworld import recipe

ALL = "recipes/toyworld/all.yaml"


def test_the_shipped_recipe_loads_and_overrides_apply():
    spec = recipe.load(ALL, ["toyworld.output_dir=/tmp/x", "toyworld.stages.0.steps=7"])
    assert spec.stages[0].steps == 7 and spec.model.llm.name_or_path == "/tmp/x/llm"
    assert spec.model.encoders["video"].name_or_path == "/tmp/x/encoder"
    assert recipe.is_toyworld_recipe(ALL) and not recipe.is_toyworld_recipe("recipes/nextgpt/encoder_alignment.yaml")


def test_bad_recipes_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="stagez"):
        recipe.load(ALL, ["toyworld.stagez=1"])
    with pytest.raises(ConfigError, match="needs toyworld.model"):
        recipe.load({"toyworld": {"stages": [{"name": "encoder_alignment"}]}})
    with pytest.raises(ConfigError, match="image, video and audio"):
        recipe.load(ALL, ["toyworld.decoders={depth: {}}"])
    with pytest.raises(ConfigError, match="world/<task> or speech/<task>"):
        recipe._task_files(tmp_path, ["caption_image"], "train")
    with pytest.raises(ConfigError, match="does not exist"):
        recipe._task_files(tmp_path, ["world/caption_image"], "train")


def test_finished_steps_are_skipped_and_each_records_its_time(tmp_path, monkeypatch, capsys):
    calls = []

    def step(name):
        def run(folder):
            calls.append(name)
            return {"value": len(calls)}
        return name, run

    monkeypatch.setattr(recipe, "_steps", lambda spec, out, progress: [step("one"), step("two")])
    spec = recipe.load(ALL, [f"toyworld.output_dir={tmp_path}"])
    recipe.run(spec, progress=False)
    assert calls == ["one", "two"]
    saved = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert saved["value"] == 2 and "seconds" in saved
    (tmp_path / "two" / "metrics.json").unlink()  # redo only the second step
    recipe.run(spec, progress=False)
    assert calls == ["one", "two", "two"]
    assert "step times: one" in capsys.readouterr().out
