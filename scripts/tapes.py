"""Readers for the recorded exchange frames in ``../shared/exchange-ws-samples/``.

The recordings are never copied into this tree (see that folder's README); tests, the
simulator and the benchmarks read them in place. Set ``FEEDPLANE_SAMPLES`` to point elsewhere.

Formats (from the samples README):
- cryptofeed ``*.ws.*``: ``<unix_ts_float>: <json>`` per received frame; other lines are
  connect (``<url> <-> <ts>``) or sent (``<url> <- <ts>: <json>``) lines.
- hftbacktest ``*.gz``: ``<local_receive_ts_ns> <json>`` per line (REST snapshot lines included).
- JKorf ``*.txt``: ``>`` sent, ``<`` server reply, ``=`` server push (JSON may span lines);
  an optional digit after the marker pairs frames in concurrent tests.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent

BINANCE_2024 = "hftbacktest/binance_usdm_btcusdt_20240808.gz"
BINANCE_2021 = "cryptofeed/BINANCE_FUTURES.ws.1.0"
GATE_2023 = "cryptofeed/GATEIO_FUTURES.ws.1.0"
BITMART_FIXTURES = "jkorf-bitmart-net"


def samples_dir() -> Path:
    """The recordings folder: ``$FEEDPLANE_SAMPLES`` or ``<repo>/../shared/exchange-ws-samples``."""
    env = os.environ.get("FEEDPLANE_SAMPLES")
    return Path(env) if env else _REPO.parent / "shared" / "exchange-ws-samples"


def sample_path(relative: str) -> Path:
    """Absolute path of a recording given relative to ``samples_dir()``; FileNotFoundError if absent."""
    path = samples_dir() / relative
    if not path.exists():
        raise FileNotFoundError(f"recording {path} not found (set FEEDPLANE_SAMPLES to the samples folder)")
    return path


def read_cryptofeed_ws(relative: str) -> Iterator[tuple[float, str]]:
    """Yield ``(receive_ts_s, raw_json)`` for each frame *received* in a cryptofeed ``*.ws.*`` file."""
    with sample_path(relative).open(encoding="utf-8") as fh:
        for line in fh:
            head, sep, raw = line.partition(": ")
            if not sep or " " in head:  # connect / sent lines carry a URL before the timestamp
                continue
            try:
                ts = float(head)
            except ValueError:
                continue
            yield ts, raw.rstrip("\n")


def read_hftbacktest(relative: str = BINANCE_2024) -> Iterator[tuple[int, str]]:
    """Yield ``(local_receive_ts_ns, raw_json)`` per line of an hftbacktest gzip recording.

    Includes the REST depth-snapshot line (no ``"stream"`` envelope); callers filter.
    """
    with gzip.open(sample_path(relative), "rt", encoding="utf-8") as fh:
        for line in fh:
            ts, _, raw = line.partition(" ")
            yield int(ts), raw.rstrip("\n")


@dataclass(frozen=True, slots=True)
class FixtureFrame:
    """One frame of a JKorf test conversation: ``direction`` is ``>`` (sent), ``<`` (reply) or ``=`` (push)."""

    direction: str
    tag: str
    raw: str


_MARK = re.compile(r"^([<>=])(\d*)\s?(.*)$")


def read_jkorf(relative: str) -> list[FixtureFrame]:
    """Parse a JKorf ``.txt`` conversation into frames; multi-line JSON after ``=`` is joined."""
    frames: list[FixtureFrame] = []
    current: list[str] | None = None
    direction = tag = ""
    text = sample_path(relative).read_text(encoding="utf-8")
    for line in text.splitlines():
        m = _MARK.match(line)
        if m:
            if current is not None and "".join(current).strip():
                frames.append(FixtureFrame(direction, tag, "\n".join(current).strip()))
            direction, tag, rest = m.group(1), m.group(2), m.group(3)
            current = [rest]
        elif current is not None:
            current.append(line)
    if current is not None and "".join(current).strip():
        frames.append(FixtureFrame(direction, tag, "\n".join(current).strip()))
    return frames


GATE_2023_HTTP = "cryptofeed/GATEIO_FUTURES.http.0.0"


def read_cryptofeed_http(relative: str) -> Iterator[tuple[str, float, str]]:
    """Yield ``(url, receive_ts_s, raw_json)`` per REST response of a cryptofeed ``*.http.*`` file.

    Lines look like ``<http_url> -> <unix_ts_float>: <json>``; any other line is skipped.
    """
    with sample_path(relative).open(encoding="utf-8") as fh:
        for line in fh:
            url, sep, rest = line.partition(" -> ")
            if not sep:
                continue
            head, sep, raw = rest.partition(": ")
            if not sep:
                continue
            try:
                ts = float(head)
            except ValueError:
                continue
            yield url, ts, raw.rstrip("\n")


BINANCE_2021_HTTP = "cryptofeed/BINANCE_FUTURES.http.0.0"
