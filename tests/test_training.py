"""Training recipes on tiny parts and synthetic shapes data: every stage learns, frozen means frozen,
resume is exact, the bundle loads, bad recipes fail before step 1, two gloo processes run a recipe."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from anymodal.errors import CheckpointError, ConfigError
from anymodal.media import Modality
from anymodal.model import AnyModalModel
from anymodal.server.background import free_port
from anymodal.training import Trainer, load_recipe, read_data
from anymodal.training.data import Collator, LengthGroupedBatches, Part, Sample, length_hint
from anymodal.training import trainer as trainer_module
from anymodal.training.recipe import ToyConfig
from anymodal.training.stages import PRESETS
from anymodal.training.toydata import build_toy

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "toyworld"
STAGES = ["encoder_alignment", "decoder_alignment", "retrieval_alignment", "instruction_tuning"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_toy(ToyConfig(dir=str(tmp_path_factory.mktemp("toy")), images=16))


def recipe(toy, tmp_path, stage, *overrides):
    return load_recipe(RECIPES / f"{stage}.yaml", [f"toy.dir={toy}", "toy.images=16", f"output_dir={tmp_path / stage}",
                                                   "train.eval_every=0", "train.checkpoint_every=0", *overrides])


def new_token_strings(model, part: str) -> set[str]:
    """The special tokens whose rows a part trains: units are <sosp> <eosp> <uK>, signals the rest."""
    holders = {f"<{m.value}>" for m in Modality if m != Modality.TEXT}
    new = {s for s in model.protocol.ids if s not in holders}
    units = {s for s in new if s in ("<sosp>", "<eosp>") or re.fullmatch(r"<u\d+>", s)}
    return {"new_tokens": new, "signal_tokens": new - units, "unit_tokens": units}.get(part, set())


def expected_trainable(model, stage: str) -> int:
    """What the stage's preset says trains, counted from the model's own modules."""
    parts = PRESETS[stage].trains
    count = 0
    if "input_projections" in parts:
        count += sum(p.numel() for p in model.input_projections.parameters())
    if "output_projections" in parts:
        count += sum(p.numel() for p in model.output_projections.parameters())
    if "retrieval_projection" in parts:
        count += sum(p.numel() for p in model.retrieval_projection.parameters())
    if "lora" in parts:
        count += sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    rows = {s for part in parts for s in new_token_strings(model, part)}
    count += 2 * len(rows) * model.llm.get_input_embeddings().embedding_dim  # tiny Llama: untied head
    if PRESETS[stage].losses.get("retrieval"):
        count += 1  # learned temperature
    return count


@pytest.mark.parametrize("stage", STAGES)
def test_stage_lowers_its_loss_and_leaves_frozen_weights_bit_identical(toy, tmp_path, stage, capsys):
    run = recipe(toy, tmp_path, stage, "train.steps=30")
    run.data.eval = list(run.data.train)  # "lowers its loss": measured on what it trains on, every batch full
    trainer = Trainer(run)
    model = trainer.model
    assert trainer.num_trainable == expected_trainable(model, stage)
    assert f"trainable parameters {trainer.num_trainable:,}" in capsys.readouterr().out
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = trainer.evaluate()
    trainer.fit()
    after = trainer.evaluate()
    for term in before:
        assert after[term] < 0.85 * before[term], (term, before, after)

    rows = trainer.stage.token_rows
    base = model.llm.get_base_model()
    row_ids = torch.tensor(rows.token_ids) if rows is not None else torch.tensor([], dtype=torch.long)
    grown = {id(base.get_input_embeddings().weight): rows.input_rows if rows is not None else None,
             id(base.get_output_embeddings().weight): rows.output_rows if rows is not None else None}
    for name, param in model.named_parameters():
        if name not in frozen:
            continue
        if grown.get(id(param)) is not None:  # the vocabulary matrices: only the new-token rows moved
            keep = torch.ones(param.shape[0], dtype=torch.bool)
            keep[row_ids] = False
            assert torch.equal(param[keep], frozen[name][keep]), name
            assert torch.equal(param[row_ids], grown[id(param)].detach())
            assert not torch.equal(param[row_ids], frozen[name][row_ids])
        else:
            assert torch.equal(param, frozen[name]), f"frozen parameter {name} changed"


def test_bundle_loads_with_the_trained_weights(toy, tmp_path):
    trainer = Trainer(recipe(toy, tmp_path, "instruction_tuning", "train.steps=4"))
    bundle = trainer.fit()
    loaded = AnyModalModel.from_pretrained(bundle)
    samples = read_data([str(Path(toy) / "data" / "chat_eval.jsonl")])
    train_batch = Collator(loaded.processor, loaded.protocol)(samples)
    trainer.model.eval()
    with torch.no_grad():
        ours, theirs = trainer.model(train_batch.batch), loaded(train_batch.batch)
    assert torch.equal(ours.logits, theirs.logits)
    assert torch.equal(ours.signal_hidden[Modality.IMAGE], theirs.signal_hidden[Modality.IMAGE])
    assert not list((tmp_path / "instruction_tuning").glob("checkpoints"))  # checkpoint_every=0: none


def trained_state(bundle: Path) -> dict[str, torch.Tensor]:
    state = {f"p.{k}": v for k, v in load_file(bundle / "projections.safetensors").items()}
    state.update({f"t.{k}": v for k, v in load_file(bundle / "new_tokens.safetensors").items()})
    state.update({f"a.{k}": v for k, v in load_file(bundle / "adapter" / "adapter_model.safetensors").items()})
    return state


@pytest.mark.parametrize("sampling", ["random", "group_by_length", "batch_rebalance"])
def test_kill_and_resume_reproduces_the_uninterrupted_run(toy, tmp_path, monkeypatch, sampling):
    # 14 train conversations, batch 4, 2 micro-batches per step: steps cross epoch ends; checkpoint every 3
    knobs = ["train.steps=10", "train.batch_size=4", "train.grad_accum=2", "train.checkpoint_every=3",
             "optim.scheduler=cosine", "optim.warmup_steps=2", f"data.sampling={sampling}"]
    whole = Trainer(recipe(toy, tmp_path / "whole", "instruction_tuning", *knobs)).fit()

    interrupted = recipe(toy, tmp_path / "cut", "instruction_tuning", *knobs)
    after_step = Trainer._after_step

    def crash_at_step_8(self, bar, window):
        after_step(self, bar, window)
        if self.progress.step == 8:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Trainer, "_after_step", crash_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        Trainer(interrupted).fit()
    monkeypatch.setattr(Trainer, "_after_step", after_step)
    saved = sorted(p.name for p in (Path(interrupted.output_dir) / "checkpoints").iterdir())
    assert saved == ["step-00000003", "step-00000006"]  # keep_checkpoints=2, the newest complete ones
    checkpoint = Path(interrupted.output_dir) / "checkpoints" / "step-00000006"
    weights = load_file(checkpoint / "model.safetensors")
    assert all("lora_" in k or "projection" in k or k.startswith("stage.") for k in weights)  # only what trains
    resumed = Trainer(interrupted).fit(resume=True)

    a, b = trained_state(whole), trained_state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_deterministic_training_reproduces_a_run_bit_for_bit(toy, tmp_path):
    knobs = ["train.steps=6", "train.batch_size=4", "train.deterministic=true"]
    try:
        runs = [trained_state(Trainer(recipe(toy, tmp_path / name, "instruction_tuning", *knobs)).fit())
                for name in ("first", "second")]
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)  # process-wide: leave the other tests as they were
    assert runs[0].keys() == runs[1].keys()
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_a_recipe_without_determinism_turns_it_off_again(toy, tmp_path):
    try:
        Trainer(recipe(toy, tmp_path / "a", "instruction_tuning", "train.steps=1", "train.deterministic=true"))
        assert torch.are_deterministic_algorithms_enabled()
        Trainer(recipe(toy, tmp_path / "b", "instruction_tuning", "train.steps=1"))
        assert not torch.are_deterministic_algorithms_enabled()  # not left on by the recipe before it
    finally:
        torch.use_deterministic_algorithms(False)


def test_resume_without_a_checkpoint_says_so(toy, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint under"):
        Trainer(recipe(toy, tmp_path, "encoder_alignment", "train.steps=2")).fit(resume=True)


def _no_model(*args, **kwargs):
    raise AssertionError("the model was built before the recipe was checked")


def test_bad_recipes_fail_before_the_model_is_built(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "build_model", _no_model)
    with pytest.raises(ConfigError, match="train.stepz"):
        recipe(toy, tmp_path, "encoder_alignment", "train.stepz=3")
    with pytest.raises(ConfigError, match="stage.lossess"):
        recipe(toy, tmp_path, "encoder_alignment", "stage.lossess.lm=1")
    with pytest.raises(ConfigError, match=r"data file .*nowhere\.jsonl does not exist"):
        Trainer(recipe(toy, tmp_path, "encoder_alignment", f"data.train=[{tmp_path}/nowhere.jsonl]"))

    monkeypatch.setattr(trainer_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        Trainer(recipe(toy, tmp_path, "encoder_alignment", "train.tensorboard=true"))
    monkeypatch.undo()
    monkeypatch.setattr(trainer_module, "build_model", _no_model)

    broken = tmp_path / "broken.jsonl"
    lines = (Path(toy) / "data" / "caption_train.jsonl").read_text().splitlines()
    lines[3] = lines[3].replace("images/", "images/missing_")
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"broken\.jsonl:4: media file .*missing_\d+\.png does not exist"):
        Trainer(recipe(toy, tmp_path, "encoder_alignment", f"data.train=[{broken}]", f"data.media_root={toy}/data"))


def test_data_the_model_cannot_take_fails_before_step_1(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "build_model", _no_model)
    retrieve = f"data.train=[{toy}/data/retrieve_train.jsonl]"
    with pytest.raises(ConfigError, match="retrieval off"):
        Trainer(recipe(toy, tmp_path, "encoder_alignment", retrieve, "model.retrieval.enabled=false"))
    typed = tmp_path / "typed.jsonl"
    typed.write_text(json.dumps({"messages": [{"role": "user", "content": "hi [IMG0]"},
                                              {"role": "assistant", "content": "ok"}]}) + "\n")
    with pytest.raises(ConfigError, match=r"typed\.jsonl:1: text contains the special token"):
        Trainer(recipe(toy, tmp_path, "encoder_alignment", f"data.train=[{typed}]"))


def test_llava_json_reader(tmp_path, toy):
    records = [{"id": "a", "image": "images/0000.png",
                "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "a red circle"}]},
               {"id": "b", "image": "images/0001.png",  # no placeholder: LLaVA puts the image first
                "conversations": [{"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "a green circle"}]}]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(records))
    samples = read_data([str(path)], media_root=f"{toy}/data")
    role, parts = samples[0].messages[0]
    assert role == "user" and [p.kind for p in parts] == ["input", "text"] and parts[1].text == "What is this?"
    assert parts[0].path == str((Path(toy) / "data" / "images" / "0000.png").resolve())
    assert [p.kind for p in samples[1].messages[0][1]] == ["input", "text"]
    assert samples[1].messages[1] == ("assistant", [samples[1].messages[1][1][0]])
    records[0]["conversations"][0]["value"] = "<image> and <image>"
    path.write_text(json.dumps(records))
    with pytest.raises(ConfigError, match=r"llava\.json\[0\]: more <image> placeholders than image files"):
        read_data([str(path)], media_root=f"{toy}/data")


def test_collator_orders_targets_like_the_model_orders_hidden_states(toy, tmp_path):
    trainer = Trainer(recipe(toy, tmp_path, "instruction_tuning", "train.steps=1"))
    samples = read_data([str(Path(toy) / "data" / "chat_train.jsonl")])[:3]
    batch = Collator(trainer.model.processor, trainer.model.protocol)(samples)
    assert [len(batch.batch.media[Modality.IMAGE]), len(batch.retrieval_targets)] == [3, 3]
    assert batch.captions[Modality.IMAGE] == [s.messages[3][1][1].text for s in samples]
    assert [t.source for t in batch.retrieval_targets] == [s.messages[5][1][0].path for s in samples]
    assert batch.num_tokens == int(batch.batch.attention_mask.sum())


def test_shipped_recipes_parse():
    from anymodal.toyworld.recipe import is_toyworld_recipe
    from anymodal.toyworld.recipe import load as toyworld_recipe

    found = sorted((REPO / "recipes").rglob("*.yaml"))
    assert {p.parent.name for p in found} >= {"nextgpt", "fromage", "toyworld"}
    for path in found:
        if is_toyworld_recipe(path):  # the whole toy world: tests/test_toyworld_recipe.py
            toyworld_recipe(path)
        else:
            load_recipe(path)


def _cli(*argv):
    """The train command and bench through their own register() (anymodal.cli lists every module)."""
    import argparse

    from anymodal.bench import train as bench
    from anymodal.commands import train

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    train.register(commands)
    bench.register(commands.add_parser("bench").add_subparsers(dest="bench", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_train_command_then_resume_finishes_the_run(toy, tmp_path, capsys):
    base = [str(RECIPES / "encoder_alignment.yaml"), f"toy.dir={toy}", "toy.images=16", f"output_dir={tmp_path}",
            "train.checkpoint_every=2", "train.eval_every=0"]
    assert _cli("train", *base, "train.steps=2") == 0
    assert _cli("train", *base, "train.steps=4", "--resume") == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "step-00000002" in out and "train step 4/4" in out
    assert AnyModalModel.from_pretrained(tmp_path / "bundle") is not None


@pytest.mark.parametrize("sampling", ["random", "group_by_length", "batch_rebalance"])
def test_bench_train_last_line(toy, capsys, sampling):
    assert _cli("bench", "train", str(RECIPES / "encoder_alignment.yaml"), f"toy.dir={toy}", "toy.images=16",
                f"data.sampling={sampling}", "train.batch_size=2", "train.grad_accum=2", "--steps", "3",
                "--warmup", "1") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"overhead_vs_plain_pytorch=\d+\.\d\dx", lines[-1])
    assert any(line.startswith("plain PyTorch") for line in lines) and any(line.startswith("anymodal Trainer") for line in lines)
    # length-aware batches are measured against random ones, in the same run
    assert any(line.startswith("Trainer, random") for line in lines) == (sampling != "random")
    assert bool(re.fullmatch(r"sampling_vs_random=\d+\.\d\dx", lines[-2])) == (sampling != "random")


@pytest.mark.slow
def test_two_gloo_processes_run_a_recipe_to_the_end(toy, tmp_path):
    script = tmp_path / "run.py"
    # no DDP module may outlive the run: freed at interpreter exit, its gloo group can abort the process
    script.write_text("import gc, sys, torch\nfrom anymodal.commands.train import run\nfrom types import SimpleNamespace\n"
                      "code = run(SimpleNamespace(recipe=sys.argv[1], overrides=sys.argv[2:], resume=False))\n"
                      "ddp = torch.nn.parallel.DistributedDataParallel\n"
                      "assert not any(isinstance(o, ddp) for o in gc.get_objects()), 'a DDP module outlived the run'\n"
                      "sys.exit(code)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # a free port, not torchrun's fixed 29500: another run on the machine may hold that one
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), str(script),
               str(RECIPES / "decoder_alignment.yaml"), f"toy.dir={toy}", "toy.images=16", f"output_dir={tmp_path / 'ddp'}",
               "train.steps=4", "train.batch_size=2", "train.eval_every=2", "train.checkpoint_every=2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process 0/2" in done.stdout and "process 1/2" in done.stdout  # both ranks ran, in one group of 2
    assert "train step 4/4" in done.stdout
    assert (tmp_path / "ddp" / "checkpoints" / "step-00000004" / "random_states_1.pkl").is_file()  # rank 1's RNG
    AnyModalModel.from_pretrained(tmp_path / "ddp" / "bundle")


def test_a_stage_starts_from_the_previous_stage_bundle(toy, tmp_path):
    first = Trainer(recipe(toy, tmp_path, "encoder_alignment", "train.steps=3")).fit()
    second = Trainer(recipe(toy, tmp_path, "instruction_tuning", "train.steps=3", "model=null", f"init_from={first}"))
    start = {n: p.detach().clone() for n, p in second.model.named_parameters() if "lora_B" in n}
    assert start and all(not v.any() for v in start.values())  # stage 1's fresh adapter, loaded from its bundle
    stage_one = load_file(first / "projections.safetensors")
    assert torch.equal(second.model.trainable_state()["input_projections.image.net.0.weight"],
                       stage_one["input_projections.image.net.0.weight"])
    assert any("lora_" in n for n, p in second.model.named_parameters() if p.requires_grad)
    bundle = second.fit()
    trained = load_file(bundle / "adapter" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)  # LoRA trained in stage 3


def test_speech_units_parts_are_data_and_train(toy, tmp_path):
    data = tmp_path / "units.jsonl"
    conversations = [
        [{"role": "user", "content": "say a red circle"}, {"role": "assistant", "content": [{"type": "units", "ids": [3, 1, 4, 1]}]}],
        [{"role": "user", "content": [{"type": "units", "ids": [5, 2]}]}, {"role": "assistant", "content": "a red circle"}],
    ]
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    trainer = Trainer(recipe(toy, tmp_path, "instruction_tuning", "train.steps=2", "train.batch_size=2",
                             "model.speech_units=8", f"data.train=[{data}]", "data.eval=[]"))
    model = trainer.model
    batch = Collator(model.processor, model.protocol)(read_data([str(data)]))
    units = model.protocol.unit_ids([3, 1, 4, 1])  # <sosp> <u3> <u1> <u4> <u1> <eosp>
    row = batch.batch.input_ids[0].tolist()
    start = next(i for i in range(len(row)) if row[i:i + len(units)] == units)
    assert batch.batch.labels[0, start:start + len(units)].tolist() == units  # assistant units are learned
    assert model.protocol.unit_ids([5, 2])[1:-1][0] in batch.batch.input_ids[1].tolist()
    trainer.fit()
    with pytest.raises(ConfigError, match="unit id 9 but the model has speech_units=8"):
        data.write_text(json.dumps({"messages": [{"role": "user", "content": "x"},
                                                 {"role": "assistant", "content": [{"type": "units", "ids": [9]}]}]}) + "\n")
        Trainer(recipe(toy, tmp_path, "instruction_tuning", "model.speech_units=8", f"data.train=[{data}]", "data.eval=[]"))


@pytest.mark.parametrize("trains, moves, stays", [(None, "signal_tokens", "unit_tokens"),
                                                  ("[unit_tokens,output_projections]", "unit_tokens", "signal_tokens")])
def test_a_stage_moves_only_the_token_rows_it_trains(toy, tmp_path, trains, moves, stays):
    """Decoder alignment trains the signal rows, not the speech unit rows (whose logits its LM loss would push
    down); unit_tokens trains the unit rows alone."""
    speech = tmp_path / "units.jsonl"
    speech.write_text(json.dumps({"messages": [{"role": "user", "content": "say a red circle"}, {
        "role": "assistant", "content": [{"type": "units", "ids": [3, 1, 4, 1]}]}]}) + "\n")
    overrides = ["train.steps=4", "model.speech_units=8", f"data.train=[{speech},{toy}/data/generate_train.jsonl]",
                 "data.eval=[]"]
    trainer = Trainer(recipe(toy, tmp_path, "decoder_alignment", *overrides, *([f"stage.trains={trains}"] if trains else [])))
    model = trainer.model
    embedding = model.llm.get_input_embeddings().weight
    ids = {part: [model.protocol.ids[s] for s in sorted(new_token_strings(model, part))] for part in (moves, stays)}
    before = {part: embedding[rows].detach().clone() for part, rows in ids.items()}
    trainer.fit()
    assert sorted(trainer.stage.token_rows.token_ids) == sorted(ids[moves])
    assert torch.equal(embedding[ids[stays]], before[stays])
    assert not torch.equal(embedding[ids[moves]], before[moves])


def test_length_grouped_batches_put_like_lengths_together_and_draw_every_sample_once_an_epoch():
    lengths = [20] * 60 + [65] * 20 + [150] * 20  # the toy world's mix: short captions, transcripts, chains
    batches = LengthGroupedBatches(lengths, batch_size=8, seed=0)
    first = list(batches)
    assert len(first) == len(batches) == 13
    assert sorted(i for b in first for i in b) == list(range(100))
    mixed = [b for b in first if len({lengths[i] for i in b}) > 1]
    assert len(mixed) <= 2  # only where one band's samples run out mid-batch
    padded = sum(len(b) * max(lengths[i] for i in b) for b in first)
    assert padded < 0.6 * 100 * 150  # drawn at random, nearly every batch of 8 would pad to 150
    assert list(batches) == first  # same seed and epoch, same batches: resume draws them again
    batches.set_epoch(1)
    assert list(batches) != first
    assert list(LengthGroupedBatches(lengths, batch_size=8, seed=1)) != first


def test_batch_rebalance_mixes_each_step_at_random_and_splits_it_by_length(toy, tmp_path):
    config = recipe(toy, tmp_path, "instruction_tuning", "data.sampling=batch_rebalance", "train.batch_size=3",
                    "train.grad_accum=2")
    samples = Trainer(config).train_loader.dataset
    loader = trainer_module.train_data_loader(samples, config, lambda picked: picked)
    micro = list(loader)
    assert len(micro) == 2 * (len(samples) // 6)  # whole steps only
    steps = [micro[i] + micro[i + 1] for i in range(0, len(micro), 2)]
    assert all(len(step) == 6 for step in steps)
    assert len({id(s) for step in steps for s in step}) == 6 * len(steps)  # every conversation at most once
    for first, second in zip(micro[::2], micro[1::2]):  # a step's micro-batches hold its longer and shorter ones
        assert min(map(length_hint, first)) >= max(map(length_hint, second)) or \
            max(map(length_hint, first)) <= min(map(length_hint, second))
    # micro-batches differ in size; weighted by their share, a step's conversations count as in one random batch
    weights = [trainer_module.micro_batch_weight(SimpleNamespace(num_samples=len(m)), config) for m in micro[:2]]
    assert sum(weights) / config.train.grad_accum == pytest.approx(1.0)
    random_batch = recipe(toy, tmp_path, "instruction_tuning", "train.batch_size=3")
    assert trainer_module.micro_batch_weight(SimpleNamespace(num_samples=1), random_batch) == 1.0


def test_batch_rebalance_needs_micro_batches_and_enough_data(toy, tmp_path):
    with pytest.raises(ConfigError, match="data.sampling must be one of random, group_by_length, batch_rebalance"):
        recipe(toy, tmp_path, "instruction_tuning", "data.sampling=sorted")
    with pytest.raises(ConfigError, match="set train.grad_accum to 2 or more"):
        recipe(toy, tmp_path, "instruction_tuning", "data.sampling=batch_rebalance")
    with pytest.raises(ConfigError, match="lower train.batch_size or train.grad_accum"):
        Trainer(recipe(toy, tmp_path, "instruction_tuning", "data.sampling=batch_rebalance", "train.batch_size=64",
                       "train.grad_accum=2"))


def test_length_hint_counts_words_units_and_media_parts():
    user = [Part("text", "describe the picture"), Part("input", modality=Modality.IMAGE, path="a.png")]
    reply = [Part("text", "it says"), Part("units", units=(3, 1, 4, 1, 5))]
    assert length_hint(Sample([("user", user), ("assistant", reply)], "x.jsonl:1")) == 3 + 4 + 2 + 5
