"""SQL of the duty desk: incident rows as the queue shows them, scoped to a jurisdiction."""

from __future__ import annotations

INCIDENT_ROW = """
SELECT i.incident_id, i.case_number, i.category, i.status, i.priority, i.level, i.awaiting,
       i.deadline_at, i.due_at, i.device_id, d.kind AS device_kind, d.address, d.resident_note,
       d.building, i.grid_code, g.name AS grid_name, g.name_en AS grid_name_en, i.event_type,
       i.event_count, i.pressed_at, i.received_at, i.opened_at, i.first_notified_at,
       i.acknowledged_at, i.acknowledged_by, i.ack_level, i.on_scene_at, i.on_scene_by,
       i.closed_at, i.closed_by, i.outcome, i.referral, i.assigned_to, i.is_major, i.major_id,
       i.updated_at, i.version
  FROM incidents i
  JOIN units g ON g.code = i.grid_code
  LEFT JOIN devices d ON d.device_id = i.device_id
"""

# $1: the officer's unit (jurisdiction). Open incidents by priority, then age (oldest first).
LIST_OPEN = (
    INCIDENT_ROW
    + """
 WHERE $1 = ANY(g.path) AND i.closed_at IS NULL AND ($2::text IS NULL OR $2 = ANY(g.path))
 ORDER BY i.priority, i.opened_at
 LIMIT $3 OFFSET $4
"""
)

LIST_CLOSED = (
    INCIDENT_ROW
    + """
 WHERE $1 = ANY(g.path) AND i.closed_at IS NOT NULL AND ($2::text IS NULL OR $2 = ANY(g.path))
 ORDER BY i.closed_at DESC
 LIMIT $3 OFFSET $4
"""
)

CHANGED_SINCE = (
    INCIDENT_ROW
    + """
 WHERE $1 = ANY(g.path) AND i.updated_at > $2
 ORDER BY i.updated_at
 LIMIT $3
"""
)

ONE = INCIDENT_ROW + " WHERE i.incident_id = $1"

ONE_WITH_PATH = """
SELECT g.path FROM incidents i JOIN units g ON g.code = i.grid_code WHERE i.incident_id = $1
"""
