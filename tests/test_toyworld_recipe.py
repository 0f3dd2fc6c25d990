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
    with pytest.raises(ConfigError, match=r"more than one stage writes \['instruction_tuning'\]; give each a `step:`"):
        recipe.load(ALL, ["toyworld.stages.0.name=instruction_tuning"])
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
        return recipe.Step(name, run)

    monkeypatch.setattr(recipe, "_steps", lambda spec, out, progress: [step("one"), step("two")])
    spec = recipe.load(ALL, [f"toyworld.output_dir={tmp_path}", "toyworld.workers=1"])
    recipe.run(spec, progress=False)
    assert calls == ["one", "two"]
    saved = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert saved["value"] == 2 and "seconds" in saved
    (tmp_path / "two" / "metrics.json").unlink()  # redo only the second step
    recipe.run(spec, progress=False)
    assert calls == ["one", "two", "two"]
    assert "step times: one" in capsys.readouterr().out


def test_a_step_failing_in_a_worker_names_itself_and_its_log_and_keeps_what_finished(tmp_path):
    spec = recipe.load(ALL, [f"toyworld.output_dir={tmp_path}", "toyworld.workers=2", "toyworld.threads=2",
                             "toyworld.world={train: 8, eval: 4}", "toyworld.judges={n: 16, steps: 1, n_eval: 4}",
                             "toyworld.decoders={}", "toyworld.encoder={no_such_option: 1}"])
    with pytest.raises(RuntimeError, match=r"step encoder failed: .*no_such_option.*encoder/log\.txt"):
        recipe.run(spec, progress=False)
    assert (tmp_path / "world" / "metrics.json").is_file() and (tmp_path / "judges" / "metrics.json").is_file()
    assert not (tmp_path / "encoder" / "metrics.json").exists()
    assert not (tmp_path / "index").exists()  # nothing that needs the encoder started


def test_the_worker_bar_shows_each_steps_latest_progress_line(tmp_path):
    log = tmp_path / "decoder_image" / "log.txt"
    assert recipe._last_line(log) == "decoder_image"
    log.parent.mkdir()
    log.write_text("render image: 100%\ntrain decoder:   1%| 14/3000\rtrain decoder:   2%| 31/3000\r")
    assert recipe._last_line(log) == "decoder_image: train decoder:   2%| 31/3000"


def test_steps_wait_for_the_steps_whose_output_they_read():
    spec = recipe.load(ALL)
    needs = {step.name: set(step.needs) for step in recipe._steps(spec, recipe.Path("runs/x"), progress=False)}
    assert needs["judges"] == needs["encoder"] == needs["llm"] == set()  # they render the world in memory
    assert needs["speech"] == {"world"}  # it reads the written speech
    assert needs["decoder_video"] == {"judges"} and needs["index"] == {"world", "encoder"}
    first, *later = [stage.folder for stage in spec.stages]
    assert {"encoder", "decoder_image", "decoder_video", "decoder_audio", "llm", "speech", "index"} <= needs[first]
    assert needs[later[0]] == {first} and needs["bundle"] == {"eval", later[-1]}


def test_workers_take_the_longest_steps_first():
    names = [step.name for step in recipe._steps(recipe.load(ALL), recipe.Path("runs/x"), progress=False)]
    assert names[:9] == ["world", "judges", "decoder_video", "decoder_audio", "decoder_image", "encoder", "llm",
                         "speech", "index"]


def test_a_stage_may_draw_its_own_seed_train_other_parts_and_weigh_its_losses(tmp_path, monkeypatch):
    from anymodal import training

    seeds, trains, losses, batching = [], [], [], []

    class RecordingTrainer:
        last_eval: dict = {}

        def __init__(self, config):
            seeds.append(config["train"]["seed"])
            trains.append(config["stage"]["trains"])
            losses.append(config["stage"]["losses"])
            batching.append((config["data"]["sampling"], config["train"]["batch_size"], config["train"]["grad_accum"],
                             config["train"]["deterministic"]))

        def evaluate(self):
            return {}

        def fit(self):
            pass

    monkeypatch.setattr(training, "load_recipe", lambda config: config)
    monkeypatch.setattr(training, "Trainer", RecordingTrainer)
    monkeypatch.setattr(recipe, "_task_files", lambda out, names, split: [f"{split}.jsonl"])
    spec = recipe.load(ALL, ["toyworld.seed=3", "toyworld.deterministic=false", "toyworld.stages.1.seed=5",
                             "toyworld.stages.1.trains=[output_projections]", "toyworld.stages.1.sampling=group_by_length",
                             "toyworld.stages.1.batch_size=4", "toyworld.stages.1.grad_accum=3",
                             "toyworld.stages.1.losses={signal_mse: 4.0}"])
    for stage in spec.stages[:2]:
        recipe._stage(tmp_path / stage.folder, tmp_path, stage, spec, previous="before")
    assert seeds == [3, 5] and trains == [None, ["output_projections"]]
    assert losses == [{}, {"signal_mse": 4.0}]  # {}: the preset's weights
    assert batching == [("random", 16, 1, False), ("group_by_length", 4, 3, False)]
