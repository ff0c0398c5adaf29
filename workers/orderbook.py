"""Local order books and the exchanges' sequencing rules (pure: no I/O, no clock).

``OrderBook`` holds price levels; a ``BookSync`` (one per topic) decides, update by update, whether
a ``BookUpdate`` from the stream may be applied, must wait for a snapshot, is stale, or reveals a
gap. The book keeper (``workers.books``) owns the I/O: it fetches snapshots, publishes events and
starts over after a gap. Each exchange declares its rule, a ``BookSync`` subclass in
``workers/exchanges/<id>/book.py`` (``adapter.book_sync``) that says which id may follow which.

Every rule: a snapshot older than the book's last applied id is stale; updates with no levels
still advance the ids; an applied update that leaves the book crossed (best bid >= best ask) is a
gap (``"crossed"``). After a gap the sync has already started over: the book is empty, it waits
for a snapshot (which the keeper must request), and for the REST rules the offending update is
kept in the new buffer, since it is newer than anything the next snapshot could miss.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, ClassVar

from sortedcontainers import SortedDict

if TYPE_CHECKING:  # types only: the venues' rules (workers/exchanges/<id>/book.py) import this module
    from workers.exchanges.base import BookUpdate

__all__ = [
    "APPLIED",
    "BUFFERED",
    "GAP",
    "NEED_SNAPSHOT",
    "STALE",
    "BookSync",
    "OrderBook",
    "Outcome",
]

Level = tuple[str, str]


class OrderBook:
    """Bids and asks keyed by ``Decimal(price)``, each holding the exchange's ``(price, size)`` strings.

    Prices compare numerically (``"57"`` and ``"57.00"`` are one level); the strings are kept as sent.
    Sizes are absolute; a size equal to zero (``"0"``, ``"0.000"``) deletes the level.
    """

    __slots__ = ("_keys", "asks", "bids")

    def __init__(self) -> None:
        #: Ascending by price: the best bid is the last item, the best ask the first.
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self._keys: dict[str, Decimal] = {}  # price string -> its sort key; prices repeat, parsing is the cost

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Set each level to its absolute size; zero removes it (removing an absent level is normal).

        Raises ValueError on a price that is not a finite decimal or a size that is negative or not
        a number (the book may then be partly updated: treat it as broken).
        """
        if len(self._keys) > _MAX_KEYS:
            self._keys.clear()
        _apply_side(self.bids, bids, self._keys)
        _apply_side(self.asks, asks, self._keys)

    def replace(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Make the book exactly ``bids``/``asks`` (a snapshot); zero-size levels are skipped."""
        self.clear()
        self.apply(bids, asks)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def top(self, n: int) -> tuple[list[list[str]], list[list[str]]]:
        """The best ``n`` levels per side, best first: ``([[price, size], ...] bids, [...] asks)``."""
        bids, asks = self.bids, self.asks
        top_bids = [list(bids[k]) for k in bids.islice(max(len(bids) - n, 0), reverse=True)]
        top_asks = [list(asks[k]) for k in asks.islice(0, n)]
        return top_bids, top_asks

    def best_bid(self) -> Level | None:
        """``(price, size)`` of the highest bid, or None."""
        return self.bids.peekitem(-1)[1] if self.bids else None  # type: ignore[no-any-return]

    def best_ask(self) -> Level | None:
        """``(price, size)`` of the lowest ask, or None."""
        return self.asks.peekitem(0)[1] if self.asks else None  # type: ignore[no-any-return]

    def crossed(self) -> bool:
        """True when both sides exist and the best bid is at or above the best ask."""
        bids, asks = self.bids, self.asks
        return bool(bids and asks and bids.peekitem(-1)[0] >= asks.peekitem(0)[0])


_MAX_KEYS = 100_000
_NONZERO_LEAD = frozenset("123456789")
_set_existing = dict.__setitem__  # SortedDict is a dict: an existing key needs no re-sort


def _apply_side(side: SortedDict, levels: Iterable[Level], keys: dict[str, Decimal]) -> None:
    # The hot loop of the book (about 70 levels per Binance @0ms frame): prices are parsed once and
    # cached; a size is parsed only when its text does not already say zero ("0", "0.000") or
    # non-zero (a digit 1-9 after leading zeros and dots).
    for price, size in levels:
        key = keys.get(price)
        if key is None:
            try:
                key = Decimal(price)
            except (InvalidOperation, TypeError) as exc:
                raise ValueError(f"bad book price {price!r}") from exc
            if not key.is_finite():
                raise ValueError(f"bad book price {price!r}")
            keys[price] = key
        try:
            rest = size.strip("0.")
        except AttributeError:
            raise ValueError(f"bad book size {size!r} at {price}") from None
        if rest and rest[0] not in _NONZERO_LEAD:  # "0E-8", "-1", "NaN", "": decide numerically
            try:
                amount = Decimal(size)
            except InvalidOperation as exc:
                raise ValueError(f"bad book size {size!r} at {price}") from exc
            if not amount.is_finite() or amount < 0:
                raise ValueError(f"bad book size {size!r} at {price}")
            rest = "1" if amount else ""
        if not rest:
            if not size:
                raise ValueError(f"empty book size at {price}")
            side.pop(key, None)
        elif key in side:
            _set_existing(side, key, (price, size))
        else:
            side[key] = (price, size)


# -- outcomes ---------------------------------------------------------------------------------------

NEED_SNAPSHOT = "need_snapshot"
BUFFERED = "buffered"
APPLIED = "applied"
STALE = "stale"
GAP = "gap"


class Outcome:
    """What ``BookSync.feed`` did with one update.

    ``kind`` is one of ``NEED_SNAPSHOT`` (kept; the keeper must now request a snapshot — returned
    once per wait), ``BUFFERED`` (kept until the snapshot), ``APPLIED`` (``applied``: the updates
    applied, in order; a snapshot may apply several buffered ones, or none), ``STALE`` (dropped:
    older than the book, or waiting for a socket snapshot) or ``GAP`` (``reason``: ``"sequence"`` or
    ``"crossed"``; the sync has started over and waits for a snapshot the keeper must request).
    """

    __slots__ = ("applied", "kind", "reason")

    def __init__(self, kind: str, applied: list[BookUpdate] | None = None, reason: str | None = None) -> None:
        self.kind = kind
        self.applied: list[BookUpdate] = applied if applied is not None else []
        self.reason = reason

    def __repr__(self) -> str:
        extra = f" {self.reason}" if self.reason else (f" x{len(self.applied)}" if self.applied else "")
        return f"<Outcome {self.kind}{extra}>"


_NEED_SNAPSHOT = Outcome(NEED_SNAPSHOT)
_BUFFERED = Outcome(BUFFERED)
_STALE = Outcome(STALE)


# -- sequencing rules -------------------------------------------------------------------------------


class BookSync:
    """One topic's book plus its sequencing state; subclasses define the id rules.

    :param max_buffer: most updates kept while waiting for a snapshot (the oldest go first; they
        are the ones a newer snapshot makes stale anyway).
    :param requested: start as if a snapshot had already been asked for (BitMart: subscribing sends one).

    ``last_id`` is the id of the last applied update (or of the snapshot until the first update
    bridges it), None while unsynced. ``synced`` is true from an accepted snapshot until a gap or reset.
    """

    rule: ClassVar[str] = ""
    #: True when updates wait for a (REST) snapshot in a buffer; False when they are dropped (BitMart).
    buffers: ClassVar[bool] = True

    def __init__(self, *, max_buffer: int = 10_000, requested: bool = False) -> None:
        self.book = OrderBook()
        self.last_id: int | None = None
        self.synced = False
        self._bridged = False  # the first update after the snapshot has been applied
        self._requested = requested
        self._buffer: deque[BookUpdate] = deque(maxlen=max_buffer)

    @property
    def buffered(self) -> int:
        """Updates waiting for a snapshot."""
        return len(self._buffer)

    def reset(self, *, requested: bool = False) -> None:
        """Forget the book and every buffered update (a new socket); ``requested`` as in the constructor."""
        self.book.clear()
        self.last_id = None
        self.synced = self._bridged = False
        self._requested = requested
        self._buffer.clear()

    def feed(self, update: BookUpdate) -> Outcome:
        """Apply, buffer or drop ``update`` (a snapshot when ``update.snapshot``); see ``Outcome``.

        Raises ValueError on a malformed level (then call ``reset`` and resync).
        """
        if update.snapshot:
            return self._snapshot(update)
        if self.synced:
            return self._step(update)
        if self.buffers:
            self._buffer.append(update)
        if self._requested:
            return _BUFFERED if self.buffers else _STALE
        self._requested = True
        return _NEED_SNAPSHOT

    # -- internals --------------------------------------------------------------------------------

    def _snapshot(self, snap: BookUpdate) -> Outcome:
        if self.synced and self.last_id is not None and snap.last_id < self.last_id:
            return _STALE  # e.g. a REST snapshot older than a full:true push already applied
        self.book.replace(snap.bids, snap.asks)
        self.last_id = snap.last_id
        self.synced, self._bridged, self._requested = True, False, False
        if self.book.crossed():
            return self._gap("crossed", None)
        pending, self._buffer = self._buffer, deque(maxlen=self._buffer.maxlen)
        applied: list[BookUpdate] = []
        while pending:
            update = pending.popleft()
            outcome = self._step(update)
            if outcome.kind is APPLIED:
                applied.append(update)
            elif outcome.kind is GAP:
                self._buffer.extend(pending)  # newer than the offending update, kept for the next snapshot
                return outcome
        return Outcome(APPLIED, applied)

    def _step(self, update: BookUpdate) -> Outcome:
        verdict = self._check(update)
        if verdict is not APPLIED:
            return _STALE if verdict is STALE else self._gap("sequence", update)
        self.book.apply(update.bids, update.asks)
        self.last_id = update.last_id
        self._bridged = True
        if self.book.crossed():
            return self._gap("crossed", update)
        return Outcome(APPLIED, [update])

    def _check(self, update: BookUpdate) -> str:
        """``APPLIED`` (apply it), ``STALE`` (drop it) or ``GAP`` for a stream update while synced."""
        raise NotImplementedError

    def _gap(self, reason: str, update: BookUpdate | None) -> Outcome:
        self.book.clear()
        self.last_id = None
        self.synced = self._bridged = False
        self._requested = True  # the keeper requests a snapshot on every gap
        self._buffer.clear()
        if update is not None and self.buffers:
            self._buffer.append(update)
        return Outcome(GAP, reason=reason)
