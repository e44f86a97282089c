"""core.mqtt.MqttClient against a real private mosquitto 2.0 broker."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes

from core.mqtt import (
    MqttClient,
    MqttConnectError,
    MqttMessage,
    MqttNotConnected,
    MqttPublishError,
    Properties,
    ReadBufferedSocket,
    Will,
)
from tests.core.mosquitto_fixture import DEFAULT_USERS, MosquittoBroker, running_mosquitto

RECV_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    with running_mosquitto(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker for tests that kill or restart it."""
    with running_mosquitto(tmp_path / "mosquitto") as b:
        yield b


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_client(broker: MosquittoBroker, user: str, **kwargs: Any) -> MqttClient:
    kwargs.setdefault("client_id", uid(user))
    return MqttClient(
        host=broker.host,
        port=broker.port,
        username=user,
        password=kwargs.pop("password", DEFAULT_USERS[user]),
        name=kwargs.pop("name", f"test-{user}"),
        **kwargs,
    )


@pytest.fixture
async def clients() -> AsyncIterator[AsyncExitStack]:
    """Every client entered on this stack is stopped at the end of the test."""
    async with AsyncExitStack() as stack:
        yield stack


async def started(stack: AsyncExitStack, client: MqttClient) -> MqttClient:
    await client.start()
    stack.push_async_callback(client.stop)
    return client


async def next_message(client: MqttClient, within: float = RECV_TIMEOUT) -> MqttMessage:
    return await asyncio.wait_for(anext(client.messages()), within)


async def eventually(predicate: Callable[[], bool], within: float = RECV_TIMEOUT) -> None:
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate()


async def no_message(client: MqttClient, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        msg = await asyncio.wait_for(anext(client.messages()), wait)
        pytest.fail(f"unexpected message {msg}")


# --------------------------------------------------------------------------- basics


async def test_publish_qos1_is_received_and_waits_for_puback(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    sub = await started(clients, make_client(broker, "platform"))
    assert sub.connected
    sock = sub._client.socket()
    assert isinstance(sock, ReadBufferedSocket) and isinstance(sock.raw, socket.socket)
    assert sock.raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert await sub.subscribe("dev/+/events", qos=1) == 1
    pub = await started(clients, make_client(broker, "dev1"))

    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = ("trace", "t-1")
    await pub.publish("dev/dev1/events", b"alarm", qos=1, properties=props)
    msg = await next_message(sub)
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("dev/dev1/events", b"alarm", 1, False)
    assert msg.properties is not None
    assert ("trace", "t-1") in getattr(msg.properties, "UserProperty", [])
    assert msg.received_monotonic <= time.monotonic()

    # The future resolves on the broker's PUBACK, not when the bytes are written:
    # with the broker frozen (SIGSTOP) it stays pending.
    broker.pause()
    try:
        fut = pub.publish_nowait("dev/dev1/events", b"while-paused", qos=1)
        await asyncio.sleep(0.3)
        assert not fut.done()
    finally:
        broker.resume()
    await asyncio.wait_for(fut, RECV_TIMEOUT)
    assert (await next_message(sub)).payload == b"while-paused"


async def test_qos0_and_qos2_round_trip(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    sub = await started(clients, make_client(broker, "platform"))
    await sub.subscribe("rx/dev1/#", qos=2)
    pub = await started(clients, make_client(broker, "platform"))
    await pub.publish("rx/dev1/q0", b"zero", qos=0)
    await pub.publish("rx/dev1/q2", b"two", qos=2)
    got = {(m.topic, m.payload, m.qos) for m in [await next_message(sub), await next_message(sub)]}
    assert got == {("rx/dev1/q0", b"zero", 0), ("rx/dev1/q2", b"two", 2)}


async def test_pipelined_publishes_all_acknowledged(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    sub = await started(clients, make_client(broker, "platform"))
    await sub.subscribe("dev/dev2/events", qos=1)
    pub = await started(clients, make_client(broker, "dev2", max_inflight=50))
    n = 300
    futures = [pub.publish_nowait("dev/dev2/events", b"%d" % i, qos=1) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    payloads = [(await next_message(sub)).payload for _ in range(n)]
    assert payloads == [b"%d" % i for i in range(n)]


async def test_packets_read_whole_from_the_buffer_take_the_short_cut_in_order(
    broker: MosquittoBroker, clients: AsyncExitStack
) -> None:
    """A burst arrives in a few reads: the QoS 1 PUBLISHes after the first of each read are taken
    from the buffer without paho's handling (core.mqtt.ReadBufferedSocket.take_plain_publish),
    one with properties is paho's; all arrive, in order, and are acknowledged."""
    sub = await started(clients, make_client(broker, "platform"))
    await sub.subscribe("dev/dev2/events", qos=1)
    taken: list[int] = []
    plain = sub._client.on_plain_publish
    assert plain is not None

    def counting(publish: Any) -> None:
        taken.append(publish.mid)
        plain(publish)

    sub._client.on_plain_publish = counting
    pub = await started(clients, make_client(broker, "dev2", max_inflight=100))
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = ("trace", "t-2")
    n = 500
    futures = [
        pub.publish_nowait("dev/dev2/events", b"%d" % i, qos=1, properties=props if i == 250 else None)
        for i in range(n)
    ]
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    got = [await next_message(sub) for _ in range(n)]
    assert [m.payload for m in got] == [b"%d" % i for i in range(n)]
    assert ("trace", "t-2") in getattr(got[250].properties, "UserProperty", [])
    assert 0 < len(taken) < n


async def test_alarm_path_latency(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    """Device -> broker -> subscriber, one message at a time (TCP_NODELAY on both ends)."""
    sub = await started(clients, make_client(broker, "platform"))
    await sub.subscribe("dev/dev1/events", qos=1)
    pub = await started(clients, make_client(broker, "dev1"))
    latencies = []
    for i in range(200):
        t0 = time.monotonic()
        await pub.publish("dev/dev1/events", b"%d" % i, qos=1)
        msg = await next_message(sub)
        latencies.append(msg.received_monotonic - t0)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"alarm path latency p99 {p99 * 1000:.2f} ms median {latencies[100] * 1000:.2f} ms")
    assert p99 < 0.05, f"p99 {p99 * 1000:.1f} ms, median {latencies[100] * 1000:.2f} ms"


async def test_acl_forbidden_publish_raises_135(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    pub = await started(clients, make_client(broker, "dev1"))
    with pytest.raises(MqttPublishError) as err:
        await pub.publish("dev/dev2/events", b"spoof", qos=1)
    assert err.value.reason_code == 135
    assert err.value.retriable is False
    # The connection stays usable.
    await pub.publish("dev/dev1/events", b"ok", qos=1)
    assert pub.connected


async def test_wrong_password_is_not_retriable(broker: MosquittoBroker) -> None:
    client = make_client(broker, "dev1", password="wrong")
    with pytest.raises(MqttConnectError) as err:
        await client.start(timeout=5)
    # mosquitto 2.0 answers a bad password with 0x87 "Not authorized" (not 0x86).
    assert err.value.reason_code in (0x86, 0x87)
    assert err.value.retriable is False
    assert not client.connected
    await client.stop()


async def test_unknown_user_is_refused(broker: MosquittoBroker) -> None:
    client = MqttClient(
        host=broker.host,
        port=broker.port,
        client_id=uid("ghost"),
        username="ghost",
        password="x",
        reconnect=False,
    )
    with pytest.raises(MqttConnectError) as err:
        await client.start(timeout=5)
    assert err.value.retriable is False
    await client.stop()


async def test_connection_refused_is_retriable(broker: MosquittoBroker) -> None:
    from tests.core.mosquitto_fixture import free_port

    client = MqttClient(host="127.0.0.1", port=free_port(), client_id=uid("nobody"), username="u", password="p")
    with pytest.raises(MqttConnectError) as err:
        await client.start(timeout=2)
    assert err.value.retriable is True
    assert err.value.reason_code is None
    await client.stop()


# --------------------------------------------------------------------------- sessions, acks


async def assert_nothing_to_redeliver(
    broker: MosquittoBroker, clients: AsyncExitStack, client_id: str, dev: MqttClient, topic: str
) -> None:
    """Resume `client_id`'s session and publish a marker: the broker sends queued and
    unacknowledged messages first, so the marker comes first only if nothing is owed."""
    gw = gateway_client(broker, client_id)
    await started(clients, gw)
    assert gw.session_present
    await dev.publish(topic, b"marker", qos=1)
    assert (await next_message(gw)).payload == b"marker"


def gateway_client(broker: MosquittoBroker, client_id: str) -> MqttClient:
    return make_client(
        broker,
        "platform",
        client_id=client_id,
        manual_ack=True,
        clean_start=False,
        session_expiry=300,
    )


async def gateway_and_device(
    broker: MosquittoBroker, clients: AsyncExitStack, device: str, tag: str
) -> tuple[str, str, MqttClient, MqttClient]:
    """A gateway with a persistent session subscribed to a fresh topic of `device`, and the
    device's client: (gateway client id, topic, gateway, device). The gateway is not in
    `clients`: a test stops it itself (and resumes its session)."""
    client_id = uid("gateway")
    topic = f"dev/{device}/{uid(tag)}"
    gw = gateway_client(broker, client_id)
    await gw.start()
    await gw.subscribe(topic, qos=1)
    dev = await started(clients, make_client(broker, device))
    return client_id, topic, gw, dev


async def test_manual_ack_unacked_message_is_redelivered(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    client_id, topic, gw, dev = await gateway_and_device(broker, clients, "dev1", "ack")

    await dev.publish(topic, b"alarm-1", qos=1)
    first = await next_message(gw)
    assert first.payload == b"alarm-1"
    assert not first.dup
    # Not acked; the gateway "crashes".
    await gw.stop(clean=False)
    gw.ack(first)  # after stop: harmless no-op

    gw2 = gateway_client(broker, client_id)
    await gw2.start()
    try:
        assert gw2.session_present
        again = await next_message(gw2)
        assert (again.topic, again.payload) == (topic, b"alarm-1")
        # mosquitto re-sends it with the DUP flag and the same packet id.
        assert again.dup
        assert again.mid == first.mid
        gw2.ack(again)
        gw2.ack(again)  # double ack: ignored
        # Round trip on the same connection: the broker has processed the PUBACK.
        await gw2.publish("rx/dev1/sync", b"", qos=1)
    finally:
        await gw2.stop(clean=False)

    # If alarm-1 were redelivered it would arrive before the marker.
    await assert_nothing_to_redeliver(broker, clients, client_id, dev, topic)


@pytest.fixture
def deep_queue_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker configured as deploy/'s: it queues more than a client's 65,535 packet ids."""
    config = "max_queued_messages 200000\nmax_inflight_messages 1000"
    with running_mosquitto(tmp_path / "mosquitto", extra_config=config) as b:
        yield b


async def test_every_message_is_acked_when_the_broker_gives_a_packet_id_again(
    deep_queue_broker: MosquittoBroker, clients: AsyncExitStack
) -> None:
    """Mosquitto 2.0, at each PUBACK, moves up to its in-flight maximum of queued messages into
    flight, however many are in flight already: past 65,535, a packet id is given again while
    its message is still unacknowledged. (A gateway behind on a backlog of device events is in
    that state.) Each message must get its PUBACK: with one PUBACK per packet id, the broker
    kept the second message of each pair for the next connection, and walked past all of them
    at every PUBACK until then."""
    broker = deep_queue_broker
    client_id, topic, gw, dev = await gateway_and_device(broker, clients, "dev1", "reuse")
    n = 70_000  # more than 65,535: a backlog the broker queues for the gateway
    for start in range(0, n, 5000):
        await asyncio.gather(*(dev.publish_nowait(topic, b"%d" % i, qos=1) for i in range(start, min(n, start + 5000))))
    got: list[MqttMessage] = []
    acked = 0
    while len(got) < n:
        got.extend([await next_message(gw), *gw.received_nowait(n)])
        if len(got) < n:
            # One PUBACK per batch, in arrival order: the gateway falls behind, and the broker
            # moves up to 1,000 more into flight at each, past 65,535.
            gw.ack(got[acked])
            acked += 1
    for m in got[acked:]:
        gw.ack(m)
    assert [m.payload for m in got] == [b"%d" % i for i in range(n)]
    assert gw.packet_ids_reused > 0, "the broker did not give a packet id twice: the test proves nothing"
    await gw.publish("rx/dev1/sync", b"", qos=1)  # the broker has read every PUBACK before this
    await gw.stop(clean=False)
    await assert_nothing_to_redeliver(broker, clients, client_id, dev, topic)


async def test_the_publish_window_is_never_above_the_brokers_receive_maximum(
    deep_queue_broker: MosquittoBroker, clients: AsyncExitStack
) -> None:
    """MQTT 5 (3.3.4): no more unacknowledged QoS 1 publishes than the broker's Receive
    Maximum (max_inflight_messages 1000 here, as in deploy/); paho ignores it."""
    wide = await started(clients, make_client(deep_queue_broker, "platform", max_inflight=5000))
    narrow = await started(clients, make_client(deep_queue_broker, "platform", max_inflight=100))
    assert wide._client.max_inflight_messages == 1000
    assert narrow._client.max_inflight_messages == 100
    await asyncio.gather(*(wide.publish_nowait("rx/dev1/window", b"x", qos=1) for _ in range(3000)))


async def test_auto_ack_is_not_redelivered(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    client_id = uid("auto")
    topic = f"dev/dev1/{uid('auto')}"
    sub = make_client(broker, "platform", client_id=client_id, clean_start=False, session_expiry=300)
    await sub.start()
    await sub.subscribe(topic, qos=1)
    dev = await started(clients, make_client(broker, "dev1"))
    await dev.publish(topic, b"one", qos=1)
    msg = await next_message(sub)
    sub.ack(msg)  # manual_ack=False: no-op
    await sub.publish("rx/dev1/sync", b"", qos=1)
    await sub.stop(clean=False)

    sub2 = make_client(broker, "platform", client_id=client_id, clean_start=False, session_expiry=300)
    await started(clients, sub2)
    await dev.publish(topic, b"marker", qos=1)
    assert (await next_message(sub2)).payload == b"marker"


async def test_messages_queued_while_offline_are_delivered(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    client_id = uid("offline")
    topic = f"dev/dev1/{uid('offline')}"
    sub = gateway_client(broker, client_id)
    await sub.start()
    await sub.subscribe(topic, qos=1)
    await sub.stop()  # clean DISCONNECT; the session (expiry 300 s) stays on the broker

    dev = await started(clients, make_client(broker, "dev1"))
    for i in range(5):
        await dev.publish(topic, b"offline-%d" % i, qos=1)

    sub2 = gateway_client(broker, client_id)
    await started(clients, sub2)
    assert sub2.session_present
    got = []
    for _ in range(5):
        msg = await next_message(sub2)
        got.append(msg.payload)
        sub2.ack(msg)
    assert got == [b"offline-%d" % i for i in range(5)]


async def test_shared_subscription_delivers_each_message_once(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    group = uid("g")
    a = await started(clients, make_client(broker, "platform"))
    b = await started(clients, make_client(broker, "platform"))
    for c in (a, b):
        await c.subscribe(f"$share/{group}/dev/+/events", qos=1)
    dev = await started(clients, make_client(broker, "dev2"))
    n = 20
    for i in range(n):
        await dev.publish("dev/dev2/events", b"s%d" % i, qos=1)

    received: dict[str, list[bytes]] = {"a": [], "b": []}

    async def drain(name: str, client: MqttClient) -> None:
        async for msg in client.messages():
            received[name].append(msg.payload)

    tasks = [
        asyncio.create_task(drain("a", a), name="drain-a"),
        asyncio.create_task(drain("b", b), name="drain-b"),
    ]
    try:
        await eventually(lambda: len(received["a"]) + len(received["b"]) >= n)
        await asyncio.sleep(0.2)  # any duplicate would show up now
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    everything = received["a"] + received["b"]
    assert sorted(everything) == sorted(b"s%d" % i for i in range(n))
    assert received["a"] and received["b"], received


# --------------------------------------------------------------------------- reconnect, will


async def test_reconnects_after_broker_crash(own_broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    broker = own_broker
    client = await started(
        clients,
        make_client(broker, "platform", client_id=uid("survivor"), clean_start=False, session_expiry=300),
    )
    await client.subscribe("rx/#", qos=1)
    await client.publish("rx/dev1/before", b"before", qos=1)
    assert (await next_message(client)).payload == b"before"

    broker.kill()  # SIGKILL: sessions since the last autosave are lost
    await eventually(lambda: not client.connected)

    # QoS 1 publish while down: kept by paho, sent after the reconnect.
    pending = client.publish_nowait("rx/dev1/during", b"during", qos=1)
    waiting = asyncio.create_task(
        client.publish("rx/dev1/during2", b"during2", qos=1, timeout=15), name="publish-during"
    )
    await asyncio.sleep(0.3)
    assert not pending.done()
    assert not waiting.done()

    await broker.astart()
    await client.wait_connected(timeout=15)
    await asyncio.wait_for(pending, 10)
    await asyncio.wait_for(waiting, 10)
    await client.publish("rx/dev1/after", b"after", qos=1)
    # The subscription was renewed after the reconnect (the crashed broker lost it).
    got = {(await next_message(client)).payload for _ in range(3)}
    assert got == {b"during", b"during2", b"after"}


async def test_reconnects_after_broker_restart_keeps_session(
    own_broker: MosquittoBroker, clients: AsyncExitStack
) -> None:
    broker = own_broker
    client_id = uid("persist")
    sub = make_client(
        broker,
        "platform",
        client_id=client_id,
        clean_start=False,
        session_expiry=300,
        manual_ack=True,
    )
    await started(clients, sub)
    await sub.subscribe("dev/dev1/events", qos=1)
    dev = make_client(broker, "dev1")
    await dev.start()
    await dev.publish("dev/dev1/events", b"unacked", qos=1)
    await dev.stop()
    unacked = await next_message(sub)
    assert unacked.payload == b"unacked"

    broker.stop()  # SIGTERM: mosquitto saves sessions (and the in-flight message) to disk
    await broker.astart()
    await sub.wait_connected(timeout=15)
    assert sub.session_present
    sub.ack(unacked)  # from the previous connection: ignored, the broker redelivers anyway
    again = await next_message(sub)
    assert again.payload == b"unacked"
    sub.ack(again)

    dev = await started(clients, make_client(broker, "dev1"))
    await dev.publish("dev/dev1/events", b"after-restart", qos=1)
    msg = await next_message(sub)
    assert msg.payload == b"after-restart"
    sub.ack(msg)


async def test_publish_times_out_while_disconnected(own_broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    client = await started(clients, make_client(own_broker, "platform"))
    own_broker.kill()
    with pytest.raises(TimeoutError):
        await client.publish("rx/dev1/x", b"x", qos=1, timeout=0.3)
    with pytest.raises(TimeoutError):
        await client.publish("rx/dev1/x", b"x", qos=0, timeout=0.3)
    with pytest.raises(TimeoutError):
        await client.wait_connected(timeout=0.1)
    with pytest.raises(MqttNotConnected):
        client.publish_nowait("rx/dev1/x", b"x", qos=0)


async def test_last_will_on_crash_only(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    watcher = await started(clients, make_client(broker, "platform"))
    await watcher.subscribe("dev/dev1/status", qos=1)

    clean = make_client(broker, "dev1", will=Will("dev/dev1/status", b"offline-clean", retain=False))
    await clean.start()
    await clean.stop()  # DISCONNECT: the broker discards the will
    await no_message(watcher)

    crash = make_client(broker, "dev1", will=Will("dev/dev1/status", b"offline", retain=False))
    await crash.start()
    await crash.stop(clean=False)
    msg = await next_message(watcher)
    assert (msg.topic, msg.payload) == ("dev/dev1/status", b"offline")


async def test_retained_will(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    topic = f"dev/dev2/{uid('status')}"
    crash = make_client(broker, "dev2", will=Will(topic, b"gone"))  # qos 1, retain=True
    await crash.start()
    await crash.stop(clean=False)
    await asyncio.sleep(0.2)
    late = await started(clients, make_client(broker, "platform"))
    await late.subscribe(topic, qos=1)
    msg = await next_message(late)
    assert (msg.payload, msg.retain) == (b"gone", True)
    await late.publish(topic, b"", qos=1, retain=True)  # clear the retained message


async def test_keepalive_detects_a_hung_broker(own_broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    """A frozen broker (SIGSTOP) keeps the TCP connection open; PINGREQ timeout must notice."""
    client = await started(clients, make_client(own_broker, "platform", keepalive=1))
    own_broker.pause()
    try:
        await eventually(lambda: not client.connected, within=6)
    finally:
        own_broker.resume()
    await client.wait_connected(timeout=10)
    await client.publish("rx/dev1/alive", b"", qos=1)


async def test_no_reconnect_when_disabled(own_broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    client = await started(clients, make_client(own_broker, "platform", reconnect=False))
    await client.subscribe("rx/#", qos=1)
    own_broker.kill()
    await eventually(lambda: not client.connected)
    with pytest.raises(MqttNotConnected):
        client.publish_nowait("rx/dev1/x", b"x", qos=1)
    with pytest.raises(MqttNotConnected):
        await client.wait_connected(timeout=1)
    await own_broker.astart()
    await asyncio.sleep(0.3)
    assert not client.connected


# --------------------------------------------------------------------------- flow control


async def test_receive_maximum_limits_unacked_messages(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    topic = f"dev/dev1/{uid('window')}"
    gw = await started(clients, make_client(broker, "platform", manual_ack=True, receive_maximum=3))
    await gw.subscribe(topic, qos=1)
    dev = await started(clients, make_client(broker, "dev1"))
    for i in range(6):
        await dev.publish(topic, b"%d" % i, qos=1)
    window = [await next_message(gw) for _ in range(3)]
    assert [m.payload for m in window] == [b"0", b"1", b"2"]
    await no_message(gw)  # the broker waits for our PUBACKs
    gw.ack(window[0])
    assert (await next_message(gw)).payload == b"3"
    for m in window[1:]:
        gw.ack(m)
    assert [(await next_message(gw)).payload for _ in range(2)] == [b"4", b"5"]


async def test_message_queue_size_applies_back_pressure(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    topic = f"dev/dev2/{uid('bp')}"
    sub = await started(clients, make_client(broker, "platform", message_queue_size=5))
    await sub.subscribe(topic, qos=1)
    dev = await started(clients, make_client(broker, "dev2"))
    n = 40
    await asyncio.gather(*(dev.publish_nowait(topic, b"%d" % i) for i in range(n)))
    await asyncio.sleep(0.3)
    assert sub._queue.qsize() <= 5  # the socket is no longer read
    assert sub.connected
    assert [(await next_message(sub)).payload for _ in range(n)] == [b"%d" % i for i in range(n)]


# --------------------------------------------------------------------------- lifecycle


async def test_stop_is_idempotent_and_safe_before_start(broker: MosquittoBroker) -> None:
    never = make_client(broker, "dev1")
    await never.stop()
    await never.stop()
    with pytest.raises(RuntimeError):
        await never.start()  # a stopped client cannot be restarted
    with pytest.raises(MqttNotConnected):
        await never.publish("dev/dev1/events", b"x")

    client = make_client(broker, "dev1")
    async with client:
        assert client.connected
        with pytest.raises(RuntimeError):
            await client.start()
    assert not client.connected
    await client.stop()
    await client.stop(clean=False)
    with pytest.raises(MqttNotConnected):
        client.publish_nowait("dev/dev1/events", b"x")
    # The message iterator ends after stop.
    assert [m async for m in client.messages()] == []


async def test_stop_fails_pending_publishes(broker: MosquittoBroker, clients: AsyncExitStack) -> None:
    client = make_client(broker, "dev1")
    await client.start()
    broker.pause()
    try:
        fut = client.publish_nowait("dev/dev1/events", b"x", qos=1)
        await client.stop(clean=False)
    finally:
        broker.resume()
    with pytest.raises(MqttNotConnected):
        await fut


async def test_a_burst_of_publishes_and_acks_leaves_in_few_sends(
    broker: MosquittoBroker, clients: AsyncExitStack
) -> None:
    """What a handler queues together (a batch's PUBACKs and receipts) is written together,
    and every message still arrives in order and every ack reaches the broker."""
    client_id, topic, gw, dev = await gateway_and_device(broker, clients, "dev2", "burst")
    n = 15  # unacknowledged, within what the broker sends before it waits for acks
    await asyncio.wait_for(asyncio.gather(*(dev.publish_nowait(topic, b"%d" % i, qos=1) for i in range(n))), 10)
    got: list[MqttMessage] = []
    while len(got) < n:
        got.append(await next_message(gw))
        got += gw.received_nowait(n - len(got))
    assert [m.payload for m in got] == [b"%d" % i for i in range(n)]

    sends = 0
    real = gw._client._sock_send

    def counting(buf: bytes | bytearray) -> int:
        nonlocal sends
        sends += 1
        return real(buf)

    try:
        gw._client._sock_send = counting  # type: ignore[method-assign]
        for m in got:  # acks and publishes queued on one turn of the loop
            gw.ack(m)
        # As many publishes as the broker's Receive Maximum (20 here) lets out at once: the
        # client keeps to it, and more would leave as PUBACKs come back, in more sends.
        futures = [gw.publish_nowait(f"rx/dev2/{i}", b"r", qos=1) for i in range(20)]
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert 1 <= sends <= 5, sends  # 35 packets: one send, unless the socket buffer filled
    finally:
        await gw.stop(clean=False)

    # Every ack arrived.
    await assert_nothing_to_redeliver(broker, clients, client_id, dev, topic)
