"""Fixtures of the chaos suite: jobs whose processes are always reaped, and one reference run.

``job``        a factory for ``jobkit.Job`` on this test's Mosquitto; every process it spawned
               is SIGKILLed at teardown, pass or fail, so a failing test leaves no orphan.
``reference``  the same job run once, uninterrupted, on its own broker (once per session):
               a federated run is deterministic given its seed, so a job that survived a fault
               must end where the reference ended.
``figures``    records what a test measured (recovery seconds, rounds retried); printed in the
               test's output and appended as JSON lines to $CHAOS_FIGURES when that is set
               (docs/reliability.md was written from such a file).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.chaos.jobkit import Job


def _need_mosquitto() -> None:
    from feddiff_app.broker import mosquitto_binary

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (scripts/test.sh installs the Debian package)")


@pytest.fixture
def job(tmp_path, mosquitto):
    made: list[Job] = []

    def make(name: str = "job", **federation) -> Job:
        j = Job(tmp_path / name, mosquitto.port, **federation)
        made.append(j)
        return j

    yield make
    for j in made:
        j.cleanup()


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """(report, seconds) of the uninterrupted job."""
    _need_mosquitto()
    from feddiff_app.broker import start_mosquitto

    root = tmp_path_factory.mktemp("reference")
    broker = start_mosquitto(workdir=root / "broker")
    j = Job(root / "job", broker.port)
    try:
        t0 = time.monotonic()
        agg, edges = j.start()
        j.finish([agg, *edges.values()])
        yield j.report(), time.monotonic() - t0
    finally:
        j.cleanup()
        broker.kill()


@pytest.fixture
def figures(request):
    rec: dict = {"test": request.node.name}
    yield rec
    if len(rec) > 1:
        print(f"\n[chaos figures] {json.dumps(rec)}")
        path = os.environ.get("CHAOS_FIGURES")
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
