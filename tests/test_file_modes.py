"""Everything a run writes has the modes the umask asks for, not the 0600/0700 of temp files and safetensors."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from iterframe.engine.file_modes import current_umask, follow_umask


@pytest.fixture
def umask():
    """``umask(value)`` sets the process umask for the test; the previous one comes back afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    try:
        yield set_umask
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _modes_under(folder) -> dict[str, int]:
    """Relative path -> permission bits of every file and folder under ``folder``."""
    modes = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(root, name)
            modes[os.path.relpath(path, folder)] = _mode(path)
    return modes


def test_current_umask_reads_the_umask_without_changing_it(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_follow_umask_opens_a_temporary_file_and_folder_as_far_as_the_umask_allows(umask, tmp_path):
    umask(0o022)
    handle, temp_file = tempfile.mkstemp(dir=tmp_path)
    os.close(handle)
    temp_folder = tempfile.mkdtemp(dir=tmp_path)
    (open(os.path.join(temp_folder, "inner"), "w")).close()
    os.chmod(os.path.join(temp_folder, "inner"), 0o600)
    assert (_mode(temp_file), _mode(temp_folder)) == (0o600, 0o700)  # what tempfile gives
    follow_umask(temp_file)
    follow_umask(temp_folder)
    assert (_mode(temp_file), _mode(temp_folder)) == (0o644, 0o755)
    assert _mode(os.path.join(temp_folder, "inner")) == 0o644


def test_follow_umask_keeps_files_private_under_a_private_umask(umask, tmp_path):
    umask(0o077)
    path = tmp_path / "file"
    path.write_text("x")
    os.chmod(path, 0o644)
    follow_umask(path)
    assert _mode(path) == 0o600


def test_run_artifacts_are_readable_by_others_under_umask_022(umask, tiny_llama_path, arithmetic_path, tmp_path):
    from iterframe.cli import cli
    from iterframe.cli.report_cmd import command as report_command

    umask(0o022)
    output_dir = tmp_path / "run"
    args = ["run", "--model", tiny_llama_path, "--dataset", arithmetic_path, "--reference-column", "answer"]
    args += ["--reward", "answer-match", "--iterations", "1", "--prompts-per-iteration", "2"]
    args += ["--samples-per-prompt", "2", "--set", "generator.max_new_tokens=3", "--set", "loop.eval_every=0"]
    args += ["--output-dir", str(output_dir), "--quiet"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(report_command, [str(output_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    modes = _modes_under(output_dir)
    for name in ("run.json", "config.yaml", "metrics.jsonl", "report.png", "final/model.safetensors"):
        assert name in modes
    assert "iterations/000000/samples.parquet" in modes
    assert "checkpoints/iteration-000000/loop_state.json" in modes
    assert "checkpoints/iteration-000000/model.safetensors" in modes
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o755 if os.path.isdir(output_dir / name) else 0o644)
    }
    assert wrong == {}


def test_demo_model_cache_is_readable_by_others_under_umask_022(umask, tmp_path, monkeypatch):
    from iterframe.demo import model as demo_model

    umask(0o022)
    config = demo_model.load_model_config()
    config["format_warmup"]["steps"] = 1
    path = tmp_path / "demo-model"
    demo_model.build_demo_model(str(path), config)
    modes = _modes_under(path)
    assert "model.safetensors" in modes
    assert _mode(path) == 0o755
    assert {name: oct(mode) for name, mode in modes.items() if mode != 0o644} == {}


def test_a_folder_built_in_place_replaces_the_old_one_only_when_complete(umask, tmp_path):
    from iterframe.engine.file_modes import folder_built_in_place

    umask(0o022)
    path = tmp_path / "cache" / "model"
    path.mkdir(parents=True)
    (path / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with folder_built_in_place(str(path)) as temp_path:
            (Path(temp_path) / "new.txt").write_text("half")
            raise RuntimeError("the build failed")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model"]  # no temp folder left
    assert [p.name for p in path.iterdir()] == ["old.txt"]
    with folder_built_in_place(str(path)) as temp_path:
        (Path(temp_path) / "new.txt").write_text("new")
        assert not (path / "new.txt").exists()  # nothing is in place before the block ends
    assert [p.name for p in path.iterdir()] == ["new.txt"]
    assert _mode(path) == 0o755 and _mode(path / "new.txt") == 0o644
