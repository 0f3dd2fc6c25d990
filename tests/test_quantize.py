"""Quantized deployment on tiny bundles: every CPU scheme round-trips through from_pretrained and stays close to
the original; the manifest records how; bad combinations fail with the alternative; QLoRA trains on nf4."""

import argparse
import json
import re
import sys

import bitsandbytes as bnb
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from anymodal import Image, Turn
from anymodal.bench import quantize as bench
from anymodal.commands import quantize as command
from anymodal.config import QuantizationConfig
from anymodal.errors import CheckpointError, ConfigError
from anymodal.llm import set_token_rows
from anymodal.model import AnyModalModel
from anymodal.quantize import plain_name, quantizable_layers, resolve, weight_bytes
from anymodal.quantize_bundle import quantize_bundle
from anymodal.quantize_report import format_report, layer_sqnr
from anymodal.tiny import save_tiny_clip, save_tiny_llm, tiny_config


def build_bundle(root, hidden=64, overrides=()):
    """A tiny bundle whose LoRA is far from a no-op (fresh LoRA has B = 0)."""
    save_tiny_llm(root / "llm", hidden_size=hidden)
    save_tiny_clip(root / "clip")
    torch.manual_seed(0)
    model = AnyModalModel.from_config(tiny_config(root, decoders=False, retrieval=False), overrides=list(overrides))
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    model.save_pretrained(root / "bundle")
    return model.eval(), root / "bundle"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("quant"))


@pytest.fixture(scope="module")
def quantized(original, tmp_path_factory):
    """quantized(weights, backend) -> the quantized bundle folder, written once per module."""
    made = {}

    def get(weights, backend="auto"):
        if (weights, backend) not in made:
            out = tmp_path_factory.mktemp(f"{weights}-{backend}") / "bundle"
            made[weights, backend] = quantize_bundle(original[1], out, weights, backend=backend, device="cpu")
        return made[weights, backend]
    return get


def probe_batch(model):
    image = Image(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)))
    return model.processor.collate([model.processor.encode([Turn.user("what is in this image?", image),
                                                            Turn.assistant("a red circle")])])


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("weights,backend,bound,layer_type", [
    ("int8", "auto", 0.05, torch.ao.nn.quantized.dynamic.Linear),  # torch-dynamic on CPU
    ("int8", "bitsandbytes", 0.05, bnb.nn.Linear8bitLt),
    ("int8", "torchao", 0.05, torch.nn.Linear),  # weights become torchao Int8Tensor
    ("int4", "auto", 0.3, bnb.nn.Linear4bit),
    ("nf4", "auto", 0.3, bnb.nn.Linear4bit),
])
def test_each_cpu_scheme_loads_generates_and_stays_close(original, quantized, weights, backend, bound, layer_type):
    model, _ = original
    out = quantized(weights, backend)
    loaded = AnyModalModel.from_pretrained(out)
    q_proj = loaded.llm.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj, layer_type)
    if backend == "torchao":
        assert type(q_proj.weight).__name__ == "Int8Tensor"
    batch = probe_batch(model)
    with torch.no_grad():
        error = relative_error(loaded(batch).logits, model(batch).logits)
    assert 0 < error < bound  # quantized (not a copy), and close
    assert weight_bytes(loaded.llm) < 0.7 * weight_bytes(model.llm)
    assert loaded.generate(Turn.user("describe the picture"), max_new_tokens=4).token_ids

    record = json.loads((out / "manifest.json").read_text())["components"]["quantization"]
    assert record["scheme"] == weights and record["backend"] == loaded.config.llm.quantization.backend != "auto"
    assert record["lora"] == "adapter" and (out / "adapter" / "adapter_config.json").is_file()
    assert loaded.config.llm.name_or_path == "llm"
    assert record["stored"] == ("full precision, quantized at load" if record["backend"] == "torch-dynamic" else "quantized")


def test_projections_and_token_rows_stay_full_precision(original, quantized):
    model, _ = original
    loaded = AnyModalModel.from_pretrained(quantized("nf4"))
    for ours, theirs in zip(loaded.input_projections.parameters(), model.input_projections.parameters()):
        assert ours.dtype == torch.float32 and torch.equal(ours, theirs)
    ids = list(model.protocol.ids.values())
    embeddings = loaded.llm.get_input_embeddings().weight
    assert torch.equal(embeddings[ids], model.llm.get_input_embeddings().weight[ids])
    assert type(loaded.llm.get_output_embeddings()) is torch.nn.Linear


def test_merge_lora_keeps_the_adapter_effect(original, tmp_path):
    model, source = original
    out = quantize_bundle(source, tmp_path / "q", "int8", backend="torchao", merge_lora=True)
    loaded = AnyModalModel.from_pretrained(out)
    assert not isinstance(loaded.llm, PeftModel) and not (out / "adapter").exists()
    assert loaded.config.llm.lora.enabled is False
    batch = probe_batch(model)
    with torch.no_grad():
        merged, with_lora = loaded(batch).logits, model(batch).logits
        with model.llm.disable_adapter():
            without_lora = model(batch).logits
    assert relative_error(merged, with_lora) < 0.05 < relative_error(merged, without_lora)


def test_skip_keeps_named_layers_in_high_precision(original, tmp_path):
    _, source = original
    out = quantize_bundle(source, tmp_path / "q", "nf4", skip=["down_proj", "model.layers.0.self_attn.q_proj"])
    loaded = AnyModalModel.from_pretrained(out)
    base = loaded.llm.get_base_model()
    assert type(base.model.layers[1].mlp.down_proj) is torch.nn.Linear
    assert type(base.model.layers[0].self_attn.q_proj.base_layer) is torch.nn.Linear
    assert isinstance(base.model.layers[1].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    assert loaded.config.llm.quantization.skip == ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
                                                   "model.layers.1.mlp.down_proj"]
    with pytest.raises(ConfigError, match="no_such_proj names no linear layer.*model.layers.0.self_attn.q_proj.*suffixes"):
        quantize_bundle(source, tmp_path / "bad", "nf4", skip=["no_such_proj"])


def test_unsupported_combinations_name_the_alternative(original, tmp_path, monkeypatch):
    _, source = original
    with pytest.raises(ConfigError, match="int4 kernels do not run here.*backend bitsandbytes"):
        quantize_bundle(source, tmp_path / "a", "int4", backend="torchao")
    with pytest.raises(ConfigError, match="torch-dynamic backend does not run int8 on cuda.*bitsandbytes"):
        resolve(QuantizationConfig(scheme="int8", backend="torch-dynamic"), "cuda")
    with pytest.raises(ConfigError, match="torch-dynamic backend does not run nf4 on cpu.*backend bitsandbytes"):
        resolve(QuantizationConfig(scheme="nf4", backend="torch-dynamic"), "cpu")
    with pytest.raises(ConfigError, match="torch-dynamic int8 backend computes in float32, not bfloat16.*torchao"):
        quantize_bundle(source, tmp_path / "a", "int8", backend="torch-dynamic", dtype="bfloat16")
    with pytest.raises(ConfigError, match="unknown quantization scheme 'int2'.*int8, int4, nf4"):
        resolve(QuantizationConfig(scheme="int2"), "cpu")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="bitsandbytes backend is not installed.*pip install.*int8 \\(torch-dynamic\\)"):
        resolve(QuantizationConfig(scheme="nf4"), "cpu")
    with pytest.raises(ConfigError, match="not installed.*backend torchao or torch-dynamic"):
        resolve(QuantizationConfig(scheme="int8", backend="bitsandbytes"), "cpu")
    assert not (tmp_path / "a").exists()


def test_quantizing_twice_or_in_place_is_refused(original, quantized, tmp_path):
    _, source = original
    with pytest.raises(CheckpointError, match="already quantized \\(int8 via torch-dynamic\\).*full-precision bundle"):
        quantize_bundle(quantized("int8"), tmp_path / "again", "nf4")
    with pytest.raises(ConfigError, match="--out must differ"):
        quantize_bundle(source, source, "int8")


def test_a_shape_the_cpu_4bit_kernel_cannot_take(tmp_path):
    """Input width 96 is not a multiple of bitsandbytes' block of 64: its CPU kernel would return wrong numbers."""
    _, source = build_bundle(tmp_path, hidden=96)
    with pytest.raises(ConfigError, match="multiples of 64.*model.layers.0.self_attn.q_proj.*"
                                          "--skip gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj.*int8"):
        quantize_bundle(source, tmp_path / "q", "nf4")
    assert not (tmp_path / "q").exists()
    loaded = AnyModalModel.from_pretrained(quantize_bundle(source, tmp_path / "q8", "int8"))  # the named alternative
    assert loaded.generate(Turn.user("hi"), max_new_tokens=2).token_ids


def test_sensitivity_report_sorts_layers_worst_first(original):
    _, source = original
    int8, nf4 = layer_sqnr(source, "int8"), layer_sqnr(source, "nf4")
    assert len(nf4) == 14  # 2 layers x (q, k, v, o, gate, up, down); the output head is never quantized
    assert [e.sqnr_db for e in nf4] == sorted(e.sqnr_db for e in nf4)
    median = lambda errors: sorted(e.sqnr_db for e in errors)[len(errors) // 2]  # noqa: E731
    assert 10 < median(nf4) < median(int8) - 10  # ~6 dB per bit
    text = format_report(nf4, "nf4", top=5)
    assert text.splitlines()[1].startswith(nf4[0].name)
    assert text.splitlines()[-1].endswith(f"--skip {nf4[0].name},{nf4[1].name},{nf4[2].name}")


def test_qlora_steps_lower_the_loss_and_the_adapter_loads_on_the_fp32_base(tmp_path):
    model, _ = build_bundle(tmp_path, overrides=["llm.quantization.scheme=nf4"])  # the recipe key
    layer = model.llm.get_base_model().model.layers[0].self_attn.q_proj
    assert isinstance(layer.base_layer, bnb.nn.Linear4bit) and layer.base_layer.weight.quant_state.nested
    model.train()
    batch = probe_batch(model)
    params = [p for p in model.llm.parameters() if p.requires_grad]
    assert params and all(p.dtype == torch.float32 for p in params)
    optimizer = torch.optim.Adam(params, lr=3e-2)
    losses = []
    for _ in range(8):
        loss = model(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.25
    model.eval()
    model.save_pretrained(tmp_path / "qlora")

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "llm")  # the full-precision base, peft alone
    base.resize_token_embeddings(len(model.tokenizer), mean_resizing=False)
    ids = list(model.protocol.ids.values())
    set_token_rows(base, ids, {"input": model.llm.get_input_embeddings().weight[ids],
                               "output": model.llm.get_output_embeddings().weight[ids]})
    full = PeftModel.from_pretrained(base, tmp_path / "qlora" / "adapter").eval()
    text = torch.tensor([model.tokenizer.encode("a red circle on a blue background", add_special_tokens=False)])
    with torch.no_grad():
        qlora_logits = model.llm(input_ids=text).logits
        error = relative_error(full(input_ids=text).logits, qlora_logits)
        with full.disable_adapter():
            untrained = relative_error(full(input_ids=text).logits, qlora_logits)
    assert error < 0.3 and error < untrained  # the trained adapter carries over to the fp32 base
    reloaded = AnyModalModel.from_pretrained(tmp_path / "qlora")  # and the bundle reloads in 4-bit
    assert isinstance(reloaded.llm.get_base_model().model.layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)


def test_quantize_command_writes_and_reports(original, tmp_path, capsys):
    _, source = original
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["quantize", str(source), "--weights", "nf4", "--merge-lora", "--out", str(tmp_path / "q")])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "q" / "manifest.json").read_text())["components"]["quantization"]["lora"] == "merged"
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'q'} (nf4)")
    args = parser.parse_args(["quantize", str(source), "--report", "--weights", "int8", "--top", "3"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[0] in quantizable_names(source) and lines[-1].startswith("int8: median")
    with pytest.raises(ConfigError, match="--weights.*--out"):
        args = parser.parse_args(["quantize", str(source), "--weights", "int8"])
        args.func(args)


def quantizable_names(source):
    model = AnyModalModel.from_pretrained(source)
    return {plain_name(n) for n in quantizable_layers(model.llm)}


def test_bench_prints_the_table_and_summary_line(original, capsys):
    _, source = original
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["quantize", str(source), "--schemes", "nf4", "--tokens", "3", "--repeats", "1",
                              "--in-process"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["original", "nf4"]
    part = r"(int8|int4|nf4) \d+\.\d{3}x bf16 weight bytes \(goal <= 0\.\d\dx, (met|missed)\), ppl x\d+\.\d{3}"
    assert re.fullmatch(rf"summary: {part}(; {part})*; (goals met|goals missed: [a-z0-9,]+)", lines[-1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_decoder_cpu_offload_load_option_needs_a_gpu(tmp_path):
    from decoders.diffusion import StableDiffusionDecoder

    StableDiffusionDecoder.from_config({}).save_pretrained(tmp_path / "sd")
    with pytest.raises(ConfigError, match="cpu_offload needs a CUDA GPU.*leave cpu_offload out"):
        StableDiffusionDecoder.from_pretrained(tmp_path / "sd", cpu_offload=True)  # DecoderConfig.load_options key


@pytest.mark.slow
def test_bench_measures_each_variant_in_its_own_process(original, capsys):
    _, source = original
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["quantize", str(source), "--schemes", "int8", "--tokens", "3", "--repeats", "1"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    original_row, int8_row = lines[1].split(), lines[2].split()
    assert original_row[:3] == ["original", "-", "float32"] and int8_row[:3] == ["int8", "torch-dynamic", "float32"]
    assert float(int8_row[5]) > 0  # peak MB of the variant's own process
    assert lines[-1].startswith("summary: int8 ")
