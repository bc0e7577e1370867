"""Progress bars only on a terminal, and printed text that never lands inside a bar."""

from __future__ import annotations

import io
import re
import sys
import types

from iterframe.loop.progress import Progress, echo


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_bars_are_drawn_on_a_terminal_and_not_into_a_redirected_stderr(monkeypatch):
    for stream, drawn in ((_Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        progress = Progress()
        assert list(progress.iterations(0, 3)) == [0, 1, 2]
        with progress.bar(4, "generate") as bar:
            bar.update(4)
        assert ("\r" in stream.getvalue()) is drawn
        assert ("iterations" in stream.getvalue()) is drawn


def test_disabled_progress_draws_nothing_even_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    progress = Progress(disabled=True)
    assert list(progress.iterations(0, 2)) == [0, 1]
    assert sys.stderr.getvalue() == ""


def test_echo_clears_the_bars_before_printing_and_draws_them_again_after(monkeypatch):
    screen = _Terminal()  # stdout and stderr on one terminal, as in an interactive shell
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    for iteration in Progress().iterations(0, 2):
        echo(f"iteration {iteration}  reward 0.500")
    segments = re.split(r"[\r\n]", screen.getvalue())
    assert "iteration 0  reward 0.500" in segments and "iteration 1  reward 0.500" in segments
    assert not [segment for segment in segments if "reward" in segment and "%|" in segment]
    assert any("%|" in segment for segment in segments)  # the bar was drawn too


def test_echo_prints_a_line_to_stdout_without_bars(capsys):
    echo("summary")
    assert capsys.readouterr().out == "summary\n"


def test_a_long_stage_without_bars_says_how_far_it_got_at_most_every_30_seconds(monkeypatch):
    from iterframe.loop import progress as progress_module

    stream, clock = io.StringIO(), iter([0.0, 10.0, 31.0, 40.0, 65.0, 100.0])
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    with Progress().bar(60, "generate") as bar:
        for _ in range(5):  # at 10 s, 31 s, 40 s, 65 s and 100 s; the last one finishes the stage
            bar.update(12)
    assert stream.getvalue().splitlines() == ["  generate: 24/60", "  generate: 48/60"]
