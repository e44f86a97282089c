"""Asyncio MQTT 5 client on paho-mqtt 2.x with manual acknowledgements.

Why not aiomqtt: it does not expose paho's ``manual_ack``, and the gateway must
send the broker's PUBACK for a device's message only once the event is safe in
Kafka. This is a small client that drives paho from the asyncio event loop (no
paho network thread), the way aiomqtt does:

* the TCP connection is opened with asyncio (``loop.sock_connect``) and handed
  to paho, so connecting never blocks the event loop;
* ``on_socket_open`` -> ``loop.add_reader(sock, client.loop_read)``;
  ``on_socket_register_write``/``unregister_write`` -> add/remove writer with
  ``client.loop_write``; ``on_socket_close`` -> remove reader;
* a named task calls ``client.loop_misc()`` every second (keepalive/PINGREQ);
* a named task reconnects with capped exponential backoff and jitter.

All paho callbacks therefore run in the event loop thread and resolve plain
asyncio futures.

Delivery semantics worth knowing:

* ``publish()`` with QoS 1/2 returns when the broker's PUBACK/PUBCOMP arrives.
  While the connection is down paho keeps the message and re-sends it (DUP)
  after the reconnect; the future resolves when that resend is acknowledged.
  If ``publish()`` times out, the message stays in paho's queue and may still
  be delivered later (at-least-once: the caller may retry and create a
  duplicate).
* With ``manual_ack=True`` the application must call :meth:`MqttClient.ack`
  for every QoS 1/2 message. Unacknowledged messages are redelivered by the
  broker after a reconnect (persistent session: ``clean_start=False`` and
  ``session_expiry > 0``). They come back with the DUP flag and the same
  packet id; an ``ack()`` of the copy from the old connection is ignored (the
  client tracks message objects, not packet ids). ``receive_maximum`` (MQTT 5
  Receive Maximum, default 65535) caps how many unacknowledged messages the
  broker sends before it waits for our acks. (Mosquitto 2.0 does not keep to it
  once it has queued messages for us: it then gives packet ids again while
  they are unacknowledged, and ``ack()`` sends one PUBACK per message.)
* ``message_queue_size > 0`` is a soft bound on received-but-not-consumed
  messages: when reached, the client stops reading the socket (TCP back
  pressure) until the consumer catches up. A consumer stalled for longer than
  the keepalive makes the connection time out and reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import paho.mqtt.client as paho
import paho.mqtt.matcher as paho_matcher
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core import paho_tables

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

__all__ = [
    "MqttClient",
    "MqttConnectError",
    "MqttError",
    "MqttMessage",
    "MqttNotConnected",
    "MqttPublishError",
    "MqttSubscribeError",
    "Properties",
    "Will",
]

log = structlog.get_logger(__name__)

# paho's per-packet objects share their constant tables (see core/paho_tables.py).
paho_tables.share()

_BACKOFF_INITIAL: Final = 0.1
_BACKOFF_MAX: Final = 5.0
_MISC_INTERVAL: Final = 1.0
_DISCONNECT_TIMEOUT: Final = 5.0
_DROP_READ_LIMIT: Final = 256

# CONNACK reason codes for which retrying with the same configuration is pointless.
_CONNACK_NOT_RETRIABLE: Final = frozenset(
    {
        0x81,  # malformed packet
        0x82,  # protocol error
        0x84,  # unsupported protocol version
        0x85,  # client identifier not valid
        0x86,  # bad user name or password
        0x87,  # not authorized
        0x8A,  # banned
        0x8C,  # bad authentication method
        0x90,  # topic name invalid (will topic)
        0x95,  # packet too large
        0x99,  # payload format invalid
        0x9A,  # retain not supported
        0x9B,  # QoS not supported
    }
)
# PUBACK/PUBREC reason codes that are transient.
_PUBLISH_RETRIABLE: Final = frozenset({0x97})  # quota exceeded

_State = Literal["new", "running", "stopping", "stopped"]


# --------------------------------------------------------------------------- types


@dataclass(slots=True)
class MqttMessage:
    """A message received from the broker. (Not frozen: a frozen dataclass sets each field
    through object.__setattr__, and one of these is made per message received; nothing
    changes one after it is made.)"""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    properties: Properties | None
    received_monotonic: float
    dup: bool = False
    """DUP flag: the broker is re-sending it (e.g. unacknowledged before a reconnect)."""


@dataclass(frozen=True, slots=True)
class Will:
    """Last will, published by the broker when the connection drops without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttError(Exception):
    """Base class of MQTT errors. ``retriable`` says whether trying again may help."""

    retriable: bool = True

    def __init__(self, message: str, *, retriable: bool | None = None, reason_code: int | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable
        self.reason_code: int | None = reason_code


class MqttConnectError(MqttError):
    """The connection could not be established or the broker refused it (CONNACK).

    ``reason_code`` is the CONNACK reason code, or None for network failures.
    Not retriable for e.g. bad user name or password (0x86) or not authorized (0x87).
    """


class MqttPublishError(MqttError):
    """The broker answered a QoS 1/2 PUBLISH with a failure reason code (>= 0x80)."""

    retriable = False

    def __init__(self, message: str, *, reason_code: int) -> None:
        super().__init__(message, reason_code=reason_code, retriable=reason_code in _PUBLISH_RETRIABLE)
        self.reason_code: int = reason_code


class MqttSubscribeError(MqttError):
    """The broker refused a subscription (SUBACK reason code >= 0x80)."""

    retriable = False


class MqttNotConnected(MqttError):
    """The client is not connected (or not running any more)."""


# --------------------------------------------------------------------------- paho glue


class _PahoClient(paho.Client):
    """paho client whose TCP connection is opened by asyncio before ``reconnect()``.

    paho's own ``_create_socket`` uses a blocking ``socket.create_connection``;
    overriding it keeps the event loop responsive while the broker is slow or
    unreachable.
    """

    def __init__(self, *, client_id: str, manual_ack: bool) -> None:
        super().__init__(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=manual_ack,
        )
        self.preconnected_socket: socket.socket | None = None
        # Called with each QoS 1 PUBLISH without properties read whole from the buffer, instead
        # of paho's handling and on_message (see _packet_read).
        self.on_plain_publish: Callable[[PlainPublish], None] | None = None
        # We never register per-topic callbacks (message_callback_add), yet paho walks its
        # topic matcher for every message received: at a few thousand messages a second that
        # walk was the gateway's largest cost. An empty matcher that matches nothing.
        if not isinstance(getattr(self, "_on_message_filtered", None), paho_matcher.MQTTMatcher):
            raise RuntimeError("paho-mqtt changed: Client._on_message_filtered is not a topic matcher any more")
        self._on_message_filtered = _NoTopicCallbacks()
        if not isinstance(getattr(self, "_out_messages", None), dict) or not isinstance(
            getattr(self, "_inflight_messages", None), int
        ):
            raise RuntimeError("paho-mqtt changed: Client._out_messages / _inflight_messages are not what they were")
        if not all(hasattr(self, a) for a in ("_on_message", "_userdata", "_handle_on_message")):
            raise RuntimeError("paho-mqtt changed: Client._on_message / _userdata / _handle_on_message are gone")
        if not isinstance(getattr(self, "_in_packet", None), dict) or not hasattr(self, "_last_bytes_received"):
            raise RuntimeError("paho-mqtt changed: Client._in_packet / _last_bytes_received are gone")

    def _update_inflight(self) -> MQTTErrorCode:
        # paho calls this on every PUBACK (with a window set) and walks all its unacknowledged
        # messages to find queued ones to send: the walk was 3 % of the worker process at
        # 1,000 alarms/s (py-spy), and finds nothing unless more were published than the window
        # holds. QoS 0 messages are never stored, so when every stored message is counted in
        # flight none is queued.
        if len(self._out_messages) <= self._inflight_messages:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._update_inflight()

    def set_publish_window(self, window: int) -> None:
        """The window of the open connection, set at its CONNACK, before paho sends anything on
        it. (paho's setter refuses while connected, for a doubt about a change from or to 0,
        unlimited: paho counts what is in flight either way, and recounts at each connection.)"""
        self._max_inflight_messages = window

    def message_callback_add(self, sub: str, callback: Any) -> None:
        raise NotImplementedError("per-topic callbacks are not supported: use messages()")

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        # paho's own decodes the topic, asks the (empty) matcher for callbacks and takes two
        # locks for each message; with no per-topic callbacks and one thread, the message goes
        # straight to on_message (MqttClient._on_message: it decodes the topic itself, and no
        # exception leaves it).
        on_message = self._on_message
        if on_message is not None:
            on_message(self, self._userdata, message)

    def _packet_read(self) -> MQTTErrorCode:
        # paho reads a packet in four calls to the socket and a dozen steps of its state machine,
        # builds a Properties and an MQTTMessage and formats a debug line for it: for a device's
        # QoS 1 event that was most of the gateway's reading (py-spy at 20,000 heartbeats/s).
        # A QoS 1 PUBLISH without properties that is whole in the read buffer is taken here;
        # anything else (other packets, properties, a packet still arriving) is paho's.
        sock = self._sock
        plain = self.on_plain_publish
        if plain is not None and type(sock) is ReadBufferedSocket and self._in_packet["command"] == 0:
            publish = sock.take_plain_publish()
            if publish is not None:
                self._last_bytes_received = time.monotonic()  # paho's keepalive clock (time_func)
                plain(publish)
                if self._manual_ack:
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                return self._send_puback(publish.mid)  # as paho's _handle_publish does
        return super()._packet_read()

    def _create_socket(self) -> SocketLike:
        sock = self.preconnected_socket
        if sock is None:
            raise MqttConnectError("internal error: no pre-connected socket", retriable=True)
        self.preconnected_socket = None
        return ReadBufferedSocket(sock)


class PlainPublish:
    """A QoS 1 PUBLISH without properties, as paho's MQTTMessage shows one to on_message."""

    __slots__ = ("_topic", "dup", "mid", "payload", "retain")
    qos = 1
    properties = None

    def __init__(self, topic: bytes, payload: bytes, mid: int, dup: bool, retain: bool) -> None:
        self._topic = topic
        self.payload = payload
        self.mid = mid
        self.dup = dup
        self.retain = retain

    @property
    def topic(self) -> str:
        return self._topic.decode("utf-8")  # UnicodeDecodeError, as paho's


class ReadBufferedSocket:
    """The broker's socket as paho sees it, read through a buffer.

    paho reads a packet in three calls at least: recv(1) for its type, recv(1) per byte of its
    length, then recv(n) for the rest; each was a system call (5 % of the gateway's CPU at 5,000
    heartbeats/s, py-spy). Here one recv of up to 64 KiB serves them all. What is left in the
    buffer after paho's loop_read is not seen by the event loop's reader (the kernel has no more
    to say): MqttClient reads it itself (see ``_on_readable`` and ``_resume_reading``)."""

    __slots__ = ("_buf", "_pos", "raw")

    READ_SIZE = 65536

    def __init__(self, raw: socket.socket) -> None:
        self.raw = raw
        self._buf = b""
        self._pos = 0

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def recv(self, bufsize: int) -> bytes:
        if self._pos < len(self._buf):
            end = min(self._pos + bufsize, len(self._buf))
            out = self._buf[self._pos : end]
            if end == len(self._buf):
                self._buf, self._pos = b"", 0
            else:
                self._pos = end
            return out
        data = self.raw.recv(max(bufsize, self.READ_SIZE))  # BlockingIOError, b"" at EOF: as paho expects
        if len(data) <= bufsize:
            return data
        self._buf, self._pos = data, bufsize
        return data[:bufsize]

    def take_plain_publish(self) -> PlainPublish | None:
        """The next packet, if it is a QoS 1 PUBLISH without properties (MQTT 5) that is whole in
        the buffer: taken out of it. Anything else: None, and nothing taken (paho reads it, and
        finds what is wrong with it, if anything)."""
        buf, pos = self._buf, self._pos
        n = len(buf)
        if n - pos < 2 or buf[pos] & 0xF6 != 0x32:  # PUBLISH, QoS 1 (DUP and RETAIN either way)
            return None
        first = buf[pos]
        length, shift, i = 0, 0, pos + 1
        while True:  # the remaining length: at most four bytes
            if i >= n or i - pos > 4:
                return None
            b = buf[i]
            i += 1
            length |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        end = i + length
        if end > n or length < 5:
            return None
        topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
        if topic_end + 3 > end or buf[topic_end + 2] != 0:  # no room for the packet id, or properties
            return None
        mid = (buf[topic_end] << 8) | buf[topic_end + 1]
        if mid == 0:
            return None
        publish = PlainPublish(
            buf[i + 2 : topic_end], buf[topic_end + 3 : end], mid, bool(first & 0x08), bool(first & 0x01)
        )
        if end == n:
            self._buf, self._pos = b"", 0
        else:
            self._pos = end
        return publish

    def send(self, buffer: bytes | bytearray) -> int:
        return self.raw.send(buffer)

    def close(self) -> None:
        self._buf, self._pos = b"", 0
        self.raw.close()

    def fileno(self) -> int:
        return self.raw.fileno()

    def setblocking(self, flag: bool) -> None:
        self.raw.setblocking(flag)


def _raw(sock: SocketLike | None) -> SocketLike | None:
    """The socket under a ReadBufferedSocket (for socket options and shutdown)."""
    return sock.raw if isinstance(sock, ReadBufferedSocket) else sock


class _NoTopicCallbacks(paho_matcher.MQTTMatcher):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def iter_match(self, topic: str) -> Any:
        return ()


@dataclass(slots=True)
class _PendingPublish:
    future: asyncio.Future[None]
    qos: int
    topic: str


class _MessageIterator:
    """Async iterator over received messages; cancellation safe (``wait_for(anext(it))``)."""

    __slots__ = ("_client",)

    def __init__(self, client: MqttClient) -> None:
        self._client = client

    def __aiter__(self) -> _MessageIterator:
        return self

    async def __anext__(self) -> MqttMessage:
        return await self._client._next_message()


def _rc_value(reason_code: ReasonCode | int) -> int:
    return reason_code.value if isinstance(reason_code, ReasonCode) else int(reason_code)


# --------------------------------------------------------------------------- client


class MqttClient:
    """Asyncio MQTT 5 client. See the module docstring."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None,
        password: str | None,
        clean_start: bool = True,
        session_expiry: int = 0,
        manual_ack: bool = False,
        keepalive: int = 30,
        will: Will | None = None,
        reconnect: bool = True,
        max_inflight: int = 100,
        message_queue_size: int = 0,
        name: str = "mqtt",
        receive_maximum: int | None = None,
    ) -> None:
        if not clean_start and not client_id:
            raise ValueError("a client_id is required when clean_start is False")
        if session_expiry < 0:
            raise ValueError("session_expiry must be >= 0")
        if keepalive < 0:
            raise ValueError("keepalive must be >= 0")
        if max_inflight < 0:
            raise ValueError("max_inflight must be >= 0 (0 = unlimited)")
        if message_queue_size < 0:
            raise ValueError("message_queue_size must be >= 0 (0 = unlimited)")
        if will is not None and will.qos not in (0, 1, 2):
            raise ValueError("will qos must be 0, 1 or 2")
        if receive_maximum is not None and not 1 <= receive_maximum <= 65535:
            raise ValueError("receive_maximum must be between 1 and 65535")

        self._host = host
        self._port = port
        self._client_id = client_id
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._manual_ack = manual_ack
        self._keepalive = keepalive
        self._reconnect = reconnect
        self._max_inflight = max_inflight
        self._message_queue_size = message_queue_size
        self._receive_maximum = receive_maximum
        self._name = name
        self._logger: structlog.typing.FilteringBoundLogger = log.bind(mqtt=name, client_id=client_id)

        client = _PahoClient(client_id=client_id, manual_ack=manual_ack)
        client.max_inflight_messages_set(max_inflight)
        # Unlimited: QoS>0 publishes made while disconnected are kept and sent
        # after the reconnect; callers bound the wait with their own timeout.
        client.max_queued_messages_set(0)
        if username is not None:
            client.username_pw_set(username, password)
        if will is not None:
            client.will_set(will.topic, will.payload, will.qos, will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_plain_publish = self._on_plain_publish
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._client = client

        self._loop: asyncio.AbstractEventLoop | None = None
        self._state: _State = "new"
        self._connected = False
        self._session_present = False
        self._connect_timeout = 10.0
        self._connack: asyncio.Future[None] | None = None
        self._pending: dict[int, _PendingPublish] = {}
        self._sub_pending: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._resub_pending: dict[int, list[str]] = {}
        self._subscriptions: dict[str, int] = {}
        self._unacked: dict[int, MqttMessage] = {}
        # Older unacknowledged messages whose packet id the broker gave again (see ack()).
        self._shadowed: dict[int, list[MqttMessage]] = {}
        self._shadowed_count = 0
        self.packet_ids_reused = 0
        self._state_waiters: set[asyncio.Future[None]] = set()
        self._close_waiters: set[asyncio.Future[None]] = set()
        self._queue: asyncio.Queue[MqttMessage | None] = asyncio.Queue()
        self._reading_paused = False
        self._write_scheduled = False
        self._watching_write = False
        self._misc_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss of that connection."""
        return self._connected

    @property
    def session_present(self) -> bool:
        """The CONNACK "session present" flag of the current/last connection."""
        return self._session_present

    @property
    def client_id(self) -> str:
        return self._client_id

    async def __aenter__(self) -> MqttClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 10.0) -> None:
        """Connect and wait for the CONNACK.

        Raises MqttConnectError when the connection fails or the broker refuses
        it, TimeoutError when no CONNACK arrives in time (the client can then
        be started again) and RuntimeError when already started or stopped.
        """
        if self._state != "new":
            raise RuntimeError(f"MqttClient {self._name!r} already started (state {self._state})")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._state = "running"
        self._connect_timeout = timeout
        properties: Properties | None = None
        if self._session_expiry > 0 or self._receive_maximum is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self._session_expiry > 0:
                properties.SessionExpiryInterval = self._session_expiry
            if self._receive_maximum is not None:
                # How many unacknowledged QoS 1/2 messages the broker may send us.
                properties.ReceiveMaximum = self._receive_maximum
        self._client.connect_async(
            self._host,
            self._port,
            keepalive=self._keepalive,
            clean_start=self._clean_start,
            properties=properties,
        )
        self._misc_task = loop.create_task(self._misc_loop(), name=f"{self._name}-mqtt-misc")
        try:
            await self._connect_once(timeout)
        except BaseException:
            self._drop_socket()
            self._connected = False
            misc_task, self._misc_task = self._misc_task, None
            await _cancel_and_wait(misc_task)
            if self._state == "running":  # not stopped meanwhile: start() may be retried
                self._state = "new"
            raise
        self._logger.info(
            "mqtt.started",
            host=self._host,
            port=self._port,
            session_present=self._session_present,
        )

    async def stop(self, *, clean: bool = True) -> None:
        """Disconnect and stop the background tasks. Idempotent; safe before start().

        ``clean=True`` sends DISCONNECT (the broker discards the will);
        ``clean=False`` just drops the TCP connection, so the broker publishes
        the will - used to simulate a crash.
        """
        if self._state in ("stopping", "stopped"):
            return
        if self._state == "new":
            self._state = "stopped"
            self._queue.put_nowait(None)
            return
        self._state = "stopping"
        self._notify_state()
        reconnect_task, self._reconnect_task = self._reconnect_task, None
        await _cancel_and_wait(reconnect_task)
        if clean and self._connected and self._client.socket() is not None:
            loop = asyncio.get_running_loop()
            closed: asyncio.Future[None] = loop.create_future()
            self._close_waiters.add(closed)
            try:
                self._client.disconnect()
                self._flush()
                if self._client.socket() is not None:
                    async with asyncio.timeout(_DISCONNECT_TIMEOUT):
                        await closed
            except TimeoutError:
                self._logger.warning("mqtt.disconnect_timeout", timeout=_DISCONNECT_TIMEOUT)
            finally:
                self._close_waiters.discard(closed)
        self._drop_socket()
        self._connected = False
        misc_task, self._misc_task = self._misc_task, None
        await _cancel_and_wait(misc_task)
        self._fail_pending("MQTT client stopped", qos0_only=False)
        self._fail_subscribe_waiters("MQTT client stopped")
        self._unacked.clear()
        self._shadowed.clear()
        self._shadowed_count = 0
        self._state = "stopped"
        self._queue.put_nowait(None)
        self._notify_state()
        self._logger.info("mqtt.stopped", clean=clean)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected; MqttNotConnected if the client stops, TimeoutError on timeout."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not self._connected:
                if self._state in ("stopping", "stopped"):
                    raise MqttNotConnected("MQTT client stopped")
                if self._connection_given_up():
                    raise MqttNotConnected("connection lost and reconnect is disabled")
                waiter: asyncio.Future[None] = loop.create_future()
                self._state_waiters.add(waiter)
                try:
                    await waiter
                finally:
                    self._state_waiters.discard(waiter)

    async def subscribe(self, topic: str, qos: int = 1, *, timeout: float | None = 30.0) -> int:
        """Subscribe and return the granted reason code (the granted QoS).

        Raises MqttSubscribeError if the broker refuses (reason code >= 0x80).
        The subscription is remembered and renewed after every reconnect. If
        the connection is down, waits for the reconnect.
        """
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        async with asyncio.timeout(timeout):
            while True:
                self._ensure_running()
                await self.wait_connected()
                loop = asyncio.get_running_loop()
                rc, mid = self._client.subscribe(topic, qos=qos)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                    if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                        continue
                    raise MqttError(f"subscribe to {topic!r} failed: {paho.error_string(rc)}")
                fut: asyncio.Future[list[ReasonCode]] = loop.create_future()
                self._sub_pending[mid] = fut
                self._flush()
                try:
                    reason_codes = await fut
                except MqttNotConnected:
                    if self._state != "running":
                        raise
                    continue  # connection dropped before SUBACK: subscribe again
                finally:
                    if self._sub_pending.get(mid) is fut:
                        del self._sub_pending[mid]
                granted = _rc_value(reason_codes[0]) if reason_codes else 0x80
                if granted >= 0x80:
                    self._logger.error("mqtt.subscribe_refused", topic=topic, reason_code=granted)
                    reason = reason_codes[0] if reason_codes else "?"
                    raise MqttSubscribeError(
                        f"subscription to {topic!r} refused: {reason} (0x{granted:02x})",
                        reason_code=granted,
                    )
                self._subscriptions[topic] = qos
                self._logger.info("mqtt.subscribed", topic=topic, qos=qos, granted=granted)
                return granted

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        """Publish and wait: QoS 0 until written to the socket, QoS 1/2 until PUBACK/PUBCOMP.

        Raises MqttPublishError when the broker answers with a reason code >=
        0x80 (e.g. 135 not authorized), TimeoutError after ``timeout``. While
        disconnected, waits for the reconnect (see the module docstring).
        """
        async with asyncio.timeout(timeout):
            if qos == 0 and not self._connected:
                self._ensure_running()
                await self.wait_connected()
            await self.publish_nowait(topic, payload, qos, retain, properties)

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> asyncio.Future[None]:
        """Queue a publish and return a future resolved like :meth:`publish` (no timeout).

        Raises MqttNotConnected right away if the client is not running, or for
        QoS 0 when not connected (QoS 0 messages are not queued).
        """
        self._ensure_running()
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        if qos == 0 and not self._connected:
            raise MqttNotConnected("not connected; QoS 0 publish not queued")
        if self._connection_given_up():
            raise MqttNotConnected("connection lost and reconnect is disabled")
        loop = self._loop
        assert loop is not None
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        rc = info.rc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not (qos > 0 and rc == MQTTErrorCode.MQTT_ERR_NO_CONN):
            if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                raise MqttNotConnected("not connected; QoS 0 publish not queued")
            raise MqttError(f"publish to {topic!r} failed: {paho.error_string(rc)}")
        mid = info.mid
        fut: asyncio.Future[None] = loop.create_future()
        previous = self._pending.get(mid)
        if previous is not None and not previous.future.done():
            previous.future.set_exception(
                MqttError(f"message id {mid} reused before the publish to {previous.topic!r} was acknowledged")
            )
        self._pending[mid] = _PendingPublish(fut, qos, topic)
        fut.add_done_callback(lambda f: self._forget_pending(mid, f))
        self._flush_soon()
        return fut

    def messages(self) -> AsyncIterator[MqttMessage]:
        """Async iterator over received messages in arrival order.

        Ends after :meth:`stop` once the queued messages are consumed.
        ``async for msg in client.messages(): ...``
        """
        return _MessageIterator(self)

    def received_nowait(self, limit: int) -> list[MqttMessage]:
        """Up to `limit` messages already received, in arrival order, without waiting (for a
        consumer that handles what has arrived as one batch after `messages()` gave it one)."""
        out: list[MqttMessage] = []
        while len(out) < limit and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:  # stopping: leave the end marker for the iterators
                self._queue.put_nowait(None)
                break
            out.append(item)
        if out and self._reading_paused and self._queue.qsize() < self._message_queue_size:
            self._resume_reading()
        return out

    def ack(self, message: MqttMessage) -> None:
        """Send the PUBACK (QoS 1) / PUBCOMP (QoS 2) for a message (manual_ack only).

        No-op for QoS 0 and when manual_ack is False. If the message came from
        an earlier connection, nothing is sent: the broker redelivers it anyway.

        A broker may give a packet id again while the message that had it is
        still unacknowledged (Mosquitto 2.0 does, to a client with more than
        65,535 messages in flight). Each of those messages gets its own PUBACK:
        the broker forgets the oldest with that id at each one, so acks must go
        in the order the messages arrived, as MQTT asks anyway (4.6).
        """
        if not self._manual_ack or message.qos == 0:
            return
        mid = message.mid
        if self._unacked.get(mid) is message:
            del self._unacked[mid]
        elif not self._unshadow(message):
            self._logger.debug("mqtt.ack_stale", mid=mid, topic=message.topic, connected=self._connected)
            return
        if message.qos == 1:
            _queue_puback(self._client, mid)
        else:
            rc = self._client.ack(mid, message.qos)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._logger.debug("mqtt.ack_not_sent", mid=mid, rc=paho.error_string(rc))
                return
        self._flush_soon()

    # ------------------------------------------------------------------ internals

    def _packet_id_reused(self, older: MqttMessage) -> None:
        self._shadowed.setdefault(older.mid, []).append(older)
        self._shadowed_count += 1
        self.packet_ids_reused += 1
        if self.packet_ids_reused % 1000 == 1:
            self._logger.warning(
                "mqtt.packet_id_reused_while_unacknowledged",
                mid=older.mid,
                times=self.packet_ids_reused,
                unacknowledged=len(self._unacked) + self._shadowed_count,
            )

    def _unshadow(self, message: MqttMessage) -> bool:
        older = self._shadowed.get(message.mid)
        if not older:
            return False
        for i, m in enumerate(older):
            if m is message:
                del older[i]
                self._shadowed_count -= 1
                if not older:
                    del self._shadowed[message.mid]
                return True
        return False

    def _connection_given_up(self) -> bool:
        return self._state == "running" and not self._reconnect and not self._connected and self._connack is None

    def _ensure_running(self) -> None:
        if self._state != "running":
            raise MqttNotConnected(f"MQTT client {self._name!r} is not running ({self._state})")

    def _flush(self) -> None:
        """Write queued packets now instead of waiting for the writer callback."""
        if self._client.socket() is not None and self._client.want_write():
            self._client.loop_write()

    def _flush_soon(self) -> None:
        """Write queued packets on this loop iteration's next turn: the publishes and acks a
        handler queues together (a batch's PUBACKs and receipts) go out in one send()."""
        if self._loop is not None and not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_or_watch)

    def _notify_state(self) -> None:
        for waiter in self._state_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _forget_pending(self, mid: int, fut: asyncio.Future[None]) -> None:
        pending = self._pending.get(mid)
        if pending is not None and pending.future is fut:
            del self._pending[mid]

    def _fail_pending(self, reason: str, *, qos0_only: bool) -> None:
        for mid, pending in list(self._pending.items()):
            if qos0_only and pending.qos > 0:
                continue
            del self._pending[mid]
            if not pending.future.done():
                pending.future.set_exception(MqttNotConnected(f"publish to {pending.topic!r} not confirmed: {reason}"))

    def _fail_subscribe_waiters(self, reason: str) -> None:
        waiters = list(self._sub_pending.values())
        self._sub_pending.clear()
        self._resub_pending.clear()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(MqttNotConnected(reason))

    async def _next_message(self) -> MqttMessage:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # let every other iterator finish too
            raise StopAsyncIteration
        if self._reading_paused and self._queue.qsize() < self._message_queue_size:
            self._resume_reading()
        return item

    def _resume_reading(self) -> None:
        self._reading_paused = False
        sock = self._client.socket()
        if sock is not None and self._loop is not None:
            self._loop.add_reader(sock, self._on_readable)
            if isinstance(sock, ReadBufferedSocket) and sock.buffered():
                self._loop.call_soon(self._on_readable)  # read while paused, not yet handled

    async def _open_socket(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        candidates: list[tuple[int, tuple[Any, ...]]]
        try:
            ip = ipaddress.ip_address(self._host)
        except ValueError:
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
            candidates = [(info[0], info[4]) for info in infos]
        else:
            ip_family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            candidates = [(ip_family, (self._host, self._port))]
        last_exc: OSError | None = None
        for family, address in candidates:
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                last_exc = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise MqttConnectError(f"cannot connect to {self._host}:{self._port}: {last_exc}", retriable=True) from last_exc

    async def _connect_once(self, timeout: float) -> None:
        """Open a connection, send CONNECT and wait for a successful CONNACK."""
        loop = asyncio.get_running_loop()
        connack: asyncio.Future[None] = loop.create_future()
        self._connack = connack
        try:
            async with asyncio.timeout(timeout):
                sock = await self._open_socket()
                self._client.preconnected_socket = sock
                try:
                    rc = self._client.reconnect()
                finally:
                    unused = self._client.preconnected_socket
                    self._client.preconnected_socket = None
                    if unused is not None:
                        unused.close()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise MqttConnectError(f"sending CONNECT failed: {paho.error_string(rc)}", retriable=True)
                self._flush()
                await connack
        except BaseException:
            if not self._connected:
                self._drop_socket()
            raise
        finally:
            self._connack = None
            if connack.done() and not connack.cancelled():
                connack.exception()  # mark retrieved
            else:
                connack.cancel()

    def _drop_socket(self) -> None:
        """Close the connection without DISCONNECT (the broker will publish the will).

        Uses only public paho API: shut the socket down, then let loop_read()
        see EOF so paho closes the socket and runs on_disconnect itself.
        Never call this from inside a paho callback.
        """
        sock = _raw(self._client.socket())
        if sock is None:
            return
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _ in range(_DROP_READ_LIMIT):
            if self._client.socket() is None:
                return
            self._client.loop_read()
        self._logger.error("mqtt.drop_socket_failed")

    def _ensure_reconnect_task(self) -> None:
        if self._loop is None or self._state != "running" or not self._reconnect:
            return
        if self._reconnect_task is not None and not self._reconnect_task.done():
            return
        self._reconnect_task = self._loop.create_task(self._reconnect_loop(), name=f"{self._name}-mqtt-reconnect")

    async def _reconnect_loop(self) -> None:
        delay = _BACKOFF_INITIAL
        attempt = 0
        try:
            while self._state == "running" and not self._connected:
                attempt += 1
                wait = delay * random.uniform(0.5, 1.0)
                delay = min(delay * 2, _BACKOFF_MAX)
                await asyncio.sleep(wait)
                if self._state != "running" or self._connected:
                    break
                self._logger.info("mqtt.reconnect_attempt", attempt=attempt, after=round(wait, 3))
                try:
                    await self._connect_once(self._connect_timeout)
                except MqttConnectError as exc:
                    level = self._logger.warning if exc.retriable else self._logger.error
                    level(
                        "mqtt.reconnect_failed",
                        attempt=attempt,
                        error=str(exc),
                        reason_code=exc.reason_code,
                        retriable=exc.retriable,
                    )
                except (MqttError, OSError, TimeoutError) as exc:
                    self._logger.warning("mqtt.reconnect_failed", attempt=attempt, error=repr(exc), retriable=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._logger.exception("mqtt.reconnect_loop_crashed", attempt=attempt)
            raise
        if self._connected:
            self._logger.info("mqtt.reconnected", attempts=attempt, session_present=self._session_present)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(_MISC_INTERVAL)
            try:
                if self._client.socket() is not None:
                    self._client.loop_misc()
            except Exception:
                self._logger.exception("mqtt.loop_misc_failed")

    def _resubscribe(self) -> None:
        if not self._subscriptions:
            return
        # Retain handling 1: retained messages only if the subscription is new
        # (i.e. the broker lost the session), not on every reconnect.
        retain_handling = SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
        topics = [
            (topic, SubscribeOptions(qos=qos, retainHandling=retain_handling))
            for topic, qos in self._subscriptions.items()
        ]
        rc, mid = self._client.subscribe(topics)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            self._logger.error("mqtt.resubscribe_failed", rc=paho.error_string(rc))
            return
        self._resub_pending[mid] = [topic for topic, _ in topics]

    # ------------------------------------------------------------------ paho callbacks
    # They run in the event loop thread, inside paho's (non re-entrant) callback
    # lock: they must not call paho methods that close the socket.

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        try:
            raw = _raw(sock)
            if isinstance(raw, socket.socket):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert self._loop is not None
            self._reading_paused = False
            self._loop.add_reader(sock, self._on_readable)
        except Exception:
            self._logger.exception("mqtt.on_socket_open_failed")

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        try:
            if self._loop is not None:
                self._loop.remove_reader(sock)
                if self._watching_write:
                    self._loop.remove_writer(sock)
            self._watching_write = False
            self._reading_paused = False
            for waiter in self._close_waiters:
                if not waiter.done():
                    waiter.set_result(None)
        except Exception:
            self._logger.exception("mqtt.on_socket_close_failed")

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        # paho asks for a writer whenever it queues a packet, and drops it once written: two
        # epoll changes per message. Instead, write on the next loop iteration (publish and
        # ack have usually flushed by then), and watch the socket only if it is full.
        try:
            if self._loop is not None and not self._write_scheduled:
                self._write_scheduled = True
                self._loop.call_soon(self._write_or_watch)
        except Exception:
            self._logger.exception("mqtt.on_socket_register_write_failed")

    def _write_or_watch(self) -> None:
        self._write_scheduled = False
        sock = self._client.socket()
        if sock is None or self._loop is None:
            return
        try:
            if self._client.want_write():
                _coalesce_out_packets(self._client)
                self._client.loop_write()
            if self._client.want_write() and self._client.socket() is sock and not self._watching_write:
                self._loop.add_writer(sock, self._on_writable)
                self._watching_write = True
        except Exception:
            self._logger.exception("mqtt.loop_write_failed")
            self._drop_socket()

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        try:
            if self._loop is not None and self._watching_write:
                self._loop.remove_writer(sock)
                self._watching_write = False
        except Exception:
            self._logger.exception("mqtt.on_socket_unregister_write_failed")

    def _on_readable(self) -> None:
        try:
            sock = self._client.socket()
            self._client.loop_read()
            # What paho left in the buffer, the event loop will not report: read it now (each
            # round takes at least a byte of it), unless reading is paused for back-pressure.
            while (
                isinstance(sock, ReadBufferedSocket)
                and sock.buffered()
                and not self._reading_paused
                and self._client.socket() is sock
            ):
                self._client.loop_read()
        except Exception:
            self._logger.exception("mqtt.loop_read_failed")
            self._drop_socket()

    def _on_writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception:
            self._logger.exception("mqtt.loop_write_failed")
            self._drop_socket()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            connack = self._connack
            code = _rc_value(reason_code)
            if reason_code.is_failure:
                retriable = code not in _CONNACK_NOT_RETRIABLE
                self._logger.warning(
                    "mqtt.connect_refused",
                    reason=str(reason_code),
                    reason_code=code,
                    retriable=retriable,
                )
                if connack is not None and not connack.done():
                    connack.set_exception(
                        MqttConnectError(
                            f"broker refused the connection: {reason_code} (0x{code:02x})",
                            retriable=retriable,
                            reason_code=code,
                        )
                    )
                return
            self._connected = True
            self._session_present = bool(flags.session_present)
            receive_maximum = getattr(properties, "ReceiveMaximum", None)
            window = self._max_inflight
            if isinstance(receive_maximum, int) and (window == 0 or window > receive_maximum):
                # MQTT 5 (3.3.4): never more unacknowledged QoS 1/2 publishes than the broker's
                # Receive Maximum. paho ignores it: its window is set for this connection.
                window = receive_maximum
            self._client.set_publish_window(window)
            self._logger.info(
                "mqtt.connected",
                session_present=self._session_present,
                receive_maximum=receive_maximum,
            )
            self._resubscribe()
            if connack is not None and not connack.done():
                connack.set_result(None)
            self._notify_state()
        except Exception:
            self._logger.exception("mqtt.on_connect_failed")

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            was_connected = self._connected
            self._connected = False
            self._unacked.clear()
            self._shadowed.clear()
            self._shadowed_count = 0
            connack = self._connack
            if connack is not None and not connack.done():
                connack.set_exception(
                    MqttConnectError(f"connection closed before CONNACK: {reason_code}", retriable=True)
                )
            self._fail_subscribe_waiters("connection lost")
            running = self._state == "running"
            self._fail_pending("connection lost", qos0_only=running and self._reconnect)
            self._notify_state()
            if not running:
                self._logger.debug("mqtt.disconnected", reason=str(reason_code))
                return
            if was_connected:
                self._logger.warning(
                    "mqtt.connection_lost",
                    reason=str(reason_code),
                    from_broker=flags.is_disconnect_packet_from_server,
                    reconnect=self._reconnect,
                )
                self._ensure_reconnect_task()
        except Exception:
            self._logger.exception("mqtt.on_disconnect_failed")

    def _on_plain_publish(self, publish: PlainPublish) -> None:
        self._on_message(self._client, None, publish)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage | PlainPublish) -> None:
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                self._logger.warning("mqtt.invalid_topic_dropped", mid=msg.mid, qos=msg.qos)
                if self._manual_ack and msg.qos > 0:
                    client.ack(msg.mid, msg.qos)
                return
            payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
            message = MqttMessage(
                topic=topic,
                payload=payload,
                qos=msg.qos,
                retain=bool(msg.retain),
                mid=msg.mid,
                properties=msg.properties,
                received_monotonic=time.monotonic(),
                dup=bool(msg.dup),
            )
            if self._manual_ack and msg.qos > 0:
                older = self._unacked.get(msg.mid)
                if older is not None:
                    self._packet_id_reused(older)
                self._unacked[msg.mid] = message
            self._queue.put_nowait(message)
            if (
                self._message_queue_size
                and not self._reading_paused
                and self._queue.qsize() >= self._message_queue_size
            ):
                # Back-pressure: stop reading the socket until the consumer catches up.
                sock = client.socket()
                if sock is not None and self._loop is not None:
                    self._loop.remove_reader(sock)
                    self._reading_paused = True
                    self._logger.debug("mqtt.reading_paused", queued=self._queue.qsize())
        except Exception:
            self._logger.exception("mqtt.on_message_failed", mid=msg.mid)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            pending = self._pending.pop(mid, None)
            if pending is None:
                self._logger.debug("mqtt.publish_ack_unknown_mid", mid=mid, reason=str(reason_code))
                return
            if pending.future.done():
                return
            if reason_code.is_failure:
                code = _rc_value(reason_code)
                self._logger.warning("mqtt.publish_refused", topic=pending.topic, mid=mid, reason_code=code)
                pending.future.set_exception(
                    MqttPublishError(
                        f"broker refused publish to {pending.topic!r}: {reason_code} (0x{code:02x})",
                        reason_code=code,
                    )
                )
            else:
                pending.future.set_result(None)
        except Exception:
            self._logger.exception("mqtt.on_publish_failed", mid=mid)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        try:
            fut = self._sub_pending.pop(mid, None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(list(reason_codes))
                return
            topics = self._resub_pending.pop(mid, None)
            if topics is None:
                self._logger.debug("mqtt.suback_unknown_mid", mid=mid)
                return
            for topic, reason_code in zip(topics, reason_codes, strict=False):
                if reason_code.is_failure:
                    self._logger.error("mqtt.resubscribe_refused", topic=topic, reason=str(reason_code))
                else:
                    self._logger.debug("mqtt.resubscribed", topic=topic, granted=reason_code.value)
        except Exception:
            self._logger.exception("mqtt.on_subscribe_failed", mid=mid)


async def _cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it without swallowing our own cancellation."""
    if task is None:
        return
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled():
        exc = task.exception()
        if exc is not None:
            log.warning("mqtt.background_task_failed", task=task.get_name(), error=repr(exc))


_PUBLISH: Final = 0x30
_DISCONNECT: Final = 0xE0
_PUBACK: Final = 0x40


def _queue_puback(client: paho.Client, mid: int) -> None:
    """Queue a PUBACK as paho's ack() does (the same packet, the same queue entry), without its
    debug log call, struct packing and write-callback round (the caller schedules the write):
    one for every message the gateway takes."""
    packet = b"\x40\x02" + mid.to_bytes(2, "big")
    client._out_packet.append(  # paho has no public API for its write queue
        {"command": _PUBACK, "mid": mid, "qos": 1, "pos": 0, "to_process": 4, "packet": packet, "info": None}
    )


def _coalesce_out_packets(client: paho.Client) -> None:
    """Join the packets paho has queued into one, so they leave in one send() (paho writes
    each packet with a send() of its own: a system call and a wake-up of the broker each).

    Only packets paho does nothing with once written are joined: not a QoS 0 PUBLISH (its
    on_publish fires when written), not a DISCONNECT (the socket closes after it), not one
    already partly written. A QoS 1 PUBLISH is tracked by its message id, not by this queue.
    """
    queue = client._out_packet  # paho has no public API for its write queue
    if len(queue) < 2:
        return
    for p in queue:
        kind = p["command"] & 0xF0
        if p["pos"] or kind == _DISCONNECT or (kind == _PUBLISH and p["qos"] == 0):
            return
    data = b"".join(p["packet"] for p in queue)
    queue.clear()
    queue.append(
        {"command": _PUBACK, "mid": 0, "qos": 0, "pos": 0, "to_process": len(data), "packet": data, "info": None}
    )
