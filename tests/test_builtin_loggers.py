"""Built-in loggers: console table, metrics.jsonl rows, wandb (offline) and tensorboard files."""

from __future__ import annotations

import glob
import json
import math
import os

import pytest

from iterframe.loop.artifacts import SAMPLE_COLUMNS, read_metrics
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext, Sample

SAMPLES = [
    Sample(
        iteration=1,
        prompt_id=0,
        prompt="12 + 7?",
        completion="19",
        reference="19",
        reward=1.0,
        kept=True,
        info={"sample_index": 0, "generator": "hf", "num_tokens": 2, "finish_reason": "stop", "seed": 5},
    ),
    Sample(
        iteration=1,
        prompt_id=0,
        prompt="12 + 7?",
        completion="20",
        reference="19",
        reward=0.0,
        dropped_by="threshold",
        drop_reason={"reward": 0.0, "min_reward": 0.5},
    ),
    Sample(
        iteration=1,
        prompt_id=1,
        prompt=[{"role": "user", "content": "hi"}],
        completion="hello there",
        reward=0.5,
        kept=True,
    ),
]


def make_logger(name, output_dir=None, **options):
    logger = create_component("logger", name, options)
    logger.setup(RunContext(trainer=None, tokenizer=None, output_dir=output_dir, config={"seed": 1}))
    return logger


def test_console_prints_one_line_per_iteration_by_default(plugin_manager, capsys):
    logger = create_component("logger", "console")
    logger.setup(RunContext(trainer=None, tokenizer=None, output_dir=None, config={"loop": {"iterations": 30}}))
    metrics = {"iteration": 2, "reward/mean": 0.41234, "keep_rate": 0.0562, "train/loss": 0.23124}
    logger.log_metrics({**metrics, "eval/reward": 0.65, "time/total_s": 1.234, "num_kept": 3}, iteration=2)
    logger.log_metrics({"iteration": 12, "reward/mean": 0.5, "train/loss": None}, iteration=12)
    assert capsys.readouterr().out.splitlines() == [
        "iteration  2/30  reward 0.412  keep 5.6%  loss 0.2312  eval 0.650  1.2s",
        "iteration 12/30  reward 0.500  keep -  loss -  eval -  -",
    ]


def test_console_line_without_planned_iterations_shows_the_iteration_alone(plugin_manager, capsys):
    make_logger("console").log_metrics({"reward/mean": 1.0, "time/total_s": 2.0}, iteration=4)
    assert capsys.readouterr().out == "iteration 4  reward 1.000  keep -  loss -  eval -  2.0s\n"


def test_console_format_must_be_line_or_table(plugin_manager):
    with pytest.raises(ValueError, match="format='wide' is not one of line, table"):
        create_component("logger", "console", {"format": "wide"})


def test_console_prints_a_table_of_the_iterations_metrics(plugin_manager, capsys):
    logger = make_logger("console", format="table")
    logger.log_metrics({"iteration": 2, "reward_mean": 0.41234567, "keep_rate": 0.25, "num_kept": 3}, iteration=2)
    assert capsys.readouterr().out == (
        "iteration 2\n"
        "  metric       value\n"
        "  -----------  -----\n"
        "  reward_mean  0.4123\n"
        "  keep_rate    0.25\n"
        "  num_kept     3\n"
    )


def test_console_shows_only_the_chosen_metrics_in_their_order(plugin_manager, capsys):
    logger = make_logger("console", format="table", metrics='["keep_rate", "reward_mean", "missing"]')
    logger.log_metrics({"iteration": 0, "reward_mean": 0.5, "keep_rate": 0.25, "loss": 1.0}, iteration=0)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[3:]] == ["keep_rate", "reward_mean"]


def test_console_prints_the_best_kept_samples_when_asked(plugin_manager, capsys):
    make_logger("console").log_samples(SAMPLES, iteration=1)
    assert capsys.readouterr().out == ""
    make_logger("console", samples=1).log_samples(SAMPLES, iteration=1)
    assert capsys.readouterr().out == "iteration 1: best kept samples\n  [1] 12 + 7? => 19\n"


def test_console_shows_an_unscored_kept_sample_last_with_a_dash(plugin_manager, capsys):
    unscored = Sample(iteration=1, prompt_id=2, prompt="p", completion="c", kept=True)
    make_logger("console", samples=3).log_samples([unscored, *SAMPLES], iteration=1)
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  [1] 12 + 7? => 19",
        '  [0.5] [{"role": "user", "content": "hi"}] => hello there',
        "  [-] p => c",
    ]


def test_jsonl_writes_one_row_per_iteration_to_output_dir(plugin_manager, tmp_path):
    logger = make_logger("jsonl", output_dir=str(tmp_path))
    logger.log_metrics({"iteration": 0, "reward_mean": 0.25}, iteration=0)
    logger.log_metrics({"iteration": 1, "reward_mean": 0.5}, iteration=1)
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"iteration": 0, "reward_mean": 0.25},
        {"iteration": 1, "reward_mean": 0.5},
    ]


def test_jsonl_rewriting_an_iteration_replaces_its_row(plugin_manager, tmp_path):
    logger = make_logger("jsonl", output_dir=str(tmp_path))
    logger.log_metrics({"iteration": 0, "reward_mean": 0.25}, iteration=0)
    logger.log_metrics({"iteration": 0, "reward_mean": 0.75}, iteration=0)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"iteration": 0, "reward_mean": 0.75}]


def test_jsonl_adds_the_iteration_when_metrics_lack_it(plugin_manager, tmp_path):
    make_logger("jsonl", output_dir=str(tmp_path)).log_metrics({"loss": 1.5}, iteration=4)
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"loss": 1.5, "iteration": 4}]


def test_jsonl_path_option_overrides_the_file(plugin_manager, tmp_path):
    target = tmp_path / "elsewhere" / "rows.jsonl"
    make_logger("jsonl", output_dir=str(tmp_path), path=str(target)).log_metrics({"iteration": 0}, iteration=0)
    assert read_metrics(target) == [{"iteration": 0}]
    assert not (tmp_path / "metrics.jsonl").exists()


def test_jsonl_without_output_dir_or_path_is_an_error(plugin_manager):
    with pytest.raises(ValueError, match="jsonl logger needs the run's output_dir or a path option"):
        make_logger("jsonl")


@pytest.fixture
def quick_offline_wandb(monkeypatch):
    """Offline W&B without the slow extras (system stats, git and package metadata, console capture)."""
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_X_DISABLE_STATS": "true",
        "WANDB_X_DISABLE_META": "true",
    }.items():
        monkeypatch.setenv(key, value)


def test_wandb_offline_logs_metrics_and_a_samples_table_per_iteration(
    plugin_manager, tmp_path, quick_offline_wandb, monkeypatch
):
    logger = make_logger("wandb", output_dir=str(tmp_path), project="iterframe-test", tags='["a", "b"]')
    logged = []
    original_log = logger.run.log

    def recording_log(data, step=None):
        logged.append((dict(data), step))
        original_log(data, step=step)

    monkeypatch.setattr(logger.run, "log", recording_log)
    try:
        assert logger.run.settings.mode == "offline"
        assert logger.run.config["seed"] == 1
        assert list(logger.run.tags) == ["a", "b"]
        logger.log_samples(SAMPLES, iteration=1)
        logger.log_metrics({"iteration": 1, "reward_mean": 0.5, "note": "text", "missing": math.nan}, iteration=1)
    finally:
        logger.close()
    assert [(sorted(data), step) for data, step in logged] == [(["samples"], 1), (["iteration", "reward_mean"], 1)]
    assert logged[1][0] == {"iteration": 1, "reward_mean": 0.5}
    (table_file,) = glob.glob(
        str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "table" / "samples_*.table.json")
    )
    with open(table_file) as handle:
        table = json.load(handle)
    assert table["columns"] == list(SAMPLE_COLUMNS)
    assert table["data"] == [
        [1, 0, 0, "12 + 7?", "19", "19", 1.0, True, None, None, "hf", 2, "stop", '{"seed": 5}'],
        [
            1,
            0,
            None,
            "12 + 7?",
            "20",
            "19",
            0.0,
            False,
            "threshold",
            '{"reward": 0.0, "min_reward": 0.5}',
            None,
            None,
            None,
            "{}",
        ],
        [
            1,
            1,
            None,
            '[{"role": "user", "content": "hi"}]',
            "hello there",
            None,
            0.5,
            True,
            None,
            None,
            None,
            None,
            None,
            "{}",
        ],
    ]


def test_wandb_rejects_an_unknown_mode(plugin_manager):
    from iterframe.plugins import ComponentOptionError

    with pytest.raises(ComponentOptionError, match="mode must be online, offline or disabled, got 'local'"):
        create_component("logger", "wandb", {"mode": "local"})


def test_tensorboard_writes_scalars_and_a_samples_text_table(plugin_manager, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = make_logger("tensorboard", output_dir=str(tmp_path))
    logger.log_metrics({"iteration": 0, "reward_mean": 0.25, "note": "text"}, iteration=0)
    logger.log_metrics({"iteration": 1, "reward_mean": 0.75}, iteration=1)
    logger.log_samples(SAMPLES, iteration=1)
    logger.close()
    events = EventAccumulator(os.path.join(tmp_path, "tensorboard"))
    events.Reload()
    assert events.Tags()["scalars"] == ["reward_mean"]
    assert [(event.step, event.value) for event in events.Scalars("reward_mean")] == [(0, 0.25), (1, 0.75)]
    (text_event,) = events.Tensors("samples/text_summary")
    text = text_event.tensor_proto.string_val[0].decode()
    assert text.splitlines()[0] == "| " + " | ".join(SAMPLE_COLUMNS) + " |"
    dropped_row = '| 1 | 0 |  | 12 + 7? | 20 | 19 | 0.0 | False | threshold | {"reward": 0.0, "min_reward": 0.5} |'
    assert dropped_row + "  |  |  | {} |" in text


def test_tensorboard_log_dir_option(plugin_manager, tmp_path):
    logger = make_logger("tensorboard", log_dir=str(tmp_path / "tb"))
    logger.log_metrics({"reward_mean": 1.0}, iteration=0)
    logger.close()
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))


def test_wandb_resumes_the_run_the_output_folder_started(
    plugin_manager, tmp_path, quick_offline_wandb, monkeypatch
):
    import wandb

    from iterframe.loop.run_state import read_run_file, record_in_run_file

    record_in_run_file(str(tmp_path), {"iterframe_version": "test"})  # the folder holds a run
    calls = []
    original_init = wandb.init

    def recording_init(**kwargs):
        calls.append(kwargs)
        return original_init(**kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    run_ids = []
    for _ in range(2):  # the run, then the run resumed
        logger = make_logger("wandb", output_dir=str(tmp_path), project="iterframe-test")
        run_ids.append(logger.run.id)
        logger.close()
    assert run_ids[0] == run_ids[1] == read_run_file(str(tmp_path))["wandb/run_id"]
    assert [(call["id"], call["resume"]) for call in calls] == [(run_ids[0], "allow")] * 2
    other = tmp_path / "other"
    record_in_run_file(str(other), {"iterframe_version": "test"})
    logger = make_logger("wandb", output_dir=str(other), project="iterframe-test")
    logger.close()
    assert logger.run is None and calls[-1]["id"] != run_ids[0]


def test_tensorboard_drops_the_events_of_iterations_a_resumed_run_does_again(plugin_manager, tmp_path):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    crashed = make_logger("tensorboard", output_dir=str(tmp_path))
    for iteration in range(3):  # logged 0..2, checkpointed only 0
        crashed.log_metrics({"reward_mean": 0.1 * iteration}, iteration=iteration)
        crashed.log_samples(SAMPLES, iteration=iteration)
    crashed.close()
    resumed = make_logger("tensorboard", output_dir=str(tmp_path))
    for iteration in range(1, 4):
        resumed.log_metrics({"reward_mean": 1.0 + iteration}, iteration=iteration)
    resumed.close()
    events = EventAccumulator(os.path.join(tmp_path, "tensorboard"))
    events.Reload()
    scalars = [
        (event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
        for event in events.Tensors("reward_mean")
    ]
    assert scalars == [(0, 0.0), (1, 2.0), (2, 3.0), (3, 4.0)]
    assert [event.step for event in events.Tensors("samples/text_summary")] == [0]
