"""Progress off a terminal: a few plain lines per task, not a redrawn bar."""

from __future__ import annotations

import pytest
from character.cli.progress import bars
from character.progress import ProgressEvent


def test_a_pipe_gets_a_line_per_tenth(capsys: pytest.CaptureFixture[str]) -> None:
    with bars() as progress:  # pytest's captured stderr is not a terminal
        for done in range(0, 1001):
            progress(ProgressEvent("distill: answers", done, 1000, "kept 3"))
        progress(ProgressEvent("load", 0, None))
    lines = capsys.readouterr().err.splitlines()
    answers = [line for line in lines if line.startswith("distill: answers: ")]
    assert len(answers) == 11
    assert answers[0].startswith("distill: answers: 0/1000") and answers[-1].startswith("distill: answers: 1000/1000")
    assert answers[0].endswith("kept 3")
    assert [line for line in lines if line.startswith("load: ")] == ["load: 0 (0 s)"]
