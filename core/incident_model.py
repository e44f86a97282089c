"""The incident lifecycle as an explicit state machine: pure, no I/O.

Every change to an incident is `apply(state, action, now)`, which returns the new state and
the effects to carry out (who to notify and why, which receipt the device gets, what goes on
the timeline), or raises `IllegalAction` with a stable code. The escalation timer's step is
the action `Tick`, which does something only when a deadline has passed, so a late or
repeated tick is harmless.

Two clocks run on an open incident (`awaiting`):
- 'ack': the officers of the current level must acknowledge by `deadline_at`; reminders go
  out every `remind_s` before that; when the deadline passes the next level up is notified.
- 'arrival': after an acknowledgement somebody must report on scene by `deadline_at`;
  when that passes, escalation resumes one level up (which must acknowledge again).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

LEVELS: Final = ("grid", "community", "street", "district", "city")
LEVEL_WHO: Final = {
    "grid": "the grid officer",
    "community": "the community centre",
    "street": "the street centre",
    "district": "the district centre",
    "city": "the city centre",
}
OPEN_STATES: Final = frozenset({"opened", "notified", "acknowledged", "on_scene"})
CLOSED_STATES: Final = frozenset({"resolved", "cancelled", "false_alarm", "referred"})
STATES: Final = OPEN_STATES | CLOSED_STATES
OUTCOMES: Final = ("resolved", "false_alarm", "referred")
REFERRALS: Final = {"110": "police", "119": "fire service", "120": "ambulance"}


class IllegalAction(Exception):
    """The action is not allowed in the incident's current state (HTTP 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class LevelPolicy:
    level: str
    ack_s: int
    arrive_s: int
    remind_s: int | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level!r}")
        if self.ack_s <= 0 or self.arrive_s <= 0:
            raise ValueError("deadlines must be positive")
        if self.remind_s is not None and self.remind_s <= 0:
            raise ValueError("reminder interval must be positive")


@dataclass(frozen=True, slots=True)
class Policy:
    priority: int
    levels: tuple[LevelPolicy, ...]
    cancel_grace_s: int = 120
    source: str = "default"  # which unit's policy this is, or "default"

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a policy needs at least one level")
        names = [lp.level for lp in self.levels]
        if names != list(LEVELS[: len(names)]):
            raise ValueError(f"levels must climb from the grid in order, got {names}")

    @property
    def top(self) -> int:
        return len(self.levels) - 1

    def to_json(self) -> dict[str, Any]:
        return {
            "priority": self.priority,
            "cancel_grace_s": self.cancel_grace_s,
            "source": self.source,
            "levels": [
                {"level": lp.level, "ack_s": lp.ack_s, "arrive_s": lp.arrive_s, "remind_s": lp.remind_s}
                for lp in self.levels
            ],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Policy:
        return cls(
            priority=int(obj["priority"]),
            cancel_grace_s=int(obj.get("cancel_grace_s", 120)),
            source=str(obj.get("source", "default")),
            levels=tuple(
                LevelPolicy(
                    level=str(lv["level"]),
                    ack_s=int(lv["ack_s"]),
                    arrive_s=int(lv["arrive_s"]),
                    remind_s=None if lv.get("remind_s") is None else int(lv["remind_s"]),
                )
                for lv in obj["levels"]
            ),
        )


def _levels(ack: tuple[int, ...], arrive: int, remind: int | None) -> tuple[LevelPolicy, ...]:
    return tuple(LevelPolicy(level=LEVELS[i], ack_s=a, arrive_s=arrive, remind_s=remind) for i, a in enumerate(ack))


DEFAULT_POLICIES: Final = {
    # fire, gas, fall, panic, medical: a minute at the grid, then up every minute or two
    1: Policy(1, _levels((60, 60, 90, 120, 120), arrive=600, remind=20)),
    # intrusion
    2: Policy(2, _levels((180, 180, 300, 300, 300), arrive=1200, remind=60)),
    # tamper: maintenance work, never paged like an alarm; reaches the community at most
    3: Policy(3, _levels((4 * 3600, 8 * 3600), arrive=24 * 3600, remind=None), cancel_grace_s=0),
    # faults, low battery
    4: Policy(4, _levels((24 * 3600, 48 * 3600), arrive=72 * 3600, remind=None), cancel_grace_s=0),
    5: Policy(5, _levels((24 * 3600,), arrive=72 * 3600, remind=None), cancel_grace_s=0),
}


# ---------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class IncidentState:
    status: str
    policy: Policy
    pressed_at: datetime
    opened_at: datetime
    level_index: int = 0
    awaiting: str = "ack"
    deadline_at: datetime | None = None
    remind_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    ack_level: str | None = None
    on_scene_at: datetime | None = None
    on_scene_by: str | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    outcome: str | None = None
    referral: str | None = None
    assigned_to: str | None = None
    version: int = 1

    @property
    def level(self) -> str:
        return LEVELS[self.level_index]

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES

    @property
    def due_at(self) -> datetime | None:
        times = [t for t in (self.deadline_at, self.remind_at) if t is not None]
        return min(times) if times else None


def open_incident(policy: Policy, *, pressed_at: datetime, now: datetime, level_index: int = 0) -> IncidentState:
    """A new incident: the officers of `level_index` (normally the grid) must acknowledge."""
    level_index = min(level_index, policy.top)
    lp = policy.levels[level_index]
    return IncidentState(
        status="opened",
        policy=policy,
        pressed_at=pressed_at,
        opened_at=now,
        level_index=level_index,
        awaiting="ack",
        deadline_at=now + timedelta(seconds=lp.ack_s),
        remind_at=_next_reminder(lp, now, now + timedelta(seconds=lp.ack_s)),
    )


def _next_reminder(lp: LevelPolicy, now: datetime, deadline: datetime) -> datetime | None:
    if lp.remind_s is None:
        return None
    at = now + timedelta(seconds=lp.remind_s)
    return at if at < deadline else None


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Acknowledge:
    actor: str
    actor_level: int  # level index of the actor's unit


@dataclass(frozen=True, slots=True)
class OnScene:
    actor: str
    actor_level: int


@dataclass(frozen=True, slots=True)
class Resolve:
    actor: str
    outcome: str = "resolved"
    referral: str | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    """The resident's own cancel (alarm.cancel from the device)."""

    actor: str


@dataclass(frozen=True, slots=True)
class Note:
    actor: str
    text: str


@dataclass(frozen=True, slots=True)
class TakeOver:
    actor: str
    actor_level: int


@dataclass(frozen=True, slots=True)
class Assign:
    actor: str
    assignee: str
    assignee_level: int


@dataclass(frozen=True, slots=True)
class NotificationSent:
    pass


@dataclass(frozen=True, slots=True)
class NobodyOnDuty:
    """Nobody is on shift at `level_index`: escalate at once instead of waiting."""

    level_index: int


@dataclass(frozen=True, slots=True)
class Tick:
    pass


Action = Acknowledge | OnScene | Resolve | Cancel | Note | TakeOver | Assign | NotificationSent | NobodyOnDuty | Tick
OFFICER_ACTIONS: Final = ("acknowledge", "on_scene", "resolve", "note", "take_over", "assign")


# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class NotifyLevel:
    """Notify the on-duty officers of the unit at `level_index` on the incident's path."""

    level_index: int
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class NotifyOfficer:
    officer_id: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class TellNotified:
    """Tell every officer already notified of this incident (except `exclude`)."""

    kind: str
    reason: str
    below_level: int | None = None  # only those of levels below this index
    exclude: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceReceipt:
    status: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    kind: str
    actor: str
    detail: dict[str, Any] = field(default_factory=dict)


Effect = NotifyLevel | NotifyOfficer | TellNotified | DeviceReceipt | TimelineEntry


# ---------------------------------------------------------------- transitions


def _bump(state: IncidentState, **changes: Any) -> IncidentState:
    return replace(state, version=state.version + 1, **changes)


def _require_open(state: IncidentState, action: str) -> None:
    if not state.is_open:
        raise IllegalAction("incident_closed", f"cannot {action}: the incident is {state.status}")


def apply(state: IncidentState, action: Action, now: datetime) -> tuple[IncidentState, list[Effect]]:
    """The new state and its effects, or IllegalAction. Never mutates `state`."""
    match action:
        case Tick():
            return _tick(state, now)
        case NotificationSent():
            if state.status == "opened":
                return _bump(state, status="notified"), []
            return state, []
        case NobodyOnDuty(level_index=li):
            if not state.is_open or state.awaiting == "none" or li != state.level_index:
                return state, []
            return _escalate(state, now, f"nobody on duty at {LEVEL_WHO[state.level]}", kind="escalated")
        case Acknowledge():
            return _acknowledge(state, action, now)
        case OnScene():
            return _on_scene(state, action, now)
        case Resolve():
            return _resolve(state, action, now)
        case Cancel():
            return _cancel(state, action, now)
        case Note(actor=actor, text=text):
            if not text.strip():
                raise IllegalAction("empty_note", "a note needs some text")
            return _bump(state), [TimelineEntry("note", actor, {"text": text})]
        case TakeOver():
            return _take_over(state, action, now)
        case Assign():
            return _assign(state, action, now)
    raise IllegalAction("unknown_action", f"unknown action {action!r}")  # pragma: no cover


def _arrival_clock(state: IncidentState, now: datetime) -> dict[str, Any]:
    lp = state.policy.levels[state.level_index]
    return {"awaiting": "arrival", "deadline_at": now + timedelta(seconds=lp.arrive_s), "remind_at": None}


def _acknowledge(state: IncidentState, a: Acknowledge, now: datetime) -> tuple[IncidentState, list[Effect]]:
    _require_open(state, "acknowledge")
    if not (state.status in ("opened", "notified") or (state.status == "acknowledged" and state.awaiting == "ack")):
        raise IllegalAction("already_acknowledged", f"the incident is already {state.status}")
    first = state.acknowledged_at is None
    new = _bump(
        state,
        status="acknowledged",
        acknowledged_at=state.acknowledged_at or now,
        acknowledged_by=a.actor if first else state.acknowledged_by,
        ack_level=LEVELS[min(a.actor_level, 4)] if first else state.ack_level,
        **_arrival_clock(state, now),
    )
    effects: list[Effect] = [
        TimelineEntry("acknowledged", a.actor, {"level": state.level, "actor_level": LEVELS[min(a.actor_level, 4)]}),
        TellNotified("acknowledged", f"acknowledged by {a.actor}", exclude=a.actor),
    ]
    if first:
        effects.append(DeviceReceipt("acknowledged"))
    return new, effects


def _on_scene(state: IncidentState, a: OnScene, now: datetime) -> tuple[IncidentState, list[Effect]]:
    _require_open(state, "report on scene")
    if state.status == "on_scene":
        raise IllegalAction("already_on_scene", "somebody is already on scene")
    new = _bump(
        state,
        status="on_scene",
        acknowledged_at=state.acknowledged_at or now,
        acknowledged_by=state.acknowledged_by or a.actor,
        ack_level=state.ack_level or LEVELS[min(a.actor_level, 4)],
        on_scene_at=now,
        on_scene_by=a.actor,
        awaiting="none",
        deadline_at=None,
        remind_at=None,
    )
    return new, [
        TimelineEntry("on_scene", a.actor, {}),
        TellNotified("on_scene", f"{a.actor} is on scene", exclude=a.actor),
        DeviceReceipt("on_scene"),
    ]


def _resolve(state: IncidentState, a: Resolve, now: datetime) -> tuple[IncidentState, list[Effect]]:
    _require_open(state, "resolve")
    if a.outcome not in OUTCOMES:
        raise IllegalAction("bad_outcome", f"outcome must be one of {', '.join(OUTCOMES)}")
    if a.outcome == "referred" and a.referral not in REFERRALS:
        raise IllegalAction("bad_referral", "a referral names 110 (police), 119 (fire) or 120 (ambulance)")
    if a.outcome != "referred" and a.referral is not None:
        raise IllegalAction("bad_referral", "only a referred incident names a referral")
    new = _bump(
        state,
        status=a.outcome,
        outcome=a.outcome,
        referral=a.referral,
        closed_at=now,
        closed_by=a.actor,
        awaiting="none",
        deadline_at=None,
        remind_at=None,
    )
    detail: dict[str, Any] = {"outcome": a.outcome}
    if a.referral:
        detail["referral"] = a.referral
        detail["referred_to"] = REFERRALS[a.referral]
    if a.note:
        detail["note"] = a.note
    words = {"resolved": "resolved", "false_alarm": "closed as a false alarm", "referred": "referred"}[a.outcome]
    if a.referral:
        words += f" to {a.referral} ({REFERRALS[a.referral]})"
    return new, [
        TimelineEntry("closed", a.actor, detail),
        TellNotified("closed", f"{words} by {a.actor}", exclude=a.actor),
        DeviceReceipt("resolved", detail=a.outcome),
    ]


def _cancel(state: IncidentState, a: Cancel, now: datetime) -> tuple[IncidentState, list[Effect]]:
    _require_open(state, "cancel")
    grace = state.policy.cancel_grace_s
    if state.status == "on_scene":
        raise IllegalAction("officer_on_scene", "an officer is on scene; only the officer can close it")
    if now - state.pressed_at > timedelta(seconds=grace):
        raise IllegalAction("grace_period_over", f"a cancel must come within {grace} s of the press; the alarm stands")
    new = _bump(
        state,
        status="cancelled",
        outcome="cancelled",
        closed_at=now,
        closed_by=a.actor,
        awaiting="none",
        deadline_at=None,
        remind_at=None,
    )
    return new, [
        TimelineEntry("cancelled", a.actor, {"grace_s": grace}),
        TellNotified("cancelled", f"cancelled by the resident within {grace} s of the press"),
        DeviceReceipt("cancelled"),
    ]


def _take_over(state: IncidentState, a: TakeOver, now: datetime) -> tuple[IncidentState, list[Effect]]:
    _require_open(state, "take over")
    if a.actor_level <= 0:
        raise IllegalAction("not_a_centre", "only a command centre above the grid can take over")
    if a.actor_level < state.level_index:
        raise IllegalAction(
            "below_current_level", f"the incident is already at {state.level}; a lower centre cannot take it"
        )
    level_index = min(a.actor_level, state.policy.top)
    changes: dict[str, Any] = {"level_index": level_index, "assigned_to": a.actor}
    if state.status in ("opened", "notified") or (state.status == "acknowledged" and state.awaiting == "ack"):
        first = state.acknowledged_at is None
        changes.update(
            status="acknowledged",
            acknowledged_at=state.acknowledged_at or now,
            acknowledged_by=a.actor if first else state.acknowledged_by,
            ack_level=LEVELS[min(a.actor_level, 4)] if first else state.ack_level,
        )
        lp = state.policy.levels[level_index]
        changes.update(awaiting="arrival", deadline_at=now + timedelta(seconds=lp.arrive_s), remind_at=None)
    new = _bump(state, **changes)
    effects: list[Effect] = [
        TimelineEntry("taken_over", a.actor, {"from_level": state.level, "to_level": LEVELS[level_index]}),
        TellNotified("taken_over", f"taken over by {a.actor} ({LEVEL_WHO[LEVELS[level_index]]})", exclude=a.actor),
    ]
    if state.acknowledged_at is None:
        effects.append(DeviceReceipt("acknowledged"))
    return new, effects


def _assign(state: IncidentState, a: Assign, now: datetime) -> tuple[IncidentState, list[Effect]]:
    _require_open(state, "assign")
    if a.assignee == state.assigned_to:
        raise IllegalAction("already_assigned", f"the incident is already assigned to {a.assignee}")
    new = _bump(state, assigned_to=a.assignee)
    return new, [
        TimelineEntry("assigned", a.actor, {"assignee": a.assignee}),
        NotifyOfficer(a.assignee, "assigned", f"assigned to you by {a.actor}"),
    ]


def _tick(state: IncidentState, now: datetime) -> tuple[IncidentState, list[Effect]]:
    if not state.is_open or state.awaiting == "none":
        return state, []
    lp = state.policy.levels[state.level_index]
    if state.deadline_at is not None and state.deadline_at <= now:
        if state.awaiting == "ack":
            reason = f"not acknowledged by {LEVEL_WHO[state.level]} within {lp.ack_s} s"
        else:
            reason = f"nobody reported on scene within {lp.arrive_s} s of the acknowledgement"
        return _escalate(state, now, reason, kind="escalated")
    if state.remind_at is not None and state.remind_at <= now:
        waited = (
            int((now - (state.deadline_at - timedelta(seconds=lp.ack_s))).total_seconds()) if state.deadline_at else 0
        )
        new = _bump(state, remind_at=_next_reminder(lp, now, state.deadline_at or now))
        return new, [
            NotifyLevel(state.level_index, "reminder", f"reminder: not acknowledged after {waited} s"),
            TimelineEntry("reminded", "system:timer", {"level": state.level, "due_at": _iso(state.remind_at)}),
        ]
    return state, []


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _escalate(state: IncidentState, now: datetime, reason: str, *, kind: str) -> tuple[IncidentState, list[Effect]]:
    """Move to the next level up (or, at the top, page the top level again) and restart the
    acknowledgement clock there."""
    at_top = state.level_index >= state.policy.top
    new_index = state.level_index if at_top else state.level_index + 1
    lp = state.policy.levels[new_index]
    deadline = now + timedelta(seconds=lp.ack_s)
    new = _bump(
        state,
        level_index=new_index,
        awaiting="ack",
        deadline_at=deadline,
        remind_at=_next_reminder(lp, now, deadline),
    )
    effects: list[Effect] = [
        TimelineEntry(
            "escalated" if not at_top else "repaged",
            "system:timer",
            {
                "from_level": state.level,
                "to_level": LEVELS[new_index],
                "reason": reason,
                # the deadline acted on: the record says how late the escalation came
                "due_at": _iso(state.deadline_at if state.deadline_at and state.deadline_at <= now else None),
            },
        ),
        NotifyLevel(new_index, kind if not at_top else "reminder", reason),
    ]
    if not at_top:
        effects.append(
            TellNotified("moved_on", f"escalated to {LEVEL_WHO[LEVELS[new_index]]}: {reason}", below_level=new_index)
        )
    return new, effects
