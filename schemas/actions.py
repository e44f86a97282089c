"""Officer actions on an incident: the body of `POST /api/v1/incidents/{id}/actions` and of
an officer app's message on `pingan/v1/officers/{officer_id}/actions`."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

ActionName = Literal["acknowledge", "on_scene", "resolve", "note", "take_over", "assign"]
Outcome = Literal["resolved", "false_alarm", "referred"]
Referral = Literal["110", "119", "120"]


class ActionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    action: ActionName
    outcome: Outcome | None = None
    """resolve: resolved, false_alarm or referred (then `referral` names 110, 119 or 120)."""
    referral: Referral | None = None
    text: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    """note: the text; resolve: an optional closing note."""
    assignee: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    """assign: the officer id to assign to."""


class OfficerAppAction(ActionRequest, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Over MQTT the incident and an id for the action travel in the message."""

    incident_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    action_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
    """Unique per officer: a redelivered action takes effect once."""


class ActionResult(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The answer on `pingan/v1/officers/{officer_id}/results` (and the HTTP error body)."""

    ok: bool
    action_id: str | None = None
    incident_id: str | None = None
    status: str | None = None
    level: str | None = None
    code: str | None = None
    message: str | None = None


class SignIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The body of `POST /api/v1/auth/sign-in`."""

    officer_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
