"""The whole toy-world recipe with tiny step counts: every step runs, in order, through the real code, and every
trained step lowers its loss; the bundle it writes loads and answers."""

import json
from pathlib import Path


from anymodal.toyworld import recipe

REPO = Path(__file__).resolve().parents[1]


def smoke_overrides(out: Path) -> list[str]:
    stages = len(recipe.load(REPO / "recipes/toyworld/all.yaml").stages)
    tiny_decoder = "{steps: 30, train_items: 16, batch_size: 8, n_eval: 4, sample_steps: 2}"
    return [f"toyworld.output_dir={out}", "toyworld.threads=1", "toyworld.world.train=48", "toyworld.world.eval=12",
            "toyworld.judges={n: 32, steps: 2, batch_size: 8, n_eval: 4}",
            "toyworld.encoder={steps: 12, train_items: 32, batch_size: 16}",
            *(f"toyworld.decoders.{kind}={tiny_decoder}" for kind in ("image", "video", "audio")),
            "toyworld.llm={steps: 4, n_train: 32, n_eval: 8, batch_size: 8}",
            "toyworld.speech={train_items: 8, eval_items: 4}", "toyworld.gallery=12", "toyworld.eval_items=4",
            *(f"toyworld.stages.{i}.{key}={value}"
              for i in range(stages) for key, value in (("steps", 20), ("batch_size", 4), ("warmup_steps", 2)))]


def test_the_whole_recipe_runs_and_every_step_learns(tmp_path):
    spec = recipe.load(REPO / "recipes/toyworld/all.yaml", smoke_overrides(tmp_path))
    bundle = recipe.run(spec, progress=False)

    def metrics(step):
        return json.loads((tmp_path / step / "metrics.json").read_text())

    encoder = metrics("encoder")
    assert all(encoder["final_loss"][k] < encoder["first_loss"][k] for k in ("image", "video"))
    for kind in ("image", "video", "audio"):
        assert metrics(f"decoder_{kind}")["probe_loss_end"] < metrics(f"decoder_{kind}")["probe_loss_start"], kind
    assert metrics("llm")["perplexity"] < metrics("llm")["perplexity_before"]
    for stage in spec.stages:
        assert metrics(stage.folder)["eval"]["loss"] < metrics(stage.folder)["eval_before"]["loss"], stage.folder
    # output alignment re-fits the projections alone: the LLM's adapter and token rows are the tuned ones, byte for byte
    tuned, aligned = tmp_path / "instruction_tuning" / "bundle", tmp_path / "output_alignment" / "bundle"
    for frozen in ("adapter/adapter_model.safetensors", "new_tokens.safetensors"):
        assert (aligned / frozen).read_bytes() == (tuned / frozen).read_bytes(), frozen
    assert (aligned / "projections.safetensors").read_bytes() != (tuned / "projections.safetensors").read_bytes()
    rows = {r["path"] for r in metrics("bundle")["rows"]}
    assert {"caption image", "generate video", "[RET] recall@1", "chain of modality"} <= rows

    from anymodal import Turn, load

    model = load(str(bundle))
    assert model.generate(Turn.user("draw a big red circle"), prefill="[IMG0]").media()
    assert (bundle / "components").is_dir() and not any("runs" in str(p) for p in model.config.encoders.values())
