"""On a PUBACK the client sends what waited for room in its window (paho's _update_inflight),
without walking the messages in flight when nothing waits."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import MQTTErrorCode

from core.mqtt import _PahoClient

IN_FLIGHT, QUEUED, UNSENT = paho.mqtt_ms_wait_for_puback, paho.mqtt_ms_queued, paho.mqtt_ms_publish


class _Walked(dict):  # type: ignore[type-arg]
    """paho's store of unacknowledged messages, counting its walks."""

    walks = 0

    def values(self) -> Any:
        self.walks += 1
        return super().values()


def _client(cls: type[paho.Client], window: int, states: list[int]) -> tuple[paho.Client, _Walked, list[int]]:
    client = (
        cls(client_id="inflight", manual_ack=False) if cls is _PahoClient else cls(paho.CallbackAPIVersion.VERSION2)
    )
    client.max_inflight_messages_set(window)
    out = _Walked()
    for mid, state in enumerate(states, 1):
        m = paho.MQTTMessage(mid=mid, topic=b"t")
        m.qos, m.state, m.payload = 1, state, b"x"
        out[mid] = m
    client._out_messages = out
    client._inflight_messages = states.count(IN_FLIGHT)
    sent: list[int] = []

    def send(mid: int, *_: Any, **__: Any) -> MQTTErrorCode:
        sent.append(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._send_publish = send  # type: ignore[method-assign]
    return client, out, sent


def test_an_ack_with_nothing_queued_walks_nothing() -> None:
    client, out, sent = _client(_PahoClient, 100, [IN_FLIGHT] * 99)
    assert client._update_inflight() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert out.walks == 0 and sent == []


def test_an_ack_sends_the_oldest_queued_message() -> None:
    client, out, sent = _client(_PahoClient, 3, [IN_FLIGHT, IN_FLIGHT, QUEUED, QUEUED])
    assert client._update_inflight() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert sent == [3] and client._inflight_messages == 3
    assert [m.state for m in out.values()] == [IN_FLIGHT, IN_FLIGHT, IN_FLIGHT, QUEUED]


@given(
    window=st.integers(1, 8),
    states=st.lists(st.sampled_from([IN_FLIGHT, QUEUED, UNSENT]), max_size=20),
)
def test_it_does_what_paho_does(window: int, states: list[int]) -> None:
    # Any store paho can hold (no more in flight than the window): the same messages sent, the
    # same states and count after, as paho's own walk.
    states = [s for i, s in enumerate(states) if s != IN_FLIGHT or states[:i].count(IN_FLIGHT) < window]
    ours, ours_out, ours_sent = _client(_PahoClient, window, states)
    theirs, theirs_out, theirs_sent = _client(paho.Client, window, states)
    assert ours._update_inflight() == theirs._update_inflight()
    assert ours_sent == theirs_sent
    assert ours._inflight_messages == theirs._inflight_messages
    assert [m.state for m in ours_out.values()] == [m.state for m in theirs_out.values()]
