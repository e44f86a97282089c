"""Officer app actions over MQTT: `pingan/v1/officers/{officer_id}/actions` in, the result on
`pingan/v1/officers/{officer_id}/results`.

The broker's ACL lets an officer publish only on their own actions topic, so the topic names
the actor. Each action is applied in one transaction with its (officer_id, action_id) key, so
a redelivered message takes effect once; the PUBACK follows the commit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import structlog

from core import db, kafka
from core.errors import NotFound
from core.incident_model import IllegalAction
from core.incident_service import IncidentService
from core.lifecycle import Component
from core.mqtt import MqttClient, MqttMessage
from core.officer_actions import Forbidden, load_officer, parse_incident_id, perform
from core.pg_errors import is_transient
from core.platform_mqtt import platform_client
from core.settings import Settings
from core.timeutil import utcnow
from schemas import topics
from schemas.actions import ActionResult, OfficerAppAction

log = structlog.get_logger(__name__)

ACTIONS_FILTER = topics.MQTT_ROOT + "/officers/+/actions"
_decoder = msgspec.json.Decoder(OfficerAppAction)


def officer_from_topic(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) == 5 and parts[:3] == ["pingan", "v1", "officers"] and parts[4] == "actions" and parts[3]:
        return parts[3]
    return None


def parse_action(payload: bytes) -> OfficerAppAction | ActionResult:
    """An officer app's message as an action, or the refusal to answer with. Never raises."""
    try:
        return _decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return ActionResult(ok=False, code="invalid_body", message=str(exc)[:500])
    except UnicodeDecodeError as exc:
        return ActionResult(ok=False, code="invalid_body", message=f"not valid UTF-8: byte {exc.start}")
    except RecursionError:
        return ActionResult(ok=False, code="invalid_body", message="JSON nested too deeply")


class OfficerActionsGateway(Component):
    name = "officer-actions"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any]) -> None:
        super().__init__()
        self.settings = settings
        self.pool = pool
        self.service = IncidentService(kafka.topics(settings))
        self.ready = asyncio.Event()

    async def run(self) -> None:
        mqtt = platform_client(
            self.settings,
            client_id=f"pingan-actions-{self.settings.instance_id}",
            name="actions.mqtt",
            persistent=True,
            manual_ack=True,
        )
        await mqtt.start()
        try:
            group = self.settings.mqtt_shared_group and self.settings.mqtt_shared_group + "-actions"
            await mqtt.subscribe(topics.shared(ACTIONS_FILTER, group), qos=1)
            self.ready.set()
            log.info("officer actions gateway ready")
            messages = mqtt.messages().__aiter__()
            while not self.stopping:
                nxt = asyncio.ensure_future(messages.__anext__())
                stop = asyncio.ensure_future(self._stop.wait())
                done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if nxt not in done:
                    nxt.cancel()
                    break
                await self._handle(mqtt, nxt.result())
        finally:
            await mqtt.stop()

    async def _handle(self, mqtt: MqttClient, msg: MqttMessage) -> None:
        officer_id = officer_from_topic(msg.topic)
        result: ActionResult
        if officer_id is None:
            mqtt.ack(msg)
            return
        parsed = parse_action(msg.payload)
        if isinstance(parsed, ActionResult):
            result = parsed
        else:
            result = await self._apply(officer_id, parsed)
        mqtt.ack(msg)  # the result is durable (or the input was refused): the broker may forget it
        try:
            await mqtt.publish(f"{topics.MQTT_ROOT}/officers/{officer_id}/results", msgspec.json.encode(result), qos=1)
        except Exception as exc:  # noqa: BLE001 - the app can ask again; the action stands
            log.warning("action result not delivered", officer_id=officer_id, error=repr(exc))

    async def _apply(self, officer_id: str, req: OfficerAppAction) -> ActionResult:
        delay = 0.1
        while True:
            try:
                return await self._apply_once(officer_id, req)
            except asyncpg.DataError as exc:
                # A value Postgres cannot hold (a NUL character in a text): the input's fault.
                return ActionResult(
                    ok=False,
                    action_id=req.action_id,
                    incident_id=req.incident_id,
                    code="invalid_body",
                    message=str(exc),
                )
            except Exception as exc:
                if not is_transient(exc) or self.stopping:
                    log.exception("officer action failed", officer_id=officer_id, action_id=req.action_id)
                    return ActionResult(ok=False, action_id=req.action_id, code="internal", message="internal error")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _apply_once(self, officer_id: str, req: OfficerAppAction) -> ActionResult:
        async with db.transaction(self.pool) as conn:
            previous = await conn.fetchval(
                "SELECT result FROM officer_app_actions WHERE officer_id = $1 AND action_id = $2",
                officer_id,
                req.action_id,
            )
            if previous is not None:
                return msgspec.convert(previous, ActionResult)
            officer = await load_officer(conn, officer_id)
            try:
                if officer is None:
                    raise Forbidden(f"{officer_id} is not an active officer")
                incident_id = parse_incident_id(req.incident_id)
                async with conn.transaction():  # a savepoint: a refused action leaves no trace but its answer
                    state = await perform(conn, self.service, officer, incident_id, req, utcnow())
                result = ActionResult(
                    ok=True,
                    action_id=req.action_id,
                    incident_id=req.incident_id,
                    status=state.status,
                    level=state.level,
                )
            except (NotFound, Forbidden) as exc:
                code = "not_found" if isinstance(exc, NotFound) else "forbidden"
                result = ActionResult(
                    ok=False, action_id=req.action_id, incident_id=req.incident_id, code=code, message=str(exc)
                )
            except IllegalAction as exc:
                result = ActionResult(
                    ok=False, action_id=req.action_id, incident_id=req.incident_id, code=exc.code, message=exc.message
                )
            if officer is not None:
                await conn.execute(
                    "INSERT INTO officer_app_actions (officer_id, action_id, incident_id, action, result) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    officer_id,
                    req.action_id,
                    req.incident_id,
                    req.action,
                    msgspec.to_builtins(result),
                )
            log.info("officer app action", officer_id=officer_id, action=req.action, ok=result.ok, code=result.code)
            return result
