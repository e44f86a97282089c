"""Identifiers the platform makes: incident ids ordered by the time they were made.

An incident's id is the key of `incidents` and leads the incident's rows in the timeline's
and the notifications' indexes (and each notification's dedupe key). Random ids (version 4)
put every new incident on a page of its own in each of those indexes: after every checkpoint
each such page is written to the WAL whole again the first time it changes, and the pages
worth keeping in memory are all of them. Ids of version 7 (RFC 9562: the time in milliseconds,
then random bits) land at the end of each index, on the few pages recent incidents share. The
database's default (migration 0017, `pingan_uuid7()`) makes the same kind of id for the
incidents opened one by one.
"""

from __future__ import annotations

import uuid

from uuid_utils.compat import uuid7


def new_incident_id() -> uuid.UUID:
    """A new incident id: a version 7 UUID (time-ordered, 74 random bits)."""
    return uuid7()
