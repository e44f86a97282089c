"""When a benchmark step counts as held (bench/run.py held)."""

from __future__ import annotations

from typing import Any

from bench.run import heartbeats_held_by, held


def step(
    *, acked: int = 100, notified: int = 100, joined: int = 0, p99: float = 500.0, lost: int = 0
) -> dict[str, Any]:
    return {
        "rate": 100.0,
        "achieved_rate": 100.0,
        "publish_errors": 0,
        "sent": acked,
        "acked_by_broker": acked,
        "lost": lost,
        "drain_s": 0.1,
        "joined_open_incident": joined,
        "press_to_notification_ms": {"n": notified, "p99": p99},
    }


def test_every_press_paged_under_a_second_is_held() -> None:
    assert held(step())


def test_a_press_that_joined_an_open_incident_awaits_no_page_of_its_own() -> None:
    # Its device's incident was still open (the officer had not closed it yet): it joined it,
    # and the officer paged for the incident is not paged again.
    assert held(step(notified=99, joined=1))


def test_a_page_missing_a_lost_press_or_a_slow_p99_is_not_held() -> None:
    assert not held(step(notified=99))
    assert not held(step(lost=1))
    assert not held(step(p99=1000.0))


def hb_step(*, achieved: float = 20000.0, drain_s: float = 0.2, lost: int = 0) -> dict[str, Any]:
    return {
        "achieved_rate": achieved,
        "publish_errors": 0,
        "sent": 400000,
        "acked_by_broker": 400000,
        "lost": lost,
        "drain_s": drain_s,
    }


def test_heartbeats_are_held_only_when_the_backlog_drains_within_a_tenth_of_the_step() -> None:
    assert heartbeats_held_by(hb_step(drain_s=2.0), 20000, 20)
    assert not heartbeats_held_by(hb_step(drain_s=3.6), 20000, 20)  # a queue that grew by a fifth
    assert not heartbeats_held_by(hb_step(drain_s=-1), 20000, 20)  # never drained
    assert not heartbeats_held_by(hb_step(achieved=18000), 20000, 20)
    assert not heartbeats_held_by(hb_step(lost=1), 20000, 20)
