"""Loading and caching of tapes and REST snapshots: each load group is built once per process and recordings folder.

Parsing the 94k-line 2024 recording and deriving its tapes takes about two seconds, and tests create many
simulators, so everything is cached here; ``cached_*`` answer without blocking when the group is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scripts.sim.tapes.catalog import (
    CATALOG,
    GROUP_CF,
    GROUP_GATE,
    GROUP_HFT,
    GROUP_JKORF,
    LOAD_LOCK,
    REST_CATALOG,
    RestSnapshot,
    Tape,
    TapeGroup,
    dir_key,
    tape_key,
)
from scripts.sim.tapes.recorded import build_cf, build_gate, build_hft, build_jkorf

_BUILDERS: dict[str, Callable[[Path | None], TapeGroup]] = {
    GROUP_HFT: build_hft,
    GROUP_CF: build_cf,
    GROUP_JKORF: build_jkorf,
    GROUP_GATE: build_gate,
}
_cache: dict[tuple[str, str], TapeGroup] = {}


def cached_tape(exchange: str, native: str, samples_dir: Path | None = None) -> Tape | None:
    """The tape if its source is already loaded; raises LookupError if it still needs loading.

    Lets the async caller skip a thread hop on the common (cached) path.
    """
    key = (exchange, tape_key(exchange, native))
    entry = CATALOG.get(key)
    if entry is None:
        return None
    group = _cache.get((entry[0], dir_key(samples_dir)))
    if group is None:
        raise LookupError(native)
    return group.tapes.get(key)


def get_tape(exchange: str, native: str, samples_dir: Path | None = None) -> Tape | None:
    """The tape for ``native`` (loading and caching its source file on first use), or None.

    Blocking: call it from a thread in async code. Raises FileNotFoundError when the
    recordings folder is missing (see ``scripts.tapes.samples_dir``).
    """
    key = (exchange, tape_key(exchange, native))
    entry = CATALOG.get(key)
    if entry is None:
        return None
    return load_group(entry[0], samples_dir).tapes.get(key)


def cached_rest_snapshot(exchange: str, symbol: str, samples_dir: Path | None = None) -> RestSnapshot | None:
    """Like ``cached_tape`` for REST snapshots: None if unknown, LookupError if not loaded yet."""
    entry = REST_CATALOG.get((exchange, symbol))
    if entry is None:
        return None
    group = _cache.get((entry[0], dir_key(samples_dir)))
    if group is None:
        raise LookupError(symbol)
    return group.rest.get((exchange, symbol))


def rest_snapshot(exchange: str, symbol: str, samples_dir: Path | None = None) -> RestSnapshot | None:
    """The recorded REST snapshot for ``symbol`` (``BTCUSDT``, ``RDNT_USDT``), or None. Blocking."""
    entry = REST_CATALOG.get((exchange, symbol))
    if entry is None:
        return None
    return load_group(entry[0], samples_dir).rest.get((exchange, symbol))


def preload(samples_dir: Path | None = None) -> None:
    """Load and cache every tape source now (about 2 s once per process)."""
    for group in (GROUP_JKORF, GROUP_CF, GROUP_GATE, GROUP_HFT):
        load_group(group, samples_dir)


def load_group(group: str, samples_dir: Path | None) -> TapeGroup:
    """The tapes of one load group (``catalog.GROUP_*``), built on first use and cached per process. Blocking."""
    key = (group, dir_key(samples_dir))
    with LOAD_LOCK:
        loaded = _cache.get(key)
        if loaded is None:
            loaded = _cache[key] = _BUILDERS[group](samples_dir)
        return loaded
