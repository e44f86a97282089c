"""Fuzzing of every parser of outside input: `make fuzz` (python -m chaos.fuzz --inputs N).

Generated inputs, mostly mutations of valid ones (truncation, bit flips, inserted bytes,
invalid UTF-8, NUL characters, lone surrogates, oversized, deeply nested JSON, huge numbers,
wrong types, odd Unicode, far-off clocks), go through the pure parsers the platform runs on
input from outside:

- `mqtt`:    a device event and its MQTT topic (gateways/validation.py, schemas/topics.py),
             then what the gateway makes of the result (the Kafka record, the dead-letter
             record as the recorder stores it, the clock flag);
- `http`:    the HTTP ingest's Basic credentials and body (gateways/http_ingest.py);
- `api`:     the desk API's JSON bodies (actions, sign-in, officers, shifts, units);
- `query`:   the desk API's query parameters (numbers, times; the WebSocket's `since`);
- `ws`:      incident updates as the live WebSocket feed decodes them (dispatch/api/live.py);
- `officer`: an officer app's action over MQTT and its topic (gateways/officer_actions_gateway.py).

Each input must give a result or a refusal with a reason; any other exception is a crash,
and an input that takes longer than --hang-ms is a hang. Progress lines go to the terminal,
then a summary: inputs, accepted, rejected by reason, crashes, hangs, the slowest input. The
exit code is non-zero on any crash or hang.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
from aiohttp import web

from dispatch.api import live
from dispatch.api.admin import _NEW_OFFICER, _NEW_SHIFT, _NEW_UNIT, _OFFICER_CHANGE
from dispatch.api.app import _action_decoder, _sign_in_decoder
from dispatch.api.common import decode_body, parse_int, parse_time
from gateways.http_ingest import parse_basic
from gateways.officer_actions_gateway import officer_from_topic, parse_action
from gateways.validation import ClockLimits, Rejection, clock_offset, parse_event, unstorable
from schemas import topics
from schemas.actions import ActionResult
from schemas.events import DEVICE_ID_PATTERN, EVENT_TYPES, MAX_PAYLOAD_BYTES
from schemas.messages import AcceptedEvent, Ingress, RejectedInput, RejectReason
from workers.rejection_recorder import _text

NOW = datetime.now(UTC)

# Values that have broken parsers somewhere: wrong types, edges, odd text.
NASTY: list[Any] = [
    None,
    True,
    0,
    -1,
    2**31,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    10**30,
    -(10**30),
    1.5,
    1e308,
    -0.0,
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202e\u0645\u0631\u062d\u0628\u0627",
    "😀" * 10,
    "平安" * 40,
    "x" * 5000,
    "'; DROP TABLE events; --",
    "<img src=x onerror=alert(1)>",
    "../../etc/passwd",
    "%00",
    "\ud7ff\ue000\uffff",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "1970-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-26T12:00:00",
    [],
    {},
    [None] * 10,
    {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}},
]

# Byte sequences to insert: NUL, invalid UTF-8, an encoded surrogate, overlong forms, JSON tokens.
INSERTS = [
    b"\x00",
    b"\xff",
    b"\xfe\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\\ud800",
    b"\\u0000",
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"1e999",
    b"-",
    b"NaN",
    b"\n",
]


def _event(r: random.Random) -> dict[str, Any]:
    skew = r.choice([0, 0, 0, 5, -60, 301, -86401, 10**8, -(10**9)])
    body: dict[str, Any] = {
        "event_id": f"e-{r.getrandbits(48):x}",
        "device_id": r.choice(["dev-1", "d", "A.b_c-9", "x" * 64]),
        "type": r.choice(EVENT_TYPES),
        "occurred_at": (NOW + timedelta(seconds=skew)).isoformat(),
        "seq": r.randrange(0, 2**63),
    }
    if r.random() < 0.5:
        body["battery"] = r.randrange(0, 101)
    if r.random() < 0.5:
        body["data"] = {"cancels": "e-1", "signal": -70, "fw": "1.2.3", "zones": [1, 2]}
    return body


def _action(r: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"action": r.choice(["acknowledge", "on_scene", "resolve", "note", "take_over", "assign"])}
    if body["action"] == "resolve":
        body["outcome"] = r.choice(["resolved", "false_alarm", "referred"])
        if body["outcome"] == "referred":
            body["referral"] = r.choice(["110", "119", "120"])
    if body["action"] in ("note", "resolve"):
        body["text"] = r.choice(["到了", "door open", ""])
    if body["action"] == "assign":
        body["assignee"] = "go-990102001001001"
    return body


def _app_action(r: random.Random) -> dict[str, Any]:
    return {
        **_action(r),
        "incident_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "action_id": f"a-{r.getrandbits(32):x}",
    }


def _update(r: random.Random) -> dict[str, Any]:
    return {
        "incident_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "case_number": "990102-000001",
        "change": r.choice(["opened", "joined", "acknowledged"]),
        "status": "opened",
        "priority": r.randrange(1, 6),
        "level": "grid",
        "device_id": "dev-1",
        "grid_code": "990102001001001",
        "at": NOW.isoformat(),
        "event_id": "e-1",
        "version": r.randrange(1, 100),
    }


API_SEEDS: dict[str, tuple[msgspec.json.Decoder[Any], Callable[[random.Random], dict[str, Any]]]] = {
    "action": (_action_decoder, _action),
    "sign_in": (_sign_in_decoder, lambda r: {"officer_id": "go-990102001001001", "password": "pingan-demo"}),
    "new_officer": (
        _NEW_OFFICER,
        lambda r: {"officer_id": "go-n1", "unit_code": "990102001001001", "name": "网格员", "role": "grid_officer"},
    ),
    "officer_change": (_OFFICER_CHANGE, lambda r: {"name": "x", "phone": "110", "active": r.random() < 0.5}),
    "new_shift": (
        _NEW_SHIFT,
        lambda r: {"starts_at": "2026-11-26T08:00:00+08:00", "ends_at": "2026-11-26T20:00:00+08:00"},
    ),
    "new_unit": (
        _NEW_UNIT,
        lambda r: {"code": "990102001001009", "level": "grid", "parent_code": "990102001001", "name": "第9网格"},
    ),
}


# ---------------------------------------------------------------------------------------------
# Mutations


def _deep(r: random.Random) -> Any:
    v: Any = r.choice([1, "x", None])
    for _ in range(r.choice([10, 33, 100, 300])):
        v = [v] if r.random() < 0.5 else {"k": v}
    return v


def _random_json(r: random.Random, depth: int = 0) -> Any:
    k = r.random()
    if depth > 3 or k < 0.4:
        return r.choice(NASTY)
    if k < 0.7:
        return [_random_json(r, depth + 1) for _ in range(r.randrange(0, 4))]
    return {r.choice(["event_id", "type", "x", "data", "\x00", "seq"]): _random_json(r, depth + 1) for _ in range(3)}


def mutate_obj(r: random.Random, obj: dict[str, Any]) -> Any:
    """A structure-aware change of a valid body: a field gets a wrong value, goes, or multiplies."""
    obj = dict(obj)
    for _ in range(r.choice([1, 1, 1, 2, 3])):
        k = r.random()
        keys = list(obj) or ["x"]
        if k < 0.45:
            obj[r.choice(keys)] = r.choice(NASTY)
        elif k < 0.55:
            obj.pop(r.choice(keys), None)
        elif k < 0.65:
            obj[r.choice(keys)] = _deep(r)
        elif k < 0.75:
            obj["data"] = {r.choice(["a", "\x00", "ключ", ""]): r.choice(NASTY) for _ in range(r.randrange(1, 4))}
        elif k < 0.85:
            obj[r.choice(["extra", "EVENT_ID", "", "\u0000"])] = r.choice(NASTY)
        elif k < 0.92:
            return _random_json(r)
        else:
            return r.choice(NASTY)
    return obj


def encode(r: random.Random, obj: Any) -> bytes:
    try:
        raw = msgspec.json.encode(obj)  # takes integers beyond 64 bits, unlike orjson
    except (TypeError, OverflowError, ValueError, RecursionError):
        raw = repr(obj).encode("utf-8", "surrogatepass")
    if r.random() < 0.05:  # a duplicate key: JSON allows it, parsers differ
        raw = raw.replace(b"{", b'{"type":"alarm.panic",', 1)
    return raw


def mutate_bytes(r: random.Random, raw: bytes) -> bytes:
    """A byte-level change: truncation, flipped bits, inserted or repeated bytes, padding."""
    b = bytearray(raw)
    for _ in range(r.choice([1, 1, 2, 4])):
        k = r.random()
        n = len(b)
        if k < 0.2 and n:
            del b[r.randrange(n) :]
        elif k < 0.45 and n:
            i = r.randrange(n)
            b[i] ^= 1 << r.randrange(8)
        elif k < 0.7:
            i = r.randrange(n + 1)
            b[i:i] = r.choice(INSERTS)
        elif k < 0.8 and n:
            i = r.randrange(n)
            j = min(n, i + r.randrange(1, 16))
            b[i:i] = b[i:j] * r.randrange(2, 50)
        elif k < 0.85:
            b += b" " * (MAX_PAYLOAD_BYTES - n + r.randrange(-2, 3))
        elif k < 0.9:
            n_deep = r.choice([100, 1000, 3000])
            b = bytearray(b'{"data":' + b"[" * n_deep + b"]" * n_deep + b"}")
        elif k < 0.95:
            b = bytearray(r.randbytes(r.randrange(0, 64)))
        else:
            i = r.randrange(n + 1)
            b[i:i] = "é平😀".encode()[r.randrange(0, 3) :]
    return bytes(b)


def payload(r: random.Random, seed: Callable[[random.Random], dict[str, Any]]) -> tuple[bytes, bool]:
    """(input, whether it was left valid)."""
    obj = seed(r)
    k = r.random()
    if k < 0.15:
        return encode(r, obj), True
    if k < 0.6:
        return encode(r, mutate_obj(r, obj)), False
    if k < 0.95:
        return mutate_bytes(r, encode(r, obj)), False
    return mutate_bytes(r, encode(r, mutate_obj(r, obj))), False


def text(r: random.Random, valid: str) -> str:
    """A mutated string of the kind that arrives in a topic, a path or a query string: any
    Unicode (the MQTT client and the HTTP server decode UTF-8 strictly or with replacement
    characters, so no lone surrogates), NUL characters included."""
    k = r.random()
    if k < 0.3:
        return valid
    if k < 0.8:
        return mutate_bytes(r, valid.encode()).decode("utf-8", "replace")
    v = r.choice(NASTY)
    return v if isinstance(v, str) else str(v)


# ---------------------------------------------------------------------------------------------
# Targets: each takes (random, tally) and checks one input. An exception is a crash.


class Broken(AssertionError):
    """A parser answered, but the answer breaks a promise (not a crash of the parser)."""


@dataclass
class Tally:
    inputs: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    per_target: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    crash_count: int = 0
    hangs: list[str] = field(default_factory=list)
    slowest_ms: float = 0.0
    slowest: str = ""


_DEVICE_RE = __import__("re").compile(DEVICE_ID_PATTERN)


def _mqtt_topic(r: random.Random) -> str:
    k = r.random()
    if k < 0.7:
        return topics.device_events("dev-1")
    return text(r, topics.device_events(r.choice(["dev-1", "dev-2", "", "+", "#", "a/b"])))


def _check_event(raw: bytes, topic_device: str | None, ingress: Ingress, tally: Tally, target: str) -> None:
    result = parse_event(raw, topic_device_id=topic_device)
    if isinstance(result, Rejection):
        if not isinstance(result.reason, RejectReason) or not result.detail:
            raise Broken(f"a rejection without a reason: {result!r}")
        tally.rejected[f"{target}:{result.reason.value}"] += 1
        # The dead-letter record, as the gateway writes it and the recorder stores it.
        rec = RejectedInput(
            reason=result.reason,
            detail=result.detail,
            received_at=NOW,
            ingress=ingress,
            gateway_id="fuzz",
            topic=topic_device,
            device_id=result.device_id,
            event_id=result.event_id,
            payload=raw[:8192].decode("utf-8", errors="replace"),
            payload_bytes=len(raw),
        )
        back = msgspec.json.decode(msgspec.json.encode(rec), type=RejectedInput)
        for t in (back.detail, back.device_id, back.event_id, back.topic, back.payload):
            stored = _text(t)
            if stored is not None and "\x00" in stored:
                raise Broken("a dead-letter text Postgres cannot hold")
            if stored is not None:
                stored.encode("utf-8")  # Postgres takes only valid UTF-8
        return
    if result.device_id != topic_device or not _DEVICE_RE.fullmatch(result.device_id):
        raise Broken(f"accepted an event of {result.device_id!r} on the topic of {topic_device!r}")
    if unstorable(result.data) is not None:
        raise Broken("accepted data the store cannot hold")
    orjson.dumps(result.data)  # what the store's jsonb encoder does; raises if it cannot
    offset = clock_offset(result, NOW, ClockLimits())
    acc = AcceptedEvent(event=result, received_at=NOW, ingress=ingress, gateway_id="fuzz", clock_offset_s=offset)  # type: ignore[arg-type]
    msgspec.json.decode(msgspec.json.encode(acc), type=AcceptedEvent)  # the worker reads it back
    tally.accepted += 1


def t_mqtt(r: random.Random, tally: Tally) -> None:
    raw, _ = payload(r, _event)
    topic = _mqtt_topic(r)
    topic_device = topics.device_id_from_events_topic(topic)
    if r.random() < 0.8 and topic_device == "dev-1":
        # Most inputs carry the topic's own device id, so the checks past it are reached too.
        raw = raw.replace(b'"device_id":"d"', b'"device_id":"dev-1"', 1)
    _check_event(raw, topic_device, Ingress.MQTT, tally, "mqtt")


def t_http(r: random.Random, tally: Tally) -> None:
    user = text(r, "dev-1")
    password = text(r, "s3cret-pw")
    k = r.random()
    if k < 0.6:
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogatepass")).decode()
    elif k < 0.8:
        header = "Basic " + text(r, base64.b64encode(b"dev-1:pw").decode())
    else:
        header = text(r, "Bearer abc")
    creds = parse_basic(header)
    if creds is None:
        tally.rejected["http:unauthenticated"] += 1
        return
    if not _DEVICE_RE.fullmatch(creds[0]) or len(creds[0]) > 64:
        raise Broken(f"credentials of a user that cannot be a device: {creds[0]!r}")
    path_device = creds[0] if r.random() < 0.9 else text(r, creds[0])
    if path_device != creds[0]:
        tally.rejected["http:forbidden"] += 1
        return
    raw, _ = payload(r, _event)
    raw = raw.replace(b'"device_id":"d"', b'"device_id":"' + path_device.encode("utf-8", "replace") + b'"', 1)
    _check_event(raw, path_device, Ingress.HTTP, tally, "http")


def t_api(r: random.Random, tally: Tally) -> None:
    name = r.choice(list(API_SEEDS))
    decoder, seed = API_SEEDS[name]
    raw, _ = payload(r, seed)
    try:
        decode_body(raw, decoder)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        if not str(exc):
            raise Broken("a refusal without a reason") from exc
        tally.rejected["api:invalid_body"] += 1
        return
    tally.accepted += 1


def _check_time(value: datetime | None) -> None:
    if value is None:
        return
    # What the handlers do with it: a week back, ten seconds of overlap, to UTC for Postgres.
    value - timedelta(days=7)
    value - live.CATCH_UP_OVERLAP
    value.astimezone(UTC)


def t_query(r: random.Random, tally: Tally) -> None:
    k = r.random()
    try:
        if k < 0.4:
            parse_int("limit", text(r, str(r.randrange(-5, 3000))), 200, lo=1, hi=1000)
        else:
            valid = (NOW + timedelta(days=r.randrange(-3000, 3000))).isoformat()
            _check_time(parse_time(r.choice(["from", "to", "since"]), text(r, valid), None))
    except web.HTTPUnprocessableEntity as exc:
        if not exc.text:
            raise Broken("a 422 without a reason") from exc
        tally.rejected["query:422"] += 1
        return
    tally.accepted += 1


def t_ws(r: random.Random, tally: Tally) -> None:
    raw, _ = payload(r, _update)
    update = live.decode_update(raw)
    if update is None:
        tally.rejected["ws:skipped"] += 1
        return
    tally.accepted += 1


def t_officer(r: random.Random, tally: Tally) -> None:
    topic = text(r, "pingan/v1/officers/go-990102001001001/actions")
    officer_from_topic(topic)
    raw, _ = payload(r, _app_action)
    parsed = parse_action(raw)
    if isinstance(parsed, ActionResult):
        if parsed.ok or not parsed.code or not parsed.message:
            raise Broken(f"a refusal without a reason: {parsed!r}")
        tally.rejected[f"officer:{parsed.code}"] += 1
        return
    tally.accepted += 1


TARGETS: dict[str, tuple[Callable[[random.Random, Tally], None], int]] = {
    "mqtt": (t_mqtt, 35),
    "http": (t_http, 15),
    "api": (t_api, 20),
    "query": (t_query, 10),
    "ws": (t_ws, 10),
    "officer": (t_officer, 10),
}


# ---------------------------------------------------------------------------------------------


def run(
    inputs: int,
    *,
    seed: int = 1,
    hang_ms: float = 2000.0,
    progress: Callable[[str], None] | None = None,
    beat: list[float] | None = None,
) -> Tally:
    tally = Tally()
    schedule = [name for name, (_, weight) in TARGETS.items() for _ in range(weight)]
    started = time.monotonic()
    report_every = max(1, inputs // 20)
    for i in range(inputs):
        r = random.Random(seed * 1_000_003 + i)  # each input reproducible on its own (--only)
        name = schedule[i % len(schedule)]
        fn = TARGETS[name][0]
        t0 = time.perf_counter()
        try:
            fn(r, tally)
        except Exception as exc:  # noqa: BLE001 - a crash is what we are looking for
            tally.crash_count += 1
            if len(tally.crashes) < 20:
                tally.crashes.append(f"input {i} ({name}, --seed {seed}): {exc!r}"[:600])
        ms = (time.perf_counter() - t0) * 1000
        if ms > tally.slowest_ms:
            tally.slowest_ms, tally.slowest = ms, f"input {i} ({name})"
        if ms > hang_ms and len(tally.hangs) < 20:
            tally.hangs.append(f"input {i} ({name}): {ms:.0f} ms")
        tally.inputs += 1
        tally.per_target[name] += 1
        if beat is not None and i % 1000 == 0:
            beat[0] = time.monotonic()
        if progress is not None and (i + 1) % report_every == 0:
            elapsed = time.monotonic() - started
            progress(
                f"fuzz: {i + 1:,}/{inputs:,} inputs  {(i + 1) / elapsed:,.0f}/s  accepted {tally.accepted:,}  "
                f"rejected {sum(tally.rejected.values()):,}  crashes {tally.crash_count}  "
                f"slowest {tally.slowest_ms:.1f} ms"
            )
    return tally


def summary(tally: Tally, elapsed: float) -> str:
    lines = [
        f"fuzz summary: {tally.inputs:,} inputs in {elapsed:.1f} s ({tally.inputs / max(elapsed, 1e-9):,.0f}/s)",
        f"  per target: {', '.join(f'{k} {v:,}' for k, v in sorted(tally.per_target.items()))}",
        f"  accepted: {tally.accepted:,}",
        f"  rejected: {sum(tally.rejected.values()):,}",
    ]
    for reason, n in sorted(tally.rejected.items()):
        lines.append(f"    {reason:<28} {n:>10,}")
    lines += [
        f"  crashes: {tally.crash_count}",
        *(f"    {c}" for c in tally.crashes),
        f"  hangs: {len(tally.hangs)}",
        *(f"    {h}" for h in tally.hangs),
        f"  slowest input: {tally.slowest_ms:.1f} ms ({tally.slowest})",
    ]
    return "\n".join(lines)


def _watchdog(limit_s: float, beat: list[float]) -> None:
    """A real hang (a parser that never returns) ends the run with a non-zero exit."""
    while True:
        time.sleep(1.0)
        if time.monotonic() - beat[0] > limit_s:
            print(f"fuzz: no progress for {limit_s:.0f} s: a hang", file=sys.stderr, flush=True)
            os._exit(3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m chaos.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hang-ms", type=float, default=2000.0, help="an input slower than this is a hang")
    args = ap.parse_args(argv)
    beat = [time.monotonic()]

    def progress(line: str) -> None:
        print(line, flush=True)

    threading.Thread(target=_watchdog, args=(max(60.0, args.hang_ms / 10), beat), daemon=True).start()
    print(f"fuzz: {args.inputs:,} inputs, seed {args.seed}, targets {', '.join(TARGETS)}", flush=True)
    t0 = time.monotonic()
    tally = run(args.inputs, seed=args.seed, hang_ms=args.hang_ms, progress=progress, beat=beat)
    print(summary(tally, time.monotonic() - t0), flush=True)
    return 1 if tally.crash_count or tally.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
