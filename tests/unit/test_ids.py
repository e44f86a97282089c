"""Incident ids are UUIDs of version 7: they sort by the time they were made (core/ids.py)."""

from __future__ import annotations

import time
import uuid

from core.ids import new_incident_id


def _millis(u: uuid.UUID) -> int:
    return u.int >> 80  # the first 48 bits: Unix time in milliseconds


def test_an_incident_id_is_a_version_7_uuid_of_now() -> None:
    before = int(time.time() * 1000)
    u = new_incident_id()
    after = int(time.time() * 1000)
    assert isinstance(u, uuid.UUID)
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert before <= _millis(u) <= after


def test_ids_made_later_sort_after() -> None:
    first = [new_incident_id() for _ in range(50)]
    time.sleep(0.003)
    later = [new_incident_id() for _ in range(50)]
    assert max(first) < min(later)
    assert len(set(first + later)) == 100
