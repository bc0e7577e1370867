"""The padding-free allow-list is exactly the set of architectures whose packed rows are exact.

Every decoder-only architecture below is built tiny from its config, and each sample's logits in a packed row
(one row of three samples, positions restarting per sample, iterframe's packed attention) are compared with the
same sample run alone through the model's own kernel. Samples are longer than the sliding window and the
attention chunk where a model has one. An architecture passes when every sample matches to 1e-4 of the logits'
scale; the test fails when an allow-listed architecture does not pass, and also when an architecture outside
the allow-list passes (then it belongs on it). A control checks that the comparison can fail: the same row
run as one ordinary causal sequence differs from the samples alone.
"""

from __future__ import annotations

import warnings
from typing import Optional

import pytest
import torch

from iterframe.engine import packing
from iterframe.engine.packing_support import EXCLUDED_ARCHITECTURES, MINIMUM_TRANSFORMERS, PACKABLE_ARCHITECTURES

transformers = pytest.importorskip("transformers")

COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
    sliding_window=4,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    initializer_range=0.2,  # logits of order 1, so that a mix of samples shows
)
ALTERNATING = dict(layer_types=["sliding_attention", "full_attention"])
#: model_type -> what its tiny config needs beside COMMON.
ARCHITECTURES: dict[str, dict] = {
    "llama": {},
    "mistral": {},
    "mixtral": dict(num_local_experts=2),
    "qwen2": dict(use_sliding_window=True, max_window_layers=1),
    "qwen2_moe": dict(
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        use_sliding_window=True,
        max_window_layers=1,
    ),
    "qwen3": {},
    "qwen3_moe": dict(num_experts=2, num_experts_per_tok=1, moe_intermediate_size=32),
    "phi": {},
    "phi3": {},
    "gemma": {},
    "gemma2": ALTERNATING,
    "gemma3_text": ALTERNATING,
    "gpt2": dict(n_positions=64),
    "gptj": dict(n_positions=64, rotary_dim=4),
    "gpt_neox": dict(rotary_pct=0.5),
    "opt": dict(ffn_dim=64, word_embed_proj_dim=32),
    "olmo": {},
    "olmo2": {},
    "olmo3": ALTERNATING,
    "granite": {},
    "cohere": {},
    "smollm3": {},
    "starcoder2": {},
    "stablelm": {},
    "falcon": dict(new_decoder_architecture=True, num_kv_heads=2, head_dim=None),
    "bloom": {},
    "lfm2": dict(layer_types=["conv", "full_attention"], block_ff_dim=64, block_auto_adjust_ff_dim=False),
    "jamba": dict(
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        num_experts=2,
        use_mamba_kernels=False,
        mamba_d_state=4,
        mamba_expand=2,
        mamba_dt_rank=4,
    ),
    "qwen3_next": dict(
        layer_types=["linear_attention", "full_attention"],
        linear_num_value_heads=2,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
    ),
    "llama4_text": dict(
        attention_chunk_size=4,
        num_local_experts=2,
        intermediate_size_mlp=64,
        no_rope_layers=[1, 0],
        moe_layers=[1],
    ),
}
SAMPLE_LENGTHS = [7, 11, 5]


def build_tiny(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {model_type}")
    settings = {**COMMON, **ARCHITECTURES[model_type]}
    settings = {key: value for key, value in settings.items() if value is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = AutoConfig.for_model(model_type, **settings)
        for kernel in ("sdpa", "eager"):  # eager where transformers has no sdpa implementation
            torch.manual_seed(0)
            try:
                return AutoModelForCausalLM.from_config(config, attn_implementation=kernel).eval()
            except ValueError:
                if kernel == "eager":
                    raise


def packed_mismatch(model) -> tuple[Optional[str], float]:
    """``(why the packed row differs from the samples alone, or None; the control's relative difference)``."""
    generator = torch.Generator().manual_seed(1)
    samples = [torch.randint(3, 90, (length,), generator=generator) for length in SAMPLE_LENGTHS]
    ends = torch.tensor(SAMPLE_LENGTHS).cumsum(0).tolist()
    segments = list(zip([0, *ends[:-1]], ends))
    row = torch.cat(samples)[None]
    positions = torch.cat([torch.arange(length) for length in SAMPLE_LENGTHS])[None]
    with torch.no_grad():
        alone = [model(input_ids=sample[None]).logits[0] for sample in samples]
        one_causal_row = model(input_ids=row).logits[0]
        scale = max(float(logits.abs().max()) for logits in alone)
        control = max(
            float((one_causal_row[start:end] - logits).abs().max()) / scale
            for (start, end), logits in zip(segments[1:], alone[1:])
        )
        try:
            with packing.packed_attention(model, segments):
                packed = model(input_ids=row, position_ids=positions).logits[0]
        except Exception as error:  # noqa: BLE001 - a failure to pack is a result of the sweep
            return f"{type(error).__name__}: {error}", control
    differences = [
        float((packed[start:end] - logits).abs().max()) / scale for (start, end), logits in zip(segments, alone)
    ]
    if max(differences) > 1e-4:
        return f"samples differ from themselves alone by {', '.join(f'{d:.2g}' for d in differences)}", control
    return None, control


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_allow_list_holds_exactly_the_architectures_whose_packed_rows_match_each_sample_alone(model_type):
    model = build_tiny(model_type)
    mismatch, control = packed_mismatch(model)
    assert control > 0.05, f"{model_type}: one causal row should mix the samples (the comparison could not fail)"
    reason = packing.unsupported_reason(model)
    if model_type in PACKABLE_ARCHITECTURES and model_type not in MINIMUM_TRANSFORMERS:
        assert mismatch is None, f"{model_type} is allow-listed but its packed rows are not exact: {mismatch}"
        assert reason is None or "forward takes no" in reason, reason  # an older forward: trains padded
    elif model_type in MINIMUM_TRANSFORMERS:
        assert (mismatch is None) == (reason is None), (model_type, mismatch, reason)
    else:
        # Outside the allow-list the promise is that the model trains padded, with its reason: whether the packed
        # row happens to be exact under this transformers release is reported, never a failure (a release that
        # changes a model's attention path must not turn the suite red, and the allow-list stays conservative).
        assert model_type in EXCLUDED_ARCHITECTURES, (
            f"{model_type} is outside the allow-list with no stated reason"
        )
        assert reason is not None and EXCLUDED_ARCHITECTURES[model_type] in reason, reason
        if mismatch is None:
            warnings.warn(
                f"{model_type} packs exactly under transformers {transformers.__version__}: once every supported "
                "release does, it may join PACKABLE_ARCHITECTURES",
                stacklevel=1,
            )


def padding_mismatch(model, side: str = "right") -> float:
    """Largest relative difference, over the real positions of a padded batch, between the logits with the
    batch's attention mask and without it."""
    generator = torch.Generator().manual_seed(2)
    longest = max(SAMPLE_LENGTHS)
    input_ids = torch.zeros(len(SAMPLE_LENGTHS), longest, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, length in enumerate(SAMPLE_LENGTHS):
        real = slice(0, length) if side == "right" else slice(longest - length, longest)
        input_ids[row, real] = torch.randint(3, 90, (length,), generator=generator)
        mask[row, real] = 1
    with torch.no_grad():
        masked = model(input_ids=input_ids, attention_mask=mask).logits
        unmasked = model(input_ids=input_ids).logits
    real = mask.bool()
    return float((masked[real] - unmasked[real]).abs().max()) / float(masked[real].abs().max())


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_a_model_trained_without_its_padding_mask_gives_the_same_logits_at_every_real_position(model_type):
    from iterframe.engine.packing_support import ignores_right_padding

    model = build_tiny(model_type)
    if not ignores_right_padding(model):
        pytest.skip(f"{model_type} trains with its padding mask")
    assert padding_mismatch(model) < 1e-5, f"{model_type} needs its padding mask, yet trains without it"


def test_the_padding_mask_comparison_can_fail():
    assert padding_mismatch(build_tiny("llama"), side="left") > 0.05  # padding before a sample changes it


def test_every_listed_architecture_is_swept():
    assert PACKABLE_ARCHITECTURES <= set(ARCHITECTURES)
    assert set(EXCLUDED_ARCHITECTURES) <= set(ARCHITECTURES)
    assert not PACKABLE_ARCHITECTURES & set(EXCLUDED_ARCHITECTURES)


def test_an_excluded_architecture_trains_padded_with_the_reason_logged_and_refuses_required_packing(
    tmp_path, caplog, tiny_llama_path
):
    from iterframe import IterativeSFTConfig, IterativeSFTTrainer

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama_path)
    model = build_tiny("lfm2")
    settings = dict(output_dir=str(tmp_path), report_to="none", save_strategy="no")
    with caplog.at_level("INFO", logger="iterframe.engine.packing_support"):
        trainer = IterativeSFTTrainer(model, args=IterativeSFTConfig(**settings), processing_class=tokenizer)
    assert trainer.padding_free is False
    logged = [record.getMessage() for record in caplog.records if "padded micro-batches" in record.getMessage()]
    assert len(logged) == 1 and EXCLUDED_ARCHITECTURES["lfm2"] in logged[0]
    stats = trainer.step(input_ids=[torch.tensor([3, 4, 5, 6]), torch.tensor([7, 8])])
    assert stats["padding_fraction"] > 0  # the short sample was padded, not packed behind the long one
    with pytest.raises(
        ValueError, match="padding_free=True, but the lfm2 architecture cannot pack samples exactly"
    ):
        IterativeSFTTrainer(
            model, args=IterativeSFTConfig(**settings, padding_free=True), processing_class=tokenizer
        )


def test_a_packed_pass_leaves_every_sub_configs_attention_kernel_as_it_was():
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    text = dict(COMMON, model_type="llama")
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=8)
    config = LlavaConfig(text_config=text, vision_config=dict(vision, patch_size=4), image_token_index=95)
    model = LlavaForConditionalGeneration(config)
    model.config.vision_config._attn_implementation = "eager"
    model.config.text_config._attn_implementation = "sdpa"
    before = {name: sub._attn_implementation for name, sub in (("", model.config), *sub_configs(model.config))}
    with torch.no_grad(), packing.packed_attention(model, [(0, 3), (3, 5)]) as layout:
        model(input_ids=torch.tensor([[3, 4, 5, 6, 7]]), position_ids=torch.tensor([[0, 1, 2, 0, 1]]))
    assert layout.calls == COMMON["num_hidden_layers"]
    after = {name: sub._attn_implementation for name, sub in (("", model.config), *sub_configs(model.config))}
    assert after == before and after["vision_config"] == "eager"
    assert not any(packing.LAYOUT_ATTRIBUTE in vars(sub) for _, sub in sub_configs(model.config))


def sub_configs(config):
    return [(name, getattr(config, name)) for name in config.sub_configs]


def test_two_trainers_packing_in_two_threads_do_not_see_each_others_samples():
    import threading

    first, second = build_tiny("llama"), build_tiny("qwen2")
    generator = torch.Generator().manual_seed(2)
    rows = {id(first): [5, 9, 4], id(second): [8, 3, 6, 7]}
    expected, results, errors = {}, {}, []

    def packed_logits(model, lengths):
        samples = [torch.randint(3, 90, (length,), generator=generator) for length in lengths]
        ends = torch.tensor(lengths).cumsum(0).tolist()
        positions = torch.cat([torch.arange(length) for length in lengths])[None]
        return samples, list(zip([0, *ends[:-1]], ends)), positions

    inputs = {key: packed_logits(model, rows[id(model)]) for key, model in (("a", first), ("b", second))}
    with torch.no_grad():
        for key, model in (("a", first), ("b", second)):
            expected[key] = torch.cat([model(input_ids=sample[None]).logits[0] for sample in inputs[key][0]])

    def train(key, model):
        samples, segments, positions = inputs[key]
        try:
            with torch.no_grad():
                for _ in range(20):
                    with packing.packed_attention(model, segments):
                        out = model(input_ids=torch.cat(samples)[None], position_ids=positions)
                    results.setdefault(key, []).append(out.logits[0])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=train, args=item) for item in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for key in ("a", "b"):
        for logits in results[key]:
            torch.testing.assert_close(logits, expected[key], atol=1e-5, rtol=1e-4)
    assert first.config._attn_implementation == second.config._attn_implementation == "sdpa"


def test_the_trainer_docs_table_lists_the_allow_list_and_every_exclusion_with_its_reason():
    import pathlib
    import re

    docs = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "trainer.md").read_text()
    rows = [line for line in docs.splitlines() if re.match(r"\| `[a-z0-9_]+`", line)]

    def named_in(rows_with: str) -> set[str]:
        return {
            name for row in rows if rows_with in row for name in re.findall(r"`([a-z0-9_]+)`", row.split("|")[1])
        }

    assert named_in("| yes") == set(PACKABLE_ARCHITECTURES)
    assert named_in("| yes, from transformers") == set(MINIMUM_TRANSFORMERS)
    for model_type, reason in EXCLUDED_ARCHITECTURES.items():
        assert any(row.startswith(f"| `{model_type}` | no, padded | {reason} |") for row in rows), model_type
