"""The iterframe-vllm generator plugin.

On CPU, without vLLM: a fake engine stands in for ``vllm.LLM``. It loads pushed weights through the plugin's real
worker extension into a recording model, and answers ``generate`` with scripted token ids. The tests that need
vLLM and a CUDA GPU are at the end and skip themselves (with the reason) where either is missing.
"""

from __future__ import annotations

import os
import sys
import time
import types

import pytest
import torch
from iterframe_vllm import VLLMGenerator, VLLMOptions, plugin
from iterframe_vllm.engine import (
    WORKER_EXTENSION,
    engine_kwargs,
    engine_seed,
    launch_environment,
    require_vllm,
    sampling_params_kwargs,
)
from iterframe_vllm.placement import GenerationGroup, ProcessLayout, group_ranks, split_by_counts
from iterframe_vllm.weight_sync import push_weights
from iterframe_vllm.weights import full_weights
from iterframe_vllm.worker_extension import LOAD_SERIALIZED, LOAD_WEIGHTS, WeightLoaderExtension

from iterframe import IterativeSFTConfig, IterativeSFTTrainer, RunContext
from iterframe.engine.adapters import build_lora_config, merged_copy
from iterframe.generation.prompt_encoding import encode_prompt
from iterframe.generation.token_ids import tokenizer_fingerprint
from iterframe.plugins.options import ComponentOptionError, build_options
from iterframe.testing import build_tiny_causal_lm

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


# --- the fake engine ----------------------------------------------------------------------------------------


class RecordingModel:
    """Stands in for a vLLM model: keeps a copy of every tensor given to ``load_weights``."""

    def __init__(self, reject=()):
        self.loaded: dict[str, torch.Tensor] = {}
        self.calls = 0
        self.reject = set(reject)

    def load_weights(self, weights):
        self.calls += 1
        for name, tensor in weights:
            if name in self.reject:
                raise KeyError(f"no parameter named {name}")
            self.loaded[name] = tensor.detach().clone()


class FakeWorker(WeightLoaderExtension):
    """A vLLM worker with the plugin's extension mixed in, as vLLM does."""

    def __init__(self, model):
        self.model_runner = types.SimpleNamespace(model=model)


class FakeSample:
    def __init__(self, index, token_ids, finish_reason):
        self.index, self.token_ids, self.finish_reason = index, token_ids, finish_reason


class FakeEngine:
    """Stands in for ``vllm.LLM``: records how it was built and called. Completion ``j`` of a prompt is the text
    ``" #j"`` (ending in eos except for ``j == 0``, which hits the length limit), listed in reverse order."""

    def __init__(self, reply_tokenizer, reject=(), **kwargs):
        self.kwargs = kwargs
        self.env_at_start = dict(os.environ)
        self.reply_tokenizer = reply_tokenizer
        self.model = RecordingModel(reject)
        self.worker = FakeWorker(self.model)
        self.rpc_methods: list[str] = []
        self.prefix_cache_resets = 0
        self.generate_calls: list[tuple[list, object]] = []
        self.shut_down = False
        self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(shutdown=self._shutdown))

    def _shutdown(self):
        self.shut_down = True

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.rpc_methods.append(method)
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]

    def reset_prefix_cache(self):
        self.prefix_cache_resets += 1
        return True

    def generate(self, prompts, sampling_params, use_tqdm=True):
        """``sampling_params``: one for every prompt, or a list of one per prompt (recorded as a list)."""
        if not isinstance(sampling_params, list):
            sampling_params = [sampling_params] * len(prompts)
        assert len(sampling_params) == len(prompts)
        self.generate_calls.append((prompts, sampling_params))
        outputs = []
        for _prompt, params in zip(prompts, sampling_params):
            samples = []
            for index in reversed(range(params["n"])):
                ids = self.reply_tokenizer(f" #{index}", add_special_tokens=False)["input_ids"]
                if index:
                    ids = ids + [self.reply_tokenizer.eos_token_id]
                samples.append(FakeSample(index, ids, "stop" if index else "length"))
            outputs.append(types.SimpleNamespace(outputs=samples))
        return outputs


class EngineFactory:
    """``engine_factory`` for the generator: builds fake engines and remembers them."""

    def __init__(self, tokenizer, reject=()):
        self.tokenizer, self.reject, self.engines = tokenizer, reject, []

    def __call__(self, **kwargs):
        self.engines.append(FakeEngine(self.tokenizer, self.reject, **kwargs))
        return self.engines[-1]


@pytest.fixture(autouse=True)
def restore_vllm_env(monkeypatch):
    """Starting a colocated engine sets VLLM_ENABLE_V1_MULTIPROCESSING=0 for good; undo it after each test."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")


def make_trainer(tmp_path, model, tokenizer=None, **kwargs):
    args = IterativeSFTConfig(
        output_dir=str(tmp_path / "out"), report_to="none", learning_rate=1e-2, save_strategy="no"
    )
    return IterativeSFTTrainer(model, args=args, processing_class=tokenizer, **kwargs)


def set_up(trainer, **options):
    factory = EngineFactory(trainer.processing_class, options.pop("reject", ()))
    generator = VLLMGenerator(VLLMOptions(**options), engine_factory=factory, sampling_params_factory=dict)
    generator.setup(RunContext(trainer=trainer, tokenizer=trainer.processing_class, seed=7))
    return generator, factory


def current_weights(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


# --- registration and options -------------------------------------------------------------------------------


def test_entry_point_registers_the_vllm_generator(monkeypatch):
    from iterframe.plugins import get_component_class, list_components, reset_plugin_manager

    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "iterframe-vllm")
    reset_plugin_manager()
    try:
        assert get_component_class("generator", "vllm") is VLLMGenerator
        (entry,) = [entry for entry in list_components("generator") if entry["name"] == "vllm"]
        assert entry["distribution"] == "iterframe-vllm"
        options = {option["name"] for option in entry["options"]}
        assert {"tensor_parallel_size", "gpu_memory_utilization", "dtype", "max_model_len", "colocate"} <= options
        assert {
            "enable_prefix_caching",
            "seed",
            "max_new_tokens",
            "temperature",
            "top_p",
            "top_k",
            "stop",
        } <= options
    finally:
        reset_plugin_manager()


def test_options_are_converted_from_command_line_strings():
    options = build_options(
        VLLMOptions,
        {
            "tensor-parallel-size": "2",
            "gpu_memory_utilization": "0.5",
            "max_model_len": "none",
            "enable_prefix_caching": "false",
            "stop": '["\\n\\n", "###"]',
            "colocate": "false",
            "device": "cuda:1,cuda:2",
        },
        "generator 'vllm'",
    )
    assert options.tensor_parallel_size == 2 and options.gpu_memory_utilization == 0.5
    assert options.max_model_len is None and options.enable_prefix_caching is False
    assert options.stop == ["\n\n", "###"]
    assert options.colocate is False and options.device == "cuda:1,cuda:2"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization must be in (0, 1]"),
        ({"dtype": "int8"}, "dtype must be one of auto"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size must be >= 1"),
        ({"device": "cuda:1"}, "set colocate=false to use `device`"),
        ({"colocate": False}, "colocate=false needs `device`"),
        ({"colocate": False, "device": "cuda:1", "tensor_parallel_size": 2}, "one GPU per tensor-parallel rank"),
        ({"colocate": False, "device": "gpu1"}, "'gpu1' is not a GPU"),
        ({"colocate": False, "device": "cuda:1,cuda:1", "tensor_parallel_size": 2}, "names a GPU twice"),
        ({"temperature": 0}, "use do_sample=false for greedy"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"max_model_len": 0}, "max_model_len must be >= 1"),
    ],
)
def test_bad_options_are_rejected_with_the_fix(values, message):
    with pytest.raises(ComponentOptionError) as caught:
        build_options(VLLMOptions, values, "generator 'vllm'")
    assert message in str(caught.value)


def test_missing_vllm_raises_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(ImportError, match=r"pip install 'iterframe-vllm\[vllm\]'"):
        require_vllm()


def test_choosing_vllm_without_it_installed_fails_when_the_run_is_configured(monkeypatch):
    from iterframe.plugins import create_component, register, reset_plugin_manager

    monkeypatch.setitem(sys.modules, "vllm", None)
    reset_plugin_manager()
    try:
        register(plugin, name="iterframe-vllm")
        with pytest.raises(ValueError, match=r"pip install 'iterframe-vllm\[vllm\]'"):
            create_component("generator", "vllm", {"max_new_tokens": "8"})
    finally:
        reset_plugin_manager()


# --- engine and sampling arguments --------------------------------------------------------------------------


def test_colocated_engine_runs_in_process_with_the_worker_extension():
    options = VLLMOptions(tensor_parallel_size=2, gpu_memory_utilization=0.4, dtype="bfloat16", max_model_len=256)
    kwargs = engine_kwargs(options, model_dir="/m", tokenizer_dir="/t", load_format="auto", seed=3)
    assert kwargs == {
        "model": "/m",
        "tokenizer": "/t",
        "load_format": "auto",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.4,
        "dtype": "bfloat16",
        "enable_prefix_caching": True,
        "enforce_eager": False,
        "seed": 3,
        "worker_extension_cls": WORKER_EXTENSION,
        "max_model_len": 256,
        "distributed_executor_backend": "external_launcher",
    }


def test_separate_engine_uses_vllm_default_executor():
    options = VLLMOptions(colocate=False, device="cuda:1")
    kwargs = engine_kwargs(options, model_dir="/m", tokenizer_dir="/t", load_format="dummy", seed=0)
    assert "distributed_executor_backend" not in kwargs and "max_model_len" not in kwargs
    assert kwargs["load_format"] == "dummy"


def test_worker_extension_is_importable_by_its_qualified_name():
    module_name, _, class_name = WORKER_EXTENSION.rpartition(".")
    assert getattr(__import__(module_name, fromlist=[class_name]), class_name) is WeightLoaderExtension


def test_sampling_params_ask_for_n_samples_per_prompt():
    options = VLLMOptions(max_new_tokens=12, temperature=0.7, top_p=0.9, top_k=0, stop=["###"])
    assert sampling_params_kwargs(options, 4, [2]) == {
        "n": 4,
        "max_tokens": 12,
        "stop": ["###"],
        "stop_token_ids": [2],
        "skip_special_tokens": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": -1,
    }


def test_greedy_sampling_params_use_temperature_zero():
    kwargs = sampling_params_kwargs(VLLMOptions(do_sample=False, top_k=5), 1, [])
    assert kwargs["temperature"] == 0.0 and "top_k" not in kwargs
    assert kwargs["stop"] is None and kwargs["stop_token_ids"] is None


def test_engine_seed_is_shared_within_a_tensor_parallel_group():
    options = VLLMOptions(tensor_parallel_size=2)
    seeds = [engine_seed(options, 10, ProcessLayout(rank, 4, rank)) for rank in range(4)]
    assert seeds == [10, 10, 11, 11]
    assert engine_seed(VLLMOptions(seed=5, colocate=False, device="0"), 10, ProcessLayout(3, 4, 3)) == 5


# --- placement ----------------------------------------------------------------------------------------------


def test_colocated_tensor_parallel_groups_are_consecutive_ranks():
    options = VLLMOptions(tensor_parallel_size=2)
    assert group_ranks(ProcessLayout(3, 4, 3), options) == [2, 3]
    assert group_ranks(ProcessLayout(0, 4, 0), VLLMOptions()) == [0]
    assert group_ranks(ProcessLayout(2, 3, 2), VLLMOptions(colocate=False, device="cuda:3")) == [0, 1, 2]


def test_colocated_tensor_parallel_needs_a_multiple_of_its_size_in_processes():
    with pytest.raises(ValueError, match="launch a multiple of 2 processes"):
        group_ranks(ProcessLayout(0, 1, 0), VLLMOptions(tensor_parallel_size=2))


def test_split_by_counts_cuts_consecutive_parts():
    assert split_by_counts(list("abcdef"), [2, 0, 4]) == [["a", "b"], [], ["c", "d", "e", "f"]]
    with pytest.raises(ValueError, match="add up to 5"):
        split_by_counts(list("abc"), [2, 3])


def test_colocated_launch_sets_rank_variables_only_while_the_engine_starts(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with launch_environment(VLLMOptions(), ProcessLayout(0, 1, 0)):
        inside = {name: os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")}
        assert os.environ["MASTER_PORT"].isdigit()
    assert inside == {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    assert not any(name in os.environ for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"))
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the in-process engine keeps needing it


def test_separate_engine_sees_only_its_gpus_while_it_starts(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    options = VLLMOptions(colocate=False, device="cuda:1,cuda:2", tensor_parallel_size=2)
    with launch_environment(options, ProcessLayout()):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,6"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5,6"
    with pytest.raises(ValueError, match="shows 3 GPU"):
        with launch_environment(VLLMOptions(colocate=False, device="cuda:3"), ProcessLayout()):
            pass


# --- setup: building the engine and the first sync ----------------------------------------------------------


def test_engine_starts_from_the_model_folder_with_current_weights(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    generator, factory = set_up(trainer)
    (engine,) = factory.engines
    assert engine.kwargs["model"] == tiny_llama_path and engine.kwargs["load_format"] == "auto"
    assert os.path.isfile(os.path.join(engine.kwargs["tokenizer"], "tokenizer.json"))
    assert engine.kwargs["worker_extension_cls"] == WORKER_EXTENSION
    assert engine.kwargs["seed"] == 7
    assert engine.env_at_start["RANK"] == "0" and engine.env_at_start["WORLD_SIZE"] == "1"
    expected = current_weights(trainer.model)
    assert set(engine.model.loaded) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(engine.model.loaded[name], tensor), name
    assert set(engine.rpc_methods) == {LOAD_WEIGHTS}
    assert engine.prefix_cache_resets == 1
    generator.close()


def test_model_not_on_disk_starts_from_its_config_and_gets_its_weights_pushed(tmp_path):
    model, tokenizer = build_tiny_causal_lm()
    trainer = make_trainer(tmp_path, model, tokenizer)
    generator, factory = set_up(trainer)
    (engine,) = factory.engines
    assert engine.kwargs["load_format"] == "dummy"
    model_dir = engine.kwargs["model"]
    assert os.path.isfile(os.path.join(model_dir, "config.json"))
    assert not any(name.endswith(".safetensors") for name in os.listdir(model_dir))
    assert set(engine.model.loaded) == {name for name, _ in model.named_parameters()}
    generator.close()
    assert engine.shut_down and not os.path.exists(model_dir)


def test_setup_without_a_trainer_says_what_is_missing():
    generator = VLLMGenerator(engine_factory=lambda **kwargs: None)
    with pytest.raises(ValueError, match="needs the run's trainer and tokenizer"):
        generator.setup(RunContext(trainer=None, tokenizer=None))


def test_generate_before_setup_is_an_error():
    with pytest.raises(RuntimeError, match="call setup"):
        VLLMGenerator(engine_factory=lambda **kwargs: None).generate(["hi"], 1)


# --- generation ---------------------------------------------------------------------------------------------


def test_generate_returns_n_completions_per_prompt_in_prompt_order(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    trainer.processing_class.chat_template = CHAT_TEMPLATE
    generator, factory = set_up(trainer, max_new_tokens=9, temperature=0.5)
    prompts = ["2 + 2 =", [{"role": "user", "content": "hello"}], "the quick"]
    completions = generator.generate(prompts, 3)

    ((sent, (params, *_)),) = factory.engines[0].generate_calls
    tokenizer = trainer.processing_class
    assert sent == [{"prompt_token_ids": encode_prompt(tokenizer, prompt)} for prompt in prompts]
    assert "assistant:" in tokenizer.decode(sent[1]["prompt_token_ids"])  # chat prompts go through the template
    assert params["n"] == 3 and params["max_tokens"] == 9 and params["temperature"] == 0.5
    assert params["stop_token_ids"] == [tokenizer.eos_token_id]
    assert len(completions) == 3
    for per_prompt in completions:
        assert [completion.text for completion in per_prompt] == [" #0", " #1", " #2"]
        assert [completion.finish_reason for completion in per_prompt] == ["length", "stop", "stop"]
        expected_tokens = [
            len(tokenizer(f" #{j}", add_special_tokens=False)["input_ids"]) + (j > 0) for j in range(3)
        ]
        assert [completion.num_tokens for completion in per_prompt] == expected_tokens
        assert [len(completion.token_ids) for completion in per_prompt] == expected_tokens
    assert [per_prompt[0].prompt_token_ids for per_prompt in completions] == [
        ids["prompt_token_ids"] for ids in sent
    ]
    assert completions[0][0].tokenizer_hash == tokenizer_fingerprint(tokenizer)
    generator.close()


def test_generation_stops_at_the_generation_configs_eos_ids_too(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    eos = trainer.processing_class.eos_token_id
    trainer.model.generation_config.eos_token_id = [7, eos]  # e.g. an end-of-turn token only the config names
    generator, factory = set_up(trainer, max_new_tokens=4)
    generator.generate(["2 + 2 ="], 1)
    ((_, (params,)),) = factory.engines[0].generate_calls
    assert params["stop_token_ids"] == [7, eos]
    generator.close()


def test_completions_are_cut_before_a_stop_string(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    generator, factory = set_up(trainer, stop=["#1"])
    completions = generator.generate(["a"], 2)
    assert [completion.text for completion in completions[0]] == [" #0", " "]
    for completion in completions[0]:  # the ids that spell the text, not the stop string's
        assert trainer.processing_class.decode(completion.token_ids, skip_special_tokens=True) == completion.text
    assert factory.engines[0].generate_calls[0][1][0]["stop"] == ["#1"]
    generator.close()


def request_seeds(engine, call):
    return [params["seed"] for params in engine.generate_calls[call][1]]


def test_a_resumed_generator_seeds_its_requests_where_the_interrupted_one_stopped(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    interrupted, factory = set_up(trainer, temperature=0.7)
    states = []
    for _ in range(3):
        interrupted.generate(["a", "b", "a"], 2)
        states.append(interrupted.state_dict())  # what each iteration's checkpoint keeps
    interrupted.close()
    seeds = [request_seeds(factory.engines[0], call) for call in range(3)]
    assert len({seed for call_seeds in seeds for seed in call_seeds}) == 9  # each prompt of each call its own
    resumed, resumed_factory = set_up(trainer, temperature=0.7)
    resumed.load_state_dict(states[1])  # resumed from the checkpoint after two calls
    resumed.generate(["a", "b", "a"], 2)
    resumed.close()
    assert states == [{"calls": 1}, {"calls": 2}, {"calls": 3}]
    assert request_seeds(resumed_factory.engines[0], 0) == seeds[2]


def test_greedy_and_unseeded_requests_use_one_sampling_params(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    for options in ({"do_sample": False}, {"seed_requests": False}):
        generator, factory = set_up(trainer, **options)
        generator.generate(["a", "b"], 1)
        ((_, params),) = factory.engines[0].generate_calls
        assert params[0] is params[1] and "seed" not in params[0]
        generator.close()


def test_greedy_generator_refuses_several_samples_per_prompt(tmp_path, tiny_llama_path):
    generator, factory = set_up(make_trainer(tmp_path, tiny_llama_path), do_sample=False)
    with pytest.raises(ValueError, match="do_sample=false"):
        generator.generate(["a"], 2)
    generator.generate(["a"], 1)
    assert factory.engines[0].generate_calls[0][1][0]["temperature"] == 0.0
    generator.close()


class ScriptedGroup(GenerationGroup):
    """A two-process group seen from rank 1, whose partner sends ``partner_prompts``."""

    def __init__(self, partner_prompts):
        super().__init__([0, 1], 1)
        self.partner_prompts = partner_prompts

    def gather(self, value):
        return [self.partner_prompts, value]

    def broadcast_from_first(self, value):
        raise AssertionError("a colocated group generates on every member; nothing is broadcast")


def test_a_tensor_parallel_group_pools_prompts_and_each_member_keeps_its_own(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    generator, factory = set_up(trainer)
    tokenizer = trainer.processing_class
    partner = [encode_prompt(tokenizer, "partner one"), encode_prompt(tokenizer, "partner two")]
    generator.handle.group = ScriptedGroup(partner)
    mine = generator.generate(["mine"], 2)
    ((sent, _),) = factory.engines[0].generate_calls
    assert [prompt["prompt_token_ids"] for prompt in sent] == partner + [encode_prompt(tokenizer, "mine")]
    assert len(mine) == 1 and [completion.text for completion in mine[0]] == [" #0", " #1"]
    generator.close()


# --- weight sync --------------------------------------------------------------------------------------------


def test_update_weights_pushes_every_parameter_of_the_trained_model(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    generator, factory = set_up(trainer)
    engine = factory.engines[0]
    before = current_weights(trainer.model)
    trainer.step(texts=["2 + 2 = 4", "the quick brown fox"])
    after = current_weights(trainer.model)
    assert any(not torch.equal(before[name], after[name]) for name in after), "the step must change weights"

    generator.update_weights(trainer.model)
    assert set(engine.model.loaded) == set(after)
    for name, tensor in after.items():
        assert torch.equal(engine.model.loaded[name], tensor), name
    assert engine.prefix_cache_resets == 2  # once after the first sync, once now
    generator.close()


def test_peft_adapters_are_merged_into_the_pushed_weights(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, peft_config=build_lora_config(r=4, alpha=8))
    with torch.no_grad():  # LoRA starts as a no-op (B = 0); make it change the weights
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    own_weights = current_weights(trainer.model)
    generator, factory = set_up(trainer)

    expected = current_weights(merged_copy(trainer.model))
    pushed = factory.engines[0].model.loaded
    assert set(pushed) == set(expected)
    assert not any("lora_" in name or "base_layer" in name for name in pushed)
    for name, tensor in expected.items():
        torch.testing.assert_close(pushed[name], tensor, rtol=0, atol=1e-6, msg=name)
    base_name = next(name for name in own_weights if name.endswith("q_proj.base_layer.weight"))
    merged_name = base_name.removeprefix("base_model.model.").replace(".base_layer", "")
    assert not torch.allclose(pushed[merged_name], own_weights[base_name]), "the adapter must be merged in"
    for name, tensor in current_weights(trainer.model).items():  # the trained model is left bit for bit as it was
        assert torch.equal(tensor, own_weights[name]), name
    assert not any(getattr(module, "merged", False) for module in trainer.model.modules())
    generator.close()


def test_a_rejected_weight_is_reported_with_its_name(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    with pytest.raises(RuntimeError, match=r"failed to load weight\(s\) 'model.norm.weight'"):
        set_up(trainer, reject={"model.norm.weight"})


def test_a_separate_engine_receives_serialized_chunks_of_every_weight(tmp_path):
    model, _ = build_tiny_causal_lm()
    engine = FakeEngine(reply_tokenizer=None)
    expected = current_weights(model)
    largest = max(tensor.numel() * tensor.element_size() for tensor in expected.values())
    count = push_weights(engine, full_weights(model), in_process=False, bucket_bytes=largest)
    assert count == len(expected)
    assert set(engine.rpc_methods) == {LOAD_SERIALIZED} and 1 < len(engine.rpc_methods) < len(expected)
    assert set(engine.model.loaded) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(engine.model.loaded[name], tensor), name
    assert engine.prefix_cache_resets == 1


def test_a_separate_engine_starts_on_its_device_and_serves_the_main_process(
    tmp_path, tiny_llama_path, monkeypatch
):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    trainer = make_trainer(tmp_path, tiny_llama_path)
    generator, factory = set_up(trainer, colocate=False, device="cuda:1")
    (engine,) = factory.engines
    assert engine.env_at_start["CUDA_VISIBLE_DEVICES"] == "1" and "CUDA_VISIBLE_DEVICES" not in os.environ
    assert "distributed_executor_backend" not in engine.kwargs
    assert set(engine.rpc_methods) == {LOAD_SERIALIZED}
    assert set(engine.model.loaded) == set(current_weights(trainer.model))
    assert [completion.text for completion in generator.generate(["a"], 1)[0]] == [" #0"]
    generator.close()


def test_weights_are_read_through_a_compiled_wrapper_under_their_own_names():
    model, _ = build_tiny_causal_lm()
    names = [name for name, _ in full_weights(torch.compile(model))]
    assert names == [name for name, _ in model.named_parameters()]


def test_zero3_partitioned_parameters_are_gathered_before_they_are_read(monkeypatch):
    gathered_groups = []

    class GatheredParameters:
        def __init__(self, params):
            self.params = list(params)

        def __enter__(self):
            gathered_groups.append(self.params)

        def __exit__(self, *exc):
            return False

    fake_deepspeed = types.SimpleNamespace(zero=types.SimpleNamespace(GatheredParameters=GatheredParameters))
    monkeypatch.setitem(sys.modules, "deepspeed", fake_deepspeed)
    model, _ = build_tiny_causal_lm()
    partitioned = model.model.norm.weight
    partitioned.ds_id = 0  # the attribute DeepSpeed ZeRO-3 gives the parameters it partitions
    names = [name for name, _ in full_weights(model)]
    assert gathered_groups == [[partitioned]]
    assert "model.norm.weight" in names


# --- one engine for a generator and its greedy eval copy ----------------------------------------------------


def test_a_generator_and_its_greedy_eval_copy_share_one_engine(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    context = RunContext(trainer=trainer, tokenizer=trainer.processing_class)
    factory = EngineFactory(trainer.processing_class)
    sampling = VLLMGenerator(VLLMOptions(temperature=0.8), engine_factory=factory, sampling_params_factory=dict)
    greedy = sampling.eval_copy()
    assert greedy is not sampling and greedy.engine_factory is factory
    assert greedy.options == VLLMOptions(temperature=0.8, do_sample=False) and sampling.options.do_sample
    sampling.setup(context)
    greedy.setup(context)
    (engine,) = factory.engines
    workdir = os.path.dirname(engine.kwargs["tokenizer"])
    greedy.generate(["a"], 1)
    assert engine.generate_calls[-1][1][0]["temperature"] == 0.0
    sampling.close()
    assert not engine.shut_down and os.path.isdir(workdir)
    greedy.close()
    assert engine.shut_down and not os.path.exists(workdir)


def test_closing_an_in_process_engine_drops_vllm_parallel_groups(tmp_path, tiny_llama_path, monkeypatch):
    destroyed = []
    parallel_state = types.SimpleNamespace(destroy_model_parallel=lambda: destroyed.append(True))
    monkeypatch.setitem(sys.modules, "vllm.distributed.parallel_state", parallel_state)
    trainer = make_trainer(tmp_path, tiny_llama_path)
    colocated, _ = set_up(trainer)
    separate, _ = set_up(trainer, colocate=False, device="cuda:0")
    separate.close()
    assert destroyed == []  # a separate engine's groups live in its own processes
    colocated.close()
    assert destroyed == [True]  # so that the next engine in this process can create them again


def test_different_engine_options_get_different_engines(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    first, first_factory = set_up(trainer, gpu_memory_utilization=0.2)
    second, second_factory = set_up(trainer, gpu_memory_utilization=0.3)
    assert len(first_factory.engines) == 1 and len(second_factory.engines) == 1
    first.close()
    second.close()


# --- on a GPU with vLLM -------------------------------------------------------------------------------------


@pytest.fixture
def vllm_gpu():
    """Skips unless vLLM is installed and a CUDA GPU is present."""
    pytest.importorskip(
        "vllm", reason="vLLM is not installed (pip install 'iterframe-vllm[vllm]' on a GPU machine)"
    )
    if not torch.cuda.is_available():
        pytest.skip("vLLM tests need a CUDA GPU; none is available")


def gpu_trainer(tmp_path):
    """A small Llama whose head size vLLM's attention kernels support, trained on the GPU in float32."""
    path = str(tmp_path / "gpu-llama")
    build_tiny_causal_lm(path, hidden_size=256, num_layers=2, num_heads=4)
    return make_trainer(tmp_path, path)


def generated_tokens_per_second(generator, prompts, num_samples):
    start = time.perf_counter()
    completions = generator.generate(prompts, num_samples)
    seconds = time.perf_counter() - start
    return sum(completion.num_tokens for per_prompt in completions for completion in per_prompt) / seconds


@pytest.mark.slow
def test_vllm_generates_faster_than_hf(vllm_gpu, tmp_path):
    from iterframe.builtin.generators import HFGenerator

    trainer = gpu_trainer(tmp_path)
    context = RunContext(trainer=trainer, tokenizer=trainer.processing_class)
    prompts = [f"{index} + {index} =" for index in range(64)]
    hf = HFGenerator(HFGenerator.Options(max_new_tokens=64, batch_size=64))
    hf.setup(context)
    vllm = VLLMGenerator(VLLMOptions(max_new_tokens=64, dtype="float32", gpu_memory_utilization=0.3))
    vllm.setup(context)
    try:
        vllm.generate(prompts[:4], 2)  # warm-up
        hf_rate = generated_tokens_per_second(hf, prompts, 8)
        vllm_rate = generated_tokens_per_second(vllm, prompts, 8)
    finally:
        vllm.close()
    print(f"\ngenerated tokens/s: vllm {vllm_rate:.0f}, hf {hf_rate:.0f} ({vllm_rate / hf_rate:.1f}x)")
    assert vllm_rate > hf_rate


@pytest.mark.slow
def test_update_weights_makes_the_engine_generate_like_the_trained_model(vllm_gpu, tmp_path):
    from iterframe.builtin.generators import HFGenerator

    trainer = gpu_trainer(tmp_path)
    context = RunContext(trainer=trainer, tokenizer=trainer.processing_class)
    hf = HFGenerator(HFGenerator.Options(max_new_tokens=12, do_sample=False))
    hf.setup(context)
    vllm = VLLMGenerator(VLLMOptions(max_new_tokens=12, do_sample=False, dtype="float32"))
    vllm.setup(context)
    prompts = ["The quick brown", "Question: what is 12 + 7?"]
    try:
        before = [per_prompt[0].text for per_prompt in vllm.generate(prompts, 1)]
        for _ in range(30):  # memorise a continuation, so the greedy output is far from any tie
            trainer.step(texts=["The quick brown fox jumps over the lazy dog.", "Question: what is 12 + 7? 19"])
        stale = [per_prompt[0].text for per_prompt in vllm.generate(prompts, 1)]
        vllm.update_weights(trainer.model)
        after = [per_prompt[0].text for per_prompt in vllm.generate(prompts, 1)]
    finally:
        vllm.close()
    expected = [per_prompt[0].text for per_prompt in hf.generate(prompts, 1)]
    assert stale == before, "without a sync the engine keeps its weights"
    assert after == expected and after != before
