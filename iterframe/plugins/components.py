"""The five component interfaces of the iterative loop.

A run is composed of one *generator*, one *reward*, a chain of *filters*, one *sample tokenizer* (component kind
``tokenizer``: kept samples -> training inputs) and any number of *loggers*. Each component is a class with a
``name``, a one-line ``description`` and an ``Options`` dataclass whose fields (with ``metadata={"help": ...}``)
are the options settable from the CLI and YAML. Plugins hand these classes to the host through the ``register_*``
hooks (see :mod:`iterframe.plugins.hookspecs`).

Lifecycle of every component: ``Component(options)`` -> ``setup(context)`` once per run -> kind-specific calls
-> ``close()``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Union

if TYPE_CHECKING:  # pragma: no cover
    from iterframe.engine.trainer import IterativeSFTTrainer

__all__ = [
    "COMPONENT_KINDS",
    "KIND_LABELS",
    "Component",
    "Completion",
    "Filter",
    "Generator",
    "Logger",
    "PooledReward",
    "PooledRewardOptions",
    "Prompt",
    "Reward",
    "RunContext",
    "Sample",
    "SampleTokenizer",
    "kind_label",
]

#: A prompt is either plain text or a list of chat messages (``{"role": ..., "content": ...}``).
Prompt = Union[str, list[dict[str, str]]]

#: The kinds of component, in the order the loop uses them.
COMPONENT_KINDS = ("generator", "reward", "filter", "tokenizer", "logger")
#: How messages and docs name a kind where its id alone is ambiguous: the ``tokenizer`` kind turns samples into
#: training inputs and is not the model's (Hugging Face) tokenizer.
KIND_LABELS = {"tokenizer": "sample tokenizer"}


def kind_label(kind: str) -> str:
    """The readable name of a component kind: ``"sample tokenizer"`` for ``tokenizer``, else the kind itself."""
    return KIND_LABELS.get(kind, kind)


@dataclasses.dataclass
class Completion:
    """One generated completion of a prompt.

    Args:
        text: the completion text, without the prompt.
        num_tokens: number of generated tokens, when the generator knows it.
        finish_reason: ``"stop"`` (eos or a stop string) or ``"length"`` (hit ``max_new_tokens``), when known.
        token_ids: the ids the generator sampled, in the vocabulary of the run's tokenizer, that decode to exactly
            ``text``: up to and including the eos id that ended it; for a text cut before a stop string, the ids
            before the stop string (``None`` when one token spells both sides of the cut). The built-in sample
            tokenizers train on exactly these ids.
        prompt_token_ids: the ids of the prompt as the generator rendered and encoded it (chat template, bos).
        tokenizer_hash: which tokenizer (and chat template) the ids belong to:
            ``iterframe.generation.token_ids.tokenizer_fingerprint(tokenizer)``; stored with them in
            ``samples.parquet``.
    """

    text: str
    num_tokens: Optional[int] = None
    finish_reason: Optional[str] = None
    token_ids: Optional[list[int]] = None
    prompt_token_ids: Optional[list[int]] = None
    tokenizer_hash: Optional[str] = None


@dataclasses.dataclass
class Sample:
    """A (prompt, completion) pair as it flows through one iteration.

    Args:
        iteration: 0-based iteration that generated the sample.
        prompt_id: index of the prompt in the run's prompt set.
        prompt: the prompt, text or chat messages.
        completion: the generated completion text.
        reference: the prompt's reference answer, if the dataset has one.
        reward: the reward's score; ``nan`` until scored (and for samples whose score was not finite).
        kept: whether the filter chain kept the sample for training.
        dropped_by: name of the filter that dropped it (``None`` while kept or not yet filtered).
        info: free-form metadata (generator name, token counts, finish reason, ...).
        drop_reason: the values that decided the drop, as the filter explained them (e.g.
            ``{"reward": 0.2, "min_reward": 0.5}``); ``None`` while kept or when the dropper gave no reason.
        prompt_token_ids: the prompt's ids as the generator encoded them (``Completion.prompt_token_ids``).
        completion_token_ids: the sampled ids of ``completion`` (``Completion.token_ids``). A plugin that edits
            ``completion`` should set this to ``None``; the built-in tokenizers check that the ids still spell the
            completion and otherwise encode its text.
    """

    iteration: int
    prompt_id: int
    prompt: Prompt
    completion: str
    reference: Any = None
    reward: float = math.nan
    kept: bool = False
    dropped_by: Optional[str] = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    drop_reason: Optional[dict[str, Any]] = None
    prompt_token_ids: Optional[list[int]] = None
    completion_token_ids: Optional[list[int]] = None


@dataclasses.dataclass
class RunContext:
    """What a component may use from the run it belongs to.

    Args:
        trainer: the :class:`~iterframe.IterativeSFTTrainer` being trained (``trainer.model`` is the live model).
        tokenizer: the Hugging Face tokenizer (``trainer.processing_class``).
        output_dir: the run's output directory.
        seed: the run's seed.
        config: the resolved run configuration, as a plain dict.
        components: the components of the run by kind (``generator``, ``reward``, ``filter``, ``tokenizer``,
            ``logger``), each a list in the order the loop uses them (the generator's eval copy, when it is
            another object, follows the generator).
    """

    trainer: Optional[IterativeSFTTrainer]
    tokenizer: Any
    output_dir: Optional[str] = None
    seed: int = 0
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    components: dict[str, list[Component]] = dataclasses.field(default_factory=dict)

    @property
    def model(self):
        """The live (unwrapped) model being trained."""
        return None if self.trainer is None else self.trainer.model

    def plugin_config(self, name: str) -> Any:
        """The run's settings of the plugin ``name`` (the run config's ``plugins: {NAME: {...}}``): an instance of
        the plugin's ``Config`` dataclass (its defaults where the run sets nothing), or a dict for a plugin that
        declares no ``Config`` (empty when the run sets nothing).

        Raises:
            ValueError: no plugin of that name is loaded, or the settings do not fit its ``Config``.
        """
        from iterframe.plugins.settings import plugin_config

        return plugin_config(self.config, name)

    def uses(self, component: Union[str, type], kind: Optional[str] = None) -> bool:
        """Whether the run uses ``component``: a registry name (``"keyword"``) or a class (subclasses count),
        among the components of ``kind`` (default: every kind)."""
        for each_kind, used in self.components.items():
            if kind is not None and each_kind != kind:
                continue
            for item in used:
                if item.name == component if isinstance(component, str) else isinstance(item, component):
                    return True
        return False


class Component(ABC):
    """Base of every component: a name, a description, typed options and a setup/close lifecycle."""

    #: Registry name, e.g. ``"hf"`` or ``"top-fraction"``.
    name: ClassVar[str] = ""
    #: One line shown by ``iterframe plugins``.
    description: ClassVar[str] = ""

    @dataclasses.dataclass
    class Options:
        """No options."""

    def __init__(self, options: Optional[Any] = None):
        self.options = options if options is not None else self.Options()

    def setup(self, context: RunContext) -> None:
        """Called once before the first iteration."""

    def close(self) -> None:
        """Called once when the run ends (also after an error)."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue where this component stopped (JSON-able): saved with every loop
        checkpoint, from the main process. The default: nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of the run being resumed; called after :meth:`setup`."""

    def with_options(self, options: Any) -> Component:
        """A shallow copy of this component with ``options`` in place of its own.

        Made before ``setup()``: for every use of a component registered as a configured instance, and for a
        generator's :meth:`Generator.eval_copy`. Work that depends on the options belongs in ``setup()``.
        """
        copied = copy.copy(self)
        copied.options = options
        return copied


#: Generator classes already warned that their eval samples (:meth:`Generator.eval_copy`).
_EVAL_SAMPLES_WARNED: set[type] = set()


class Generator(Component):
    """Turns prompts into completions with the current model."""

    @abstractmethod
    def generate(self, prompts: list[Prompt], num_samples: int) -> list[list[Completion]]:
        """Return ``num_samples`` completions for every prompt, in prompt order."""

    @property
    def prompts_per_call(self) -> Optional[int]:
        """How many prompts the loop hands to one :meth:`generate` call (``None``, the default: all of them at
        once). The ``hf`` generator answers its ``batch_size`` option."""
        return None

    def eval_copy(self) -> Generator:
        """The generator that scores the eval prompts: one completion per prompt, deterministic where the
        generator can be. Called once, before ``setup()``. The default: when the generator's ``Options`` have a
        ``do_sample`` field, a copy with ``do_sample=False`` (greedy decoding, as for ``hf``); else the generator
        itself, with a warning (once per class) that the eval samples."""
        options = getattr(self, "options", None)
        if dataclasses.is_dataclass(options) and "do_sample" in {
            field.name for field in dataclasses.fields(options)
        }:
            return self.with_options(dataclasses.replace(options, do_sample=False))
        if type(self) not in _EVAL_SAMPLES_WARNED:
            _EVAL_SAMPLES_WARNED.add(type(self))
            warnings.warn(
                f"Generator {self.name or type(self).__name__!r} has no eval_copy() and no do_sample option: the "
                "eval uses it as it is, so if it samples, the eval samples too and eval/reward varies from eval "
                "to eval. Override eval_copy() to return a deterministic copy, or pass eval_generator=.",
                stacklevel=2,
            )
        return self

    def update_weights(self, model) -> None:
        """Called after each training step; generators with their own copy of the weights sync them here."""


class Reward(Component):
    """Scores samples; higher is better."""

    #: Whether it scores against each prompt's reference answer: a run then checks, before loading the model,
    #: that the dataset gives every prompt one.
    needs_reference: ClassVar[bool] = False

    @abstractmethod
    def score(self, samples: list[Sample]) -> list[Optional[float]]:
        """Return one entry per sample (``prompt``, ``completion`` and ``reference`` are set): a float, or, for a
        sample that could not be scored, ``None`` (or NaN) or the exception that explains why (a ``TimeoutError``
        is a timeout). Such a sample is failed: never trained, and left out of the reward statistics."""


@dataclasses.dataclass(kw_only=True)
class PooledRewardOptions:
    """The options every :class:`PooledReward` has (a pooled reward's ``Options`` subclass this)."""

    timeout_s: float = dataclasses.field(
        default=10.0,
        metadata={
            "help": "Seconds one sample's scoring may take; past it the sample fails (failed-reward:timeout) and "
            "its worker process is replaced."
        },
    )
    workers: Optional[int] = dataclasses.field(
        default=None,
        metadata={
            "help": "Worker processes scoring samples (default: min(4, CPUs)); 0 scores in the run's own process, "
            "without the timeout or limits."
        },
    )

    cpu_limit_s: Optional[float] = dataclasses.field(
        default=None,
        metadata={
            "help": "CPU seconds a worker (and each process it starts) may use per sample scored; past it the "
            "worker is killed and the sample fails. Default: no limit (timeout_s bounds the wall-clock time)."
        },
    )
    memory_limit_mb: Optional[int] = dataclasses.field(
        default=None,
        metadata={
            "help": "Address space of a worker and each process it starts, MiB (RLIMIT_AS): an allocation past it "
            "fails. Default: no limit (libraries such as torch reserve much address space they never use)."
        },
    )
    open_files_limit: Optional[int] = dataclasses.field(
        default=1024,
        metadata={"help": "Open file descriptors of a worker and each process it starts (RLIMIT_NOFILE)."},
    )

    def __post_init__(self):
        for name in ("cpu_limit_s", "memory_limit_mb", "open_files_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"{name} must be a number > 0, or None for no limit; got {value!r}.")
        if isinstance(self.timeout_s, bool) or not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be a number of seconds > 0, got {self.timeout_s!r}.")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: score in the run's process), got {self.workers!r}.")


class PooledReward(Reward):
    """A reward the loop runs in worker processes, one batch per ``score`` call, each within ``timeout_s`` per
    sample.

    After ``setup`` the reward is pickled to its workers (keep what cannot be pickled out of its state, or rebuild
    it lazily in ``score``). Each worker runs in its own session under the ``*_limit`` options and scores on its
    main thread, so ``signal.alarm`` works there. A sample whose scoring raises or runs past ``timeout_s`` fails
    alone (``failed-reward:error`` or ``failed-reward:timeout``); the rest are scored. Called directly, ``score``
    scores a whole list in the calling process.
    """

    Options = PooledRewardOptions
    #: What one ``score`` call gets: ``"sample"``, one sample; ``"prompt"``, the samples of one prompt (with
    #: ``workers=0``, every sample of the iteration at once), for a reward that compares completions.
    batching: ClassVar[str] = "sample"


class Filter(Component):
    """Selects samples to train on. Sees every scored sample of the iteration that earlier filters kept."""

    @abstractmethod
    def select(self, samples: list[Sample]) -> list[bool]:
        """Return one bool per sample: ``True`` keeps it."""

    def drop_reasons(self, samples: list[Sample], keep: list[bool]) -> list[Optional[dict[str, Any]]]:
        """Why each sample ``select`` dropped was dropped: a JSON-able dict of the values that decided (the
        sample's value and the limit it missed), or ``None``; entries of kept samples are ignored.

        Called with the samples and the mask of the ``select`` call just made, only when it dropped any.
        The default gives no reasons.
        """
        return [None] * len(samples)


class SampleTokenizer(Component):
    """Turns kept samples into ``step()`` inputs (the ``tokenizer`` component kind)."""

    @abstractmethod
    def tokenize(self, samples: list[Sample]) -> dict[str, list[list[int]]]:
        """Return ``{"input_ids": ..., "attention_mask": ..., "labels": ...}``, one list per sample."""


class Logger(Component):
    """Receives per-iteration metrics and sample tables."""

    @abstractmethod
    def log_metrics(self, metrics: dict[str, Any], iteration: int) -> None:
        """Record one iteration's metrics."""

    def log_samples(self, samples: list[Sample], iteration: int) -> None:
        """Record one iteration's samples (all of them, kept or not)."""
