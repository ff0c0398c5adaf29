"""Gate.io subscribe/unsubscribe/ping frames (§2.2-§2.4): what a connection sends (pure; ``now_ms`` gives ``time``).

Public channels batch contracts where Gate allows it; a private topic gets a frame of its own, signed for its
``time`` (``private.ws_auth``, §2.3a): its text carries the API key and a signature, so it is never logged.
"""

from __future__ import annotations

import orjson

from control.topics import Topic
from workers.exchanges.base import AdapterError, Credentials, OutFrame
from workers.exchanges.gateio.private import account_uid, private_payload, ws_auth
from workers.exchanges.gateio.wire import (
    EXCHANGE_ID,
    INT32_MAX,
    LIST_CHANNELS,
    MAX_SUBSCRIBE_FRAME_BYTES,
    PRIVATE_CHANNELS,
    native_payload,
    validate,
)
from workers.exchanges.signing import check_credentials

_dumps = orjson.dumps


def ping_frame(now_ms: int) -> str:
    """``{"time":<s>,"channel":"futures.ping"}``; the server answers ``futures.pong`` (§2.4)."""
    return _dumps({"time": now_ms // 1000, "channel": "futures.ping"}).decode()


def frames(
    event: str,
    topics: list[Topic],
    batch_size: int,
    first_request_id: int,
    now_ms: int,
    creds: Credentials | None,
) -> list[OutFrame]:
    """``{"time","id","channel","event","payload"}`` frames (§2.2, §2.4); see ``GateioAdapter.subscribe_frames``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if first_request_id < 0:
        raise ValueError(f"request ids must be >= 0, got {first_request_id}")
    # Gate channel -> [(payload, topic name, private)], in order of first appearance
    by_channel: dict[str, list[tuple[list[str], str, bool]]] = {}
    uid: str | None = None
    for topic in topics:
        validate(topic)
        if topic.channel in PRIVATE_CHANNELS:
            creds = check_credentials(creds, EXCHANGE_ID, topic.symbol)
            uid = uid or account_uid(creds)
            native, payload = private_payload(topic, uid)
            by_channel.setdefault(native, []).append((payload, str(topic), True))
            continue
        native, payload = native_payload(topic)
        by_channel.setdefault(native, []).append((payload, str(topic), False))
    time_s = now_ms // 1000
    limit = MAX_SUBSCRIBE_FRAME_BYTES
    # An upper bound on the frame overhead: no id of this call has more digits than the last possible one.
    last_id = first_request_id + max(len(topics) - 1, 0)
    if last_id > INT32_MAX:
        raise ValueError(f"request ids must fit in int32, got up to {last_id}")
    frames: list[tuple[str, list[str], tuple[str, ...], bool]] = []
    for native, entries in by_channel.items():
        if native not in LIST_CHANNELS:
            frames.extend((native, payload, (name,), private) for payload, name, private in entries)
            continue
        empty = len(_dumps({"time": time_s, "id": last_id, "channel": native, "event": event, "payload": []}))
        contracts: list[str] = []
        names: list[str] = []
        size = empty
        for payload, name, _ in entries:
            contract_bytes = len(_dumps(payload[0]))  # quoted, UTF-8
            if contracts and (len(contracts) >= batch_size or size + 1 + contract_bytes > limit):
                frames.append((native, contracts, tuple(names), False))
                contracts, names, size = [], [], empty
            size += contract_bytes + (1 if contracts else 0)  # +1 for the comma
            contracts.append(payload[0])
            names.append(name)
        if contracts:
            frames.append((native, contracts, tuple(names), False))
    out: list[OutFrame] = []
    for i, (native, payload, names_, private) in enumerate(frames):
        request_id = first_request_id + i
        if private:
            assert creds is not None  # checked above for every private topic
            request = {
                "id": request_id,
                "time": time_s,
                "channel": native,
                "event": event,
                "auth": ws_auth(creds, native, event, time_s),
                "payload": payload,
            }
        else:
            request = {"time": time_s, "id": request_id, "channel": native, "event": event, "payload": payload}
        text = _dumps(request).decode()
        if len(text.encode()) > limit:
            raise AdapterError(f"topic {names_[0]} alone exceeds the {limit}-byte subscribe frame limit")
        out.append(OutFrame(text, names_, request_id))
    return out
