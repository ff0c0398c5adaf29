"""``scripts/test`` runs pytest twice; ``scripts.pytest_summary`` sums both closing lines into the one CI reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.pytest_summary import closing_line, combine, main

PARALLEL = "ok\n\x1b[32m==== 1 failed, 970 passed, 16 deselected, 1 warning in 120.50s (0:02:00) ====\x1b[0m\n"
SERIAL = "=== short test summary info ===\nFAILED x\n==== 15 passed, 972 deselected, 2 errors in 200.25s ====\n"


def test_closing_lines_are_summed_without_deselected() -> None:
    lines = [closing_line(PARALLEL), closing_line(SERIAL)]
    assert lines[0] == "1 failed, 970 passed, 16 deselected, 1 warning in 120.50s (0:02:00)"
    assert combine([line for line in lines if line]) == "1 failed, 985 passed, 1 warning, 2 errors in 320.75s"
    assert combine(["1 error in 1.00s", "no tests ran in 0.50s"]) == "1 error in 1.50s"
    assert closing_line("989 deselected in 2.94s") == "989 deselected in 2.94s"
    assert closing_line("Traceback (most recent call last):\n  boom\n") is None


def test_a_run_without_a_closing_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "parallel").write_text(PARALLEL)
    (tmp_path / "serial").write_text("killed\n")
    assert main([str(tmp_path / "parallel"), str(tmp_path / "serial")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"no pytest summary in {tmp_path / 'serial'}: that run did not finish"
    assert out[-1].strip("=") == " 1 failed, 970 passed, 1 warning in 120.50s (2 pytest runs) "


def test_collect_only_runs_are_summed() -> None:
    lines = [
        closing_line("972/988 tests collected (16 deselected) in 5.20s"),
        closing_line("16/988 tests collected in 1.00s"),
    ]
    assert combine([line for line in lines if line]) == "988 tests collected in 6.20s"
