"""The party runtime over a real Mosquitto: hello on start, handlers per kind, messages of
another attempt dropped, a bad payload and a failing handler contained (the node answers the
next message), DONE ends the loop."""

from __future__ import annotations

import threading

import numpy as np

from feddiff.config import config_from_dict
from feddiff.protocol import jobs, topics
from feddiff.protocol.endpoint import open_channel
from feddiff.protocol.label_messages import Predictions, Score
from feddiff.protocol.messages import Done, Hello, Job, Ready
from feddiff.runtime import Incoming, Node, Observers, Route


class EchoApp:
    """Answers SCORE with PREDICTIONS of the same array; fails on an empty one."""

    def __init__(self) -> None:
        self.jobs: list[int] = []

    def attach(self, node: Node) -> None:
        self.node = node

    def persisted_seq(self) -> int:
        return 0

    def hello(self, fresh: bool) -> Hello:
        return Hello({"fresh": fresh})

    def routes(self) -> dict[str, Route]:
        return {
            jobs.JOB: Route(Job, self.on_job, any_attempt=True),
            jobs.DONE: Route(Done, lambda msg: True, any_attempt=True),
            jobs.SCORE: Route(Score, self.on_score),
        }

    def on_job(self, msg: Incoming) -> None:
        self.jobs.append(msg.payload.round)
        self.node.send(Ready(), round=msg.round)

    def on_score(self, msg: Incoming) -> None:
        if msg.payload.pred.size == 0:
            raise RuntimeError("empty")
        self.node.send(Predictions(msg.payload.pred), round=msg.round, step=msg.step)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def on_event(self, event: str, fields: dict) -> None:
        self.seen.append((event, fields))


def test_node_dispatches_filters_attempts_and_contains_failures(mosquitto):
    cfg = config_from_dict({"scene": {"synthetic": {"seed": 0}}, "federation": {"job": "rt", "broker": {"port": mosquitto.port},
                                                                                "clients": {"st": {"modalities": ["hsi"]}}}})
    agg = open_channel(cfg, "aggregator", [topics.uplink("rt", "+")], presence=False)
    app, events = EchoApp(), Events()
    node = Node(cfg, "st", app, observers=Observers([events]))
    app.attach(node)
    runner = threading.Thread(target=node.run, daemon=True)
    runner.start()

    def send(payload, attempt, **kw):
        arrays, meta = payload.to_arrays()
        agg.send(topics.downlink("rt", "st"), payload.kind, arrays, meta={"attempt": attempt, **meta}, **kw)

    def next_kind(timeout=10.0):
        msg = agg.recv(timeout)
        assert msg is not None, "no reply"
        return msg

    try:
        hello = next_kind()
        assert hello.header.content_type == jobs.HELLO and hello.meta["fresh"] is True
        send(Score(np.arange(3)), 7, round=0, step=0)  # before any JOB: no attempt yet, dropped
        send(Job(2), 7, round=2, step=0)
        ready = next_kind()
        assert ready.header.content_type == jobs.READY and ready.meta["attempt"] == 7 and app.jobs == [2]
        send(Score(np.arange(3)), 6, round=2, step=1)  # an older attempt: dropped
        agg.send(topics.downlink("rt", "st"), jobs.SCORE, {"pred": np.zeros((2, 2))}, round=2, step=2, meta={"attempt": 7})  # bad shape
        send(Score(np.zeros(0, np.int64)), 7, round=2, step=3)  # the handler raises
        send(Score(np.arange(4)), 7, round=2, step=4)
        reply = next_kind()
        assert reply.header.content_type == jobs.PREDICTIONS and reply.header.step == 4, reply.header
        assert reply.arrays["pred"].tolist() == [0, 1, 2, 3]
        send(Done(), 7, round=2, step=0)
        runner.join(10)
        assert not runner.is_alive()
    finally:
        node.stop_event.set()
        runner.join(5)
        agg.close()
    kinds = [e for e, _ in events.seen]
    assert ("message_rejected", {"party": "st", "kind": jobs.SCORE, "reason": "bad_payload"}) in events.seen
    assert "handler_failed" in kinds
