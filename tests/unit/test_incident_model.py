"""Property-based tests of the incident state machine: any sequence of actions and timer ticks
leaves the incident in a legal state, with a consistent timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.incident_model import (
    CLOSED_STATES,
    DEFAULT_POLICIES,
    LEVELS,
    OPEN_STATES,
    Acknowledge,
    Assign,
    Cancel,
    DeviceReceipt,
    IllegalAction,
    IncidentState,
    NobodyOnDuty,
    Note,
    NotificationSent,
    NotifyLevel,
    OnScene,
    Policy,
    Resolve,
    TakeOver,
    Tick,
    TimelineEntry,
    apply,
    open_incident,
)

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
P1 = DEFAULT_POLICIES[1]

officers = st.sampled_from(["go-1", "do-c-1", "do-s-1", "do-d-1", "do-city-1"])
levels = st.integers(0, 4)
actions = st.one_of(
    st.builds(Acknowledge, officers, levels),
    st.builds(OnScene, officers, levels),
    st.builds(
        Resolve,
        officers,
        st.sampled_from(["resolved", "false_alarm", "referred", "bogus"]),
        st.sampled_from([None, "110", "119", "120", "999"]),
    ),
    st.builds(Cancel, st.just("device:d1")),
    st.builds(Note, officers, st.sampled_from(["", "called the resident", "<script>x</script>"])),
    st.builds(TakeOver, officers, levels),
    st.builds(Assign, officers, officers, levels),
    st.just(NotificationSent()),
    st.builds(NobodyOnDuty, levels),
    st.just(Tick()),
)
steps = st.lists(st.tuples(st.integers(0, 400), actions), max_size=40)
policies = st.sampled_from(sorted(DEFAULT_POLICIES.values(), key=lambda p: p.priority))


def check_invariants(s: IncidentState, now: datetime) -> None:
    assert s.status in OPEN_STATES | CLOSED_STATES
    assert 0 <= s.level_index <= s.policy.top
    if s.status in CLOSED_STATES:
        assert s.closed_at is not None and s.outcome is not None and s.closed_by
        assert s.awaiting == "none" and s.deadline_at is None and s.remind_at is None
    else:
        assert s.closed_at is None and s.outcome is None
        # Escalation never stalls: an open incident without somebody on scene has a deadline.
        if s.status == "on_scene":
            assert s.awaiting == "none" and s.due_at is None
        else:
            assert s.awaiting in ("ack", "arrival")
            assert s.deadline_at is not None
            if s.remind_at is not None:
                assert s.remind_at < s.deadline_at
    if s.status in ("acknowledged", "on_scene"):
        assert s.acknowledged_at is not None and s.acknowledged_by and s.ack_level in LEVELS
    if s.awaiting == "arrival":
        assert s.acknowledged_at is not None
    if s.on_scene_at is not None:
        assert s.acknowledged_at is not None and s.acknowledged_at <= s.on_scene_at
    if s.status == "referred":
        assert s.referral in ("110", "119", "120")
    else:
        assert s.referral is None


@settings(max_examples=400, deadline=None)
@given(policy=policies, steps=steps)
def test_any_sequence_keeps_the_incident_legal_and_the_timeline_consistent(policy: Policy, steps) -> None:
    now = T0
    s = open_incident(policy, pressed_at=T0 - timedelta(seconds=1), now=T0)
    check_invariants(s, now)
    timeline: list[TimelineEntry] = []
    receipts: list[str] = []
    for advance, action in steps:
        now += timedelta(seconds=advance)
        before = s
        try:
            s, effects = apply(s, action, now)
        except IllegalAction as exc:
            assert exc.code and exc.message
            assert not isinstance(action, (Tick, NotificationSent, NobodyOnDuty)), "system steps never fail"
            s = before  # a refused action changes nothing (apply is pure)
            continue
        if s is not before:
            assert s.version == before.version + 1
        else:
            assert effects == []
        assert s.level_index >= before.level_index
        if before.status in CLOSED_STATES:
            assert isinstance(action, (Note, Tick, NotificationSent, NobodyOnDuty))
            assert s.status == before.status
        if isinstance(action, Tick) and s.is_open and s.due_at is not None and before.due_at is not None:
            # a tick acts only on what is due, and leaves the next step in the future
            assert (s is before) == (before.due_at > now)
            assert s is before or s.due_at > now
        timeline += [e for e in effects if isinstance(e, TimelineEntry)]
        receipts += [e.status for e in effects if isinstance(e, DeviceReceipt)]
        check_invariants(s, now)

    kinds = [e.kind for e in timeline]
    # Every level climbed is on the timeline, as an escalation or a take-over.
    climbed = sum(1 for e in timeline if e.kind == "escalated") + sum(
        LEVELS.index(e.detail["to_level"]) - LEVELS.index(e.detail["from_level"])
        for e in timeline
        if e.kind == "taken_over"
    )
    assert climbed == s.level_index
    # At most one closing entry, and it is the last state-changing one.
    closing = [k for k in kinds if k in ("closed", "cancelled")]
    assert len(closing) == (1 if s.status in CLOSED_STATES else 0)
    if closing:
        after = kinds[kinds.index(closing[0]) + 1 :]
        assert set(after) <= {"note"}
    # The device hears of the acknowledgement at most once, and of the closing once.
    assert receipts.count("acknowledged") <= 1
    assert receipts.count("resolved") + receipts.count("cancelled") == len(closing)


@settings(max_examples=200, deadline=None)
@given(policy=policies, waits=st.lists(st.integers(1, 4000), min_size=1, max_size=30))
def test_unacknowledged_incident_climbs_and_never_stops_being_paged(policy: Policy, waits) -> None:
    now = T0
    s = open_incident(policy, pressed_at=T0, now=T0)
    paged = 0
    for w in waits:
        now += timedelta(seconds=w)
        while s.due_at is not None and s.due_at <= now:
            due = s.due_at
            s, effects = apply(s, Tick(), now)
            paged += sum(1 for e in effects if isinstance(e, NotifyLevel))
            assert s.due_at is not None and s.due_at > due  # each tick moves the clock on
        # a tick before anything is due does nothing
        same, effects = apply(s, Tick(), now)
        assert same is s and effects == []
    elapsed = (now - T0).total_seconds()
    if elapsed >= policy.levels[0].ack_s:
        assert paged >= 1


def test_p1_climbs_the_levels_at_the_configured_deadlines() -> None:
    s = open_incident(P1, pressed_at=T0, now=T0)
    seen = []
    now = T0
    for _ in range(60):
        assert s.due_at is not None
        now = s.due_at
        s, effects = apply(s, Tick(), now)
        for e in effects:
            if isinstance(e, NotifyLevel) and e.kind == "escalated":
                seen.append((LEVELS[e.level_index], int((now - T0).total_seconds()), e.reason))
        if len(seen) == 4:
            break
    assert [(lv, t) for lv, t, _ in seen] == [
        ("community", 60),
        ("street", 120),
        ("district", 210),
        ("city", 330),
    ]
    assert seen[0][2] == "not acknowledged by the grid officer within 60 s"
    assert seen[1][2] == "not acknowledged by the community centre within 60 s"


def test_reminders_before_the_deadline() -> None:
    s = open_incident(P1, pressed_at=T0, now=T0)
    s, effects = apply(s, Tick(), T0 + timedelta(seconds=20))
    assert [e.kind for e in effects if isinstance(e, NotifyLevel)] == ["reminder"]
    assert s.level_index == 0
    assert s.remind_at == T0 + timedelta(seconds=40)


def test_acknowledgement_stops_one_clock_and_starts_the_arrival_clock() -> None:
    s = open_incident(P1, pressed_at=T0, now=T0)
    s, _ = apply(s, Acknowledge("go-1", 0), T0 + timedelta(seconds=30))
    assert s.status == "acknowledged" and s.awaiting == "arrival"
    assert s.deadline_at == T0 + timedelta(seconds=630) and s.remind_at is None
    s2, effects = apply(s, Tick(), T0 + timedelta(seconds=629))
    assert s2 is s and effects == []
    s, effects = apply(s, Tick(), T0 + timedelta(seconds=630))
    assert s.level_index == 1 and s.awaiting == "ack"
    reasons = [e.reason for e in effects if isinstance(e, NotifyLevel)]
    assert reasons == ["nobody reported on scene within 600 s of the acknowledgement"]
    # The community centre acknowledges: the arrival clock starts again at its level.
    s, _ = apply(s, Acknowledge("do-c-1", 1), T0 + timedelta(seconds=640))
    assert s.awaiting == "arrival" and s.acknowledged_by == "go-1"


def test_cancel_within_grace_and_after() -> None:
    s = open_incident(P1, pressed_at=T0, now=T0)
    done, effects = apply(s, Cancel("device:d1"), T0 + timedelta(seconds=119))
    assert done.status == "cancelled"
    assert any(isinstance(e, DeviceReceipt) and e.status == "cancelled" for e in effects)
    with pytest.raises(IllegalAction) as err:
        apply(s, Cancel("device:d1"), T0 + timedelta(seconds=121))
    assert err.value.code == "grace_period_over"


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (Acknowledge("go-1", 0), "incident_closed"),
        (OnScene("go-1", 0), "incident_closed"),
        (Resolve("go-1"), "incident_closed"),
        (TakeOver("do-c-1", 1), "incident_closed"),
        (Cancel("device:d1"), "incident_closed"),
    ],
)
def test_actions_on_a_closed_incident_are_refused(action, code: str) -> None:
    s = open_incident(P1, pressed_at=T0, now=T0)
    s, _ = apply(s, Resolve("go-1", "false_alarm"), T0)
    with pytest.raises(IllegalAction) as err:
        apply(s, action, T0)
    assert err.value.code == code


def test_policy_round_trips_through_json_and_rejects_bad_shapes() -> None:
    for p in DEFAULT_POLICIES.values():
        assert Policy.from_json(p.to_json()) == p
    with pytest.raises(ValueError):
        Policy.from_json({"priority": 1, "levels": [{"level": "street", "ack_s": 1, "arrive_s": 1}]})
    with pytest.raises(ValueError):
        Policy.from_json({"priority": 1, "levels": [{"level": "grid", "ack_s": 0, "arrive_s": 1}]})
