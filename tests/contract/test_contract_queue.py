"""Queue contract: SQS semantics on SQLite and SQS (moto)."""

from __future__ import annotations

import time


def test_send_then_receive(ports):
    message_id = ports.queue.send({"taskId": "t1", "n": 1.5})

    [message] = ports.queue.receive(10, 30)

    assert message.message_id == message_id
    assert message.body == {"taskId": "t1", "n": 1.5}
    assert message.receive_count == 1


def test_received_message_is_hidden_until_deleted(ports):
    ports.queue.send({"taskId": "t1"})
    [message] = ports.queue.receive(10, 30)

    assert ports.queue.receive(10, 30) == []
    ports.queue.delete(message.receipt)
    ports.queue.change_visibility(message.receipt, 0)  # a deleted message stays deleted
    assert ports.queue.receive(10, 30) == []


def test_change_visibility_makes_it_visible_again(ports):
    ports.queue.send({"taskId": "t1"})
    [first] = ports.queue.receive(10, 30)

    ports.queue.change_visibility(first.receipt, 0)
    [second] = ports.queue.receive(10, 30)

    assert second.message_id == first.message_id
    assert second.receive_count == 2


def test_visibility_timeout_expires(ports):
    ports.queue.send({"taskId": "t1"})
    assert len(ports.queue.receive(10, 1)) == 1

    time.sleep(1.1)

    [again] = ports.queue.receive(10, 30)
    assert again.receive_count == 2


def test_delay_hides_a_new_message(ports):
    ports.queue.send({"taskId": "late"}, delay_s=1)
    ports.queue.send({"taskId": "now"})

    assert [m.body["taskId"] for m in ports.queue.receive(10, 30)] == ["now"]
    time.sleep(1.1)
    assert [m.body["taskId"] for m in ports.queue.receive(10, 30)] == ["late"]


def test_receive_takes_at_most_max_messages(ports):
    for i in range(12):
        ports.queue.send({"i": i})

    first = ports.queue.receive(3, 30)
    rest = ports.queue.receive(20, 30)

    assert len(first) == 3
    assert len(rest) == 9
    assert sorted(m.body["i"] for m in first + rest) == list(range(12))


def test_a_message_received_too_often_moves_to_the_dead_letter_queue(ports):
    # Both backends redrive after 5 receives (template.yaml: maxReceiveCount 5).
    ports.queue.send({"taskId": "poison"})
    for expected in range(1, 6):
        [message] = ports.queue.receive(10, 30)
        assert message.receive_count == expected
        ports.queue.change_visibility(message.receipt, 0)

    assert ports.queue.receive(10, 30) == []


def test_wake_delivers_delayed_messages_now_where_the_queue_can(ports):
    ports.queue.send({"taskId": "waiting-1"}, delay_s=60)
    ports.queue.send({"taskId": "waiting-2"}, delay_s=60)
    ports.queue.send({"taskId": "in-flight"})
    [in_flight] = ports.queue.receive(10, 60)

    woken = ports.queue.wake(1)

    got = [m.body["taskId"] for m in ports.queue.receive(10, 30)]
    if ports.backend == "local":
        # the earliest delayed message, never one that is being handled (in flight)
        assert woken == 1 and got == ["waiting-1"]
    else:  # SQS cannot shorten a delay: nothing changes, the back-off stands
        assert woken == 0 and got == []
    assert in_flight.body["taskId"] == "in-flight"
