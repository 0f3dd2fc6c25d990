"""The toy world's language model, trained from scratch: a byte-level BPE tokenizer fitted on the world's
words, a tiny Llama, and next-token pretraining on the world's text conversations through the shared
Trainer (stage ``language_modeling``), in the exact prompt layout the model sees later.

    train_llm("runs/toyworld/llm")   ->  llm/ (config.json, model.safetensors, tokenizer.json, ...) + metrics.json

The folder is a plain transformers checkpoint: ``ModelConfig.llm.name_or_path`` points at it and LoRA
instruction tuning starts from it. Text conversations are the world's tasks without media, balanced::

    request    "draw a small red circle" -> "here it is"    (sound: "listen", video: "here it goes")
    question   "what colour is a small red circle" -> "red"  (the spoken language's questions, in text)
    describe   "draw X" -> "here it is", "describe the picture" -> "X"   (the caption tasks' wording)
    ask        "draw X" -> "here it is", "what colour is it?" / "is it small?" -> "red" / "yes"
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from pathlib import Path

import torch

from ..config import LLMConfig, LoraConfig, ModelConfig, PromptConfig, to_dict
from ..speech import ChainOfModality
from .render import one_thread
from .spoken import WORDS
from .tasks import QUESTIONS, TRANSCRIBE, Item, assistant, generate_image, generate_sound, generate_video, question_answer
from .tasks import spoken_question_text, text, user
from .world import SIZES, Thing, sample_things, split_seed

TEXT_TASKS = ("request", "question", "describe", "ask")
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
# every wording the world's tasks use, with media parts, so that the tokenizer gives them whole tokens
MEDIA_TASK_TEXTS = ["describe the picture", "what makes this sound?", "describe the video", TRANSCRIBE,
                    "make its sound", "find the first one", "here it is", "listen", "here it goes", *QUESTIONS.values()]


# ------------------------------------------------------------------------------------- data
def _item(thing: Thing) -> Item:
    """A media-less item: the generate_* builders read only its thing."""
    return Item(0, thing, "", "", "", "", "", "", "", "", 0)


def _text_only(messages: list[dict]) -> list[dict]:
    """Drop the output signal parts: what is left is the conversation's text."""
    return [{**m, "content": [p for p in m["content"] if p["type"] == "text"]} for m in messages]


def _conversation(task: str, thing: Thing, rng: random.Random) -> list[dict]:
    request = _text_only(rng.choice((generate_image, generate_sound, generate_video))(_item(thing), rng))
    if task == "request":
        return request
    if task == "question":
        asked, answer = spoken_question_text(thing, rng)
        return [user(text(asked)), assistant(text(answer))]
    if task == "describe":
        shown = {"draw": ("describe the picture", thing.caption), "make": ("what makes this sound?", thing.caption),
                 "animate": ("describe the video", thing.motion_caption)}[request[0]["content"][0]["text"].split()[0]]
        return request + [user(text(shown[0])), assistant(text(shown[1]))]
    asked, answer = question_answer(thing, rng.choice(list(QUESTIONS)), rng.choice(SIZES))
    return _text_only(generate_image(_item(thing), rng)) + [user(text(asked)), assistant(text(answer))]


def text_conversations(split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` JSONL conversation records (``{"messages": [...]}``) of ``split``, the tasks in turn (balanced)."""
    rng = random.Random(f"{split_seed(seed, split)}:text")
    things = sample_things(n, rng)
    return [{"task": TEXT_TASKS[i % len(TEXT_TASKS)], "messages": _conversation(TEXT_TASKS[i % len(TEXT_TASKS)], t, rng)}
            for i, t in enumerate(things)]


def world_texts(prompt: PromptConfig, seed: int = 0) -> list[str]:
    """The tokenizer's training text: each piece as the processor encodes it (prompt pieces and turn texts
    separately), every task wording, the spoken words and the SpeechGPT templates."""
    template = ChainOfModality()
    pieces = [prompt.system, prompt.user, prompt.assistant, prompt.separator, *MEDIA_TASK_TEXTS, *WORDS, " ".join(WORDS)]
    pieces += [template.human, template.assistant, template.end_of_human, template.end_of_answer, template.separator,
               template.asr_instruction, template.tts_instruction, *template.markers.values()]
    pieces += [t.instruction for t in template.tasks.values()]
    for record in text_conversations("train", 1024, seed):
        pieces += [part["text"] for message in record["messages"] for part in message["content"]]
    return [p for p in pieces if p]


def build_tokenizer(directory: str | Path, prompt: PromptConfig | None = None, vocab_size: int = 640, seed: int = 0):
    """A byte-level BPE fitted on ``world_texts``: the world's words become single tokens, and any other text
    still tokenizes (bytes). Saved as a transformers fast tokenizer; ``AutoTokenizer.from_pretrained`` loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(world_texts(prompt or PromptConfig(), seed), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL)
    tokenizer.save_pretrained(directory)
    return tokenizer


# ------------------------------------------------------------------------------------- training
def train_llm(out: str | Path, *, seed: int = 0, n_train: int = 4096, n_eval: int = 512, steps: int = 1000,
              batch_size: int = 32, lr: float = 3e-3, hidden_size: int = 128, layers: int = 4, heads: int = 4,
              vocab_size: int = 640, prompt: PromptConfig | None = None, progress: bool = True) -> dict:
    """Tokenizer + tiny Llama, pretrained on ``n_train`` text conversations for ``steps`` AdamW steps; writes the
    plain checkpoint to ``out`` and ``out/metrics.json`` last. Returns the metrics (held-out split)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ..training import Trainer, load_recipe

    out, prompt = Path(out), prompt or PromptConfig()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="toyworld-llm-") as work:
        work = Path(work)
        tokenizer = build_tokenizer(work / "init", prompt, vocab_size, seed)
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                             max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        LlamaForCausalLM(config).save_pretrained(work / "init")
        data = {}
        for split, n in (("train", n_train), ("validation", n_eval)):
            data[split] = work / f"{split}.jsonl"
            data[split].write_text("".join(json.dumps(r) + "\n" for r in text_conversations(split, n, seed)))
        model_config = ModelConfig(llm=LLMConfig(name_or_path=str(work / "init"), lora=LoraConfig(enabled=False)),
                                   prompt=prompt)
        recipe = load_recipe({
            "stage": {"name": "language_modeling"}, "model": to_dict(model_config),
            "data": {"train": [str(data["train"])], "eval": [str(data["validation"])]},
            "optim": {"lr": lr, "warmup_steps": steps // 20, "scheduler": "cosine"},
            "train": {"steps": steps, "batch_size": batch_size, "seed": seed, "log_every": max(1, steps // 10)},
            "output_dir": str(work / "run")})
        with one_thread():
            trainer = Trainer(recipe, progress=progress)
            before = language_metrics(trainer.model, data["validation"], batch_size)
            trainer.fit()
            model = trainer.model
            metrics = {**language_metrics(model, data["validation"], batch_size),
                       "perplexity_before": before["perplexity"]}
        llm = model.llm
        llm.resize_token_embeddings(len(tokenizer))  # drop the placeholder rows: the folder is a plain LM
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").unlink(missing_ok=True)  # written last: its presence means "done"
        llm.save_pretrained(out)
        tokenizer.save_pretrained(out)
    metrics.update(parameters=sum(p.numel() for p in llm.parameters()), vocab_size=len(tokenizer), steps=steps,
                   train_conversations=n_train, eval_conversations=n_eval, seconds=round(time.perf_counter() - started, 1),
                   folder_mb=round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2 ** 20, 2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


@torch.no_grad()
def language_metrics(model, path: Path, batch_size: int = 32) -> dict:
    """An AnyModalModel on the text conversations in ``path`` (written from ``text_conversations``): perplexity and
    next-token accuracy over answer tokens; ``answer_exact``: share of answers whose every
    token (and the end of text) is the argmax given the right prefix, i.e. what greedy decoding writes."""
    from ..training.data import Collator, read_data

    samples, tasks = read_data([str(path)]), [json.loads(line)["task"] for line in path.read_text().splitlines()]
    collate = Collator(model.processor, model.protocol)
    nll = tokens = right = 0.0
    exact: dict[str, list[bool]] = {t: [] for t in TEXT_TASKS}
    model.eval()
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start:start + batch_size]).batch
        logits = model(batch).logits[:, :-1]  # [B, L-1, V]
        labels = batch.labels[:, 1:]  # [B, L-1]
        learned = labels != -100
        nll += torch.nn.functional.cross_entropy(logits[learned], labels[learned], reduction="sum").item()
        hits = (logits.argmax(-1) == labels) | ~learned  # [B, L-1]
        right += (hits & learned).sum().item()
        tokens += learned.sum().item()
        for row, task in enumerate(tasks[start:start + batch_size]):
            exact[task].append(bool(hits[row].all()))
    every = [e for values in exact.values() for e in values]
    return {"perplexity": round(math.exp(nll / tokens), 4), "token_accuracy": round(right / tokens, 4),
            "answer_exact": round(sum(every) / len(every), 4),
            **{f"answer_exact.{t}": round(sum(v) / len(v), 4) for t, v in exact.items() if v}}

