"""Tiny, offline models and tokenizers for tests, examples and benchmarks.

Everything here is built locally (a tokenizer trained with ``tokenizers``, a model from a config) and saved to a
directory, so callers exercise the real ``from_pretrained(path)`` code path without any hub access.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Optional

import torch

__all__ = [
    "DEFAULT_CORPUS",
    "build_char_tokenizer",
    "build_tiny_causal_lm",
    "build_tiny_seq2seq_lm",
    "train_bpe_tokenizer",
    "write_tiny_gguf",
]

#: A ChatML template (the one SmolLM2 and Qwen use), for tiny chat models.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

DEFAULT_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is 12 + 7? Answer: 19",
    "Iterative fine-tuning trains on the model's own best completions.",
    "Expert iteration, rejection sampling and best-of-n distillation are close cousins.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ? ! , . : ; ( ) [ ] { }",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]

_SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def _wrap_fast_tokenizer(raw_tokenizer, *, pad: bool, chat_template: Optional[str] = None):
    from transformers import PreTrainedTokenizerFast

    special = dict(_SPECIAL_TOKENS)
    if not pad:
        special.pop("pad_token")
    # what a decoder-only model takes, as Llama's and Qwen's tokenizers declare it (without it transformers 4.x's
    # tokenizer also returns token_type_ids, which generate() refuses for these models)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw_tokenizer, model_input_names=["input_ids", "attention_mask"], **special
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def _bos_template(raw_tokenizer):
    from tokenizers.processors import TemplateProcessing

    bos_id = raw_tokenizer.token_to_id(_SPECIAL_TOKENS["bos_token"])
    raw_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )


def train_bpe_tokenizer(
    corpus: Optional[Iterable[str]] = None,
    vocab_size: int = 256,
    *,
    pad: bool = True,
    add_bos: bool = True,
    chat_template: Optional[str] = None,
):
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it as a ``PreTrainedTokenizerFast``.

    Args:
        corpus: texts to train on (defaults to a small built-in corpus).
        vocab_size: target vocabulary size, special tokens included.
        pad: give the tokenizer a ``<pad>`` token; ``False`` leaves ``pad_token`` unset.
        add_bos: prepend ``<s>`` when encoding, like Llama tokenizers.
        chat_template: optional Jinja chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    specials = [_SPECIAL_TOKENS[key] for key in ("pad_token", "bos_token", "eos_token", "unk_token")]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(list(corpus or DEFAULT_CORPUS), trainer=trainer)
    if add_bos:
        _bos_template(raw)
    return _wrap_fast_tokenizer(raw, pad=pad, chat_template=chat_template)


def build_char_tokenizer(alphabet: str, *, add_bos: bool = True, chat_template: Optional[str] = None):
    """A character-level tokenizer over ``alphabet`` (one token per character), with pad/bos/eos/unk.

    Args:
        alphabet: every character the tokenizer knows; others map to ``<unk>``.
        add_bos: prepend ``<s>`` when encoding.
        chat_template: optional Jinja chat template.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {}
    for token in [_SPECIAL_TOKENS[key] for key in ("pad_token", "bos_token", "eos_token", "unk_token")]:
        vocab[token] = len(vocab)
    for char in dict.fromkeys(alphabet):
        vocab.setdefault(char, len(vocab))
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token=_SPECIAL_TOKENS["unk_token"]))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    raw.decoder = decoders.Fuse()
    if add_bos:
        _bos_template(raw)
    return _wrap_fast_tokenizer(raw, pad=True, chat_template=chat_template)


def build_tiny_causal_lm(
    save_dir: Optional[str] = None,
    tokenizer=None,
    *,
    architecture: str = "llama",
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_key_value_heads: Optional[int] = None,
    intermediate_size: Optional[int] = None,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    seed: int = 0,
):
    """Build a randomly initialised causal LM (``"llama"`` or ``"qwen2"``) sized for ``tokenizer``
    (``num_key_value_heads`` below ``num_heads`` gives grouped-query attention).

    Returns ``(model, tokenizer)``; with ``save_dir``, both are also saved there with ``save_pretrained``.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    tokenizer = tokenizer if tokenizer is not None else train_bpe_tokenizer()
    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config}[architecture]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_key_value_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    if save_dir is not None:
        os.makedirs(save_dir, exist_ok=True)
        model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    return model, tokenizer


def build_tiny_seq2seq_lm(save_dir: Optional[str] = None, tokenizer=None, *, d_model: int = 32, seed: int = 0):
    """Build a randomly initialised T5-style encoder-decoder sized for ``tokenizer``.

    Returns ``(model, tokenizer)``; with ``save_dir``, both are also saved there with ``save_pretrained``.
    """
    from transformers import AutoModelForSeq2SeqLM, T5Config

    tokenizer = tokenizer if tokenizer is not None else train_bpe_tokenizer(add_bos=False)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config)
    if save_dir is not None:
        os.makedirs(save_dir, exist_ok=True)
        model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    return model, tokenizer


def _llama_cpp_permuted(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """A query or key projection in llama.cpp's rotary layout (what its ``convert_hf_to_gguf.py`` writes)."""
    rows = weight.shape[0]
    return weight.reshape(num_heads, 2, rows // num_heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(path: str, *, num_layers: int = 2, hidden_size: int = 32, seed: int = 0):
    """Write a tiny random Llama with a byte-level BPE tokenizer and a ChatML template to the GGUF file ``path``,
    as llama.cpp's converter lays one out: the attention and MLP projections quantized (``Q8_0``), others float32.

    Returns the ``(model, tokenizer)`` it was written from, the projections set to their dequantized values (the
    weights that loading the file gives back). Needs the ``gguf`` package.
    """
    import json

    import gguf

    corpus = [*DEFAULT_CORPUS, "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>"]
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=300, add_bos=False, chat_template=CHATML_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    model, tokenizer = build_tiny_causal_lm(
        None, tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=4, num_key_value_heads=2,
        seed=seed,
    )  # fmt: skip
    config = model.config
    vocab = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    special_ids = set(tokenizer.all_special_ids)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    rope = getattr(config, "rope_parameters", None) or {"rope_theta": config.rope_theta}  # 5.x / 4.x
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([tokenizer.convert_ids_to_tokens(i) for i in range(len(tokenizer))])
    writer.add_token_types([3 if i in special_ids else 1 for i in range(len(tokenizer))])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in vocab["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_add_bos_token(False)  # as the tokenizer encodes (transformers 4.x adds a bos without the key)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(CHATML_TEMPLATE)
    names = {"self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.v_proj": "attn_v"}  # fmt: skip
    state = model.state_dict()
    quantized = gguf.GGMLQuantizationType.Q8_0

    def add_quantized(gguf_name: str, weight: torch.Tensor, layout_heads: Optional[int] = None) -> None:
        # Q8_0 blocks run along rows, so permuting rows commutes with the quantization round trip
        written = _llama_cpp_permuted(weight, layout_heads) if layout_heads else weight
        writer.add_tensor(gguf_name, gguf.quants.quantize(written.numpy(), quantized), raw_dtype=quantized)
        weight.copy_(
            torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(weight.numpy(), quantized), quantized))
        )

    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"].numpy())
    with torch.no_grad():
        for layer in range(config.num_hidden_layers):
            prefix = f"model.layers.{layer}."
            add_quantized(
                f"blk.{layer}.attn_q.weight", state[prefix + "self_attn.q_proj.weight"], config.num_attention_heads
            )
            add_quantized(
                f"blk.{layer}.attn_k.weight", state[prefix + "self_attn.k_proj.weight"], config.num_key_value_heads
            )
            for name, gguf_name in names.items():
                weight = state[f"{prefix}{name}.weight"]
                if weight.dim() == 2:
                    add_quantized(f"blk.{layer}.{gguf_name}.weight", weight)
                else:
                    writer.add_tensor(f"blk.{layer}.{gguf_name}.weight", weight.numpy())
    writer.add_tensor("output_norm.weight", state["model.norm.weight"].numpy())
    writer.add_tensor("output.weight", state["lm_head.weight"].numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, tokenizer
