"""One closing line for several pytest runs: ``scripts/test`` runs pytest twice and CI reads the last line.

Usage: ``python -m scripts.pytest_summary LOG [LOG ...]`` (each LOG is one run's captured output). Prints, in
pytest's own format, e.g. ``==== 2 failed, 973 passed, 1 skipped in 290.12s (2 pytest runs) ====``: the counts
of every run summed (``deselected`` left out: each run deselects what the other one runs) and their times added.
A run without a closing line (it crashed) is named on a line of its own and makes the exit status 1.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_COUNT = re.compile(r"(\d+) (failed|passed|skipped|xfailed|xpassed|warnings?|errors?)\b")
_COLLECTED = re.compile(r"(\d+)(?:/\d+)? tests? collected")  # ``--collect-only``
_NOTHING = re.compile(r"no tests ran|\d+ deselected")  # a run whose every test was deselected
_SECONDS = re.compile(r" in (\d+(?:\.\d+)?)s\b")
#: pytest's order of the outcomes in its closing line; "warnings" and "errors" are shown singular for 1.
ORDER = ("failed", "passed", "skipped", "xfailed", "xpassed", "warnings", "errors", "tests collected")
_PLURAL = {"warning": "warnings", "error": "errors"}


def closing_line(text: str) -> str | None:
    """The last line of a pytest run's output that reads like its summary (``... in 12.34s``), ANSI codes removed."""
    for line in reversed(_ANSI.sub("", text).splitlines()):
        if _SECONDS.search(line) and (_COUNT.search(line) or _COLLECTED.search(line) or _NOTHING.search(line)):
            return line.strip(" =")
    return None


def combine(lines: list[str]) -> str:
    """``["1 failed, 3 passed in 2.00s", "2 passed, 9 deselected in 1.50s"]`` -> ``"1 failed, 5 passed in 3.50s"``."""
    counts: Counter[str] = Counter()
    seconds = 0.0
    for line in lines:
        for number, outcome in _COUNT.findall(line):
            counts[_PLURAL.get(outcome, outcome)] += int(number)
        if found := _COLLECTED.search(line):
            counts["tests collected"] += int(found.group(1))
        if found := _SECONDS.search(line):
            seconds += float(found.group(1))
    parts = []
    for outcome in ORDER:
        if counts[outcome]:
            name = outcome[:-1] if outcome in ("warnings", "errors") and counts[outcome] == 1 else outcome
            parts.append(f"{counts[outcome]} {name}")
    return f"{', '.join(parts) or 'no tests ran'} in {seconds:.2f}s"


def main(argv: list[str]) -> int:
    found: list[str] = []
    missing: list[str] = []
    for path in argv:
        line = closing_line(Path(path).read_text(errors="replace"))
        (found if line is not None else missing).append(line if line is not None else path)
    for path in missing:
        print(f"no pytest summary in {path}: that run did not finish")
    text = f" {combine(found)} ({len(argv)} pytest runs) "
    print(text.center(max(len(text) + 2, 100), "="))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
