"""Faults injected into a running federated job: real Mosquitto, real `feddiff` processes.

Each test breaks one part in the middle of a round (steps of that round already applied on
both sides) and then checks three things:

* the job completes (every process exits 0);
* the round ledger in report.json lists every round exactly once with the plan's full step
  count: a broken round was rolled back and rerun, never half-applied or applied twice;
* the final model is the one an uninterrupted run with the same seed produces: same loss per
  round, OA within 0.5 points. A federated run is deterministic given its seed, so any
  difference means some party kept steps of a round that was rolled back.

Run with ``pytest -m chaos tests/chaos`` (several minutes on 2 cores).
"""

from __future__ import annotations

import json
import time

import psutil
import pytest
import torch

from tests.chaos.jobkit import assert_ledger_exact, assert_same_model_as
from tests.chaos.proxy import DroppingProxy

pytestmark = pytest.mark.chaos

FAULT_ROUND = 2  # rounds 0 and 1 are committed before the fault
FAULT_STEP = 5  # ... and round 2 has applied at least 5 of its 19 steps


def committed_round_on_disk(state_file) -> int:
    ck = torch.load(state_file, weights_only=True)
    return json.loads(ck["state"])["round"]


def failures_after(job, t: float) -> list[dict]:
    return [e for e in job.events("round_failed") if e["ts"] >= t]


def recover_and_check(j, procs, t_fault: float, reference) -> tuple[float, dict]:
    """After a fault: wait until the fault round commits, let the job finish, and check the
    invariant every fault test shares (exact ledger, same model as the uninterrupted run)."""
    j.wait_round(FAULT_ROUND + 1)
    recovered = time.time() - t_fault
    j.finish(procs)
    r = j.report()
    assert_ledger_exact(r, j.epochs, j.config)
    assert_same_model_as(reference[0], r)
    return recovered, r


@pytest.mark.parametrize("outage_s", [2.0, 8.0], ids=["outage-2s", "outage-8s"])
def test_broker_killed_mid_round_and_restarted_job_completes_with_exact_ledger(job, mosquitto, reference, figures, outage_s):
    """Mosquitto runs without persistence: a SIGKILL loses every queued QoS-1 message and every
    session. The clients reconnect to the restarted broker on the same port and re-subscribe.
    What the outage costs depends on where it finds the aggregator: blocked in a publish, it
    just waits for the reconnect (paho re-sends what was in flight); waiting for replies, it
    times out after round_timeout_s, rolls the round back and reruns it. Both were seen here;
    either way the ledger and the final model must be exact."""
    j = job()
    agg, edges = j.start()
    j.wait_mid_round(FAULT_ROUND, FAULT_STEP)
    t_fault = time.time()
    mosquitto.kill()
    time.sleep(outage_s)
    mosquitto.start()
    recovered, r = recover_and_check(j, [agg, *edges.values()], t_fault, reference)
    failed = failures_after(j, t_fault)
    # nothing but lost messages: a request that timed out, or a BACKWARD lost (caught at commit)
    assert all(e["reason"] in ("timeout", "lost_backward") for e in failed), failed
    figures.update(outage_s=outage_s, round_committed_after_s=round(recovered, 1), rounds_retried=len(failed),
                   attempts_of_fault_round=r["ledger"][FAULT_ROUND]["attempt"] - r["ledger"][FAULT_ROUND - 1]["attempt"],
                   oa=r["oa"], reference_oa=reference[0]["oa"])


def test_station_killed_mid_round_is_named_then_resumes_and_job_completes(job, reference, figures):
    """A station SIGKILLed mid-round loses the autograd graphs of the features it sent. The
    aggregator must not hang: after round_timeout_s it names the missing station in its log
    and status, rolls the round back, and when the restarted station says hello the round
    runs again from the last committed round (the station reloads its round_<r>.pt)."""
    j = job()
    agg, edges = j.start()
    j.wait_mid_round(FAULT_ROUND, FAULT_STEP)
    t_fault = time.time()
    j.kill(edges["lidar_station"])

    named = j.wait_for("the aggregator naming lidar_station", lambda: [e for e in failures_after(j, t_fault) if "lidar_station" in e["clients"]], timeout=60)
    detected = named[0]["ts"] - t_fault
    assert "lidar_station" in named[0]["msg"] and "hsi_station" not in named[0]["clients"]
    assert "lidar_station" in (j.status().get("last_error") or "")

    t_restart = time.time()
    lidar = j.edge("lidar_station")
    j.wait_round(FAULT_ROUND + 1)
    recovered = time.time() - t_restart
    j.finish([agg, edges["hsi_station"], lidar])

    r = j.report()
    assert_ledger_exact(r, j.epochs, j.config)
    assert_same_model_as(reference[0], r)
    edge_log = (j.root / "state" / "lidar_station" / "edge.log.jsonl").read_text()
    assert f"station lidar_station at committed round {FAULT_ROUND - 1}" in edge_log  # resumed, not restarted from scratch
    figures.update(round_timeout_s=j.doc["federation"]["round_timeout_s"], missing_station_named_after_s=round(detected, 1),
                   round_committed_after_restart_s=round(recovered, 1), rounds_retried=len(failures_after(j, t_fault)),
                   oa=r["oa"], reference_oa=reference[0]["oa"])


def test_aggregator_killed_mid_round_resumes_from_last_committed_round(job, reference, figures):
    """The daemon commits aggregator_state.pt atomically after each round. SIGKILLed mid-round,
    the file still holds the last committed round; a new daemon resumes there, the stations
    roll back to it, and the final model is the uninterrupted run's (OA within 0.5 points)."""
    j = job()
    agg, edges = j.start()
    j.wait_mid_round(FAULT_ROUND, FAULT_STEP)
    t_fault = time.time()
    j.kill(agg)
    assert committed_round_on_disk(j.agg_dir / "aggregator_state.pt") == FAULT_ROUND

    agg2 = j.aggregator()
    j.wait_round(FAULT_ROUND + 1)
    recovered = time.time() - t_fault
    j.finish([agg2, *edges.values()])

    r = j.report()
    assert_ledger_exact(r, j.epochs, j.config)
    assert any(f"resuming job {j.doc['federation']['job']} at round {FAULT_ROUND}" in e["msg"] for e in j.agg_log())
    assert_same_model_as(reference[0], r)
    figures.update(round_committed_after_s=round(recovered, 1), oa=r["oa"], reference_oa=reference[0]["oa"],
                   oa_diff_points=round(100 * abs(r["oa"] - reference[0]["oa"]), 3))


def test_aggregator_disk_full_mid_job_stops_with_one_line_and_keeps_last_state(job, reference, figures):
    """A full disk during a commit must not corrupt the committed state: the daemon stops with
    one line naming aggregator_state.pt (exit 2, no traceback), the file keeps its last
    committed bytes, no temp file is left, and once there is room again a restarted daemon
    resumes from that round.

    'Full' is RLIMIT_FSIZE set on the running daemon (prlimit): the kernel fails any write past
    64 KB with EFBIG, root included (chmod does not stop root). The log and status files stay
    below the limit; the 270 KB state file cannot be written."""
    j = job()
    agg, edges = j.start()
    j.wait_mid_round(FAULT_ROUND, FAULT_STEP)
    state = j.agg_dir / "aggregator_state.pt"
    before = state.read_bytes()
    assert len(before) > 64 * 1024
    psutil.Process(agg.pid).rlimit(psutil.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    t_fault = time.time()

    assert j.expect_exit(agg) == 2
    out = (j.root / next(p.name for p in j.root.glob("aggregator-*.log"))).read_text()
    errors = [ln for ln in out.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "Traceback" not in out, out[-2000:]
    assert "aggregator_state.pt" in errors[0] and "cannot write" in errors[0], errors[0]
    assert state.read_bytes() == before  # the previous commit, byte for byte
    assert not list(j.agg_dir.glob(".aggregator_state.pt.*")), "temp file left behind"
    assert committed_round_on_disk(state) == FAULT_ROUND

    agg2 = j.aggregator()  # room again: a fresh process without the limit
    recovered, r = recover_and_check(j, [agg2, *edges.values()], t_fault, reference)
    figures.update(error_line=errors[0].split("error: ", 1)[1], round_committed_after_restart_s=round(recovered, 1))



def test_lost_gradient_message_fails_the_round_instead_of_silently_skipping_a_step(job, mosquitto, reference, figures):
    """BACKWARD is the one message nobody answers: if it is lost in transit (a broker crash
    between accepting it and delivering it does exactly that), the station never applies that
    step while the aggregator's ledger says it did. Here lidar_station talks to the broker
    through a proxy that loses one BACKWARD of round 2 (and acknowledges it to the broker, so
    it is never resent). The round must not be committed with a step missing: it is rerun,
    and the final model is the uninterrupted run's."""
    proxy = DroppingProxy(mosquitto.port, lambda h: h.content_type == "backward" and h.round == FAULT_ROUND and h.step == FAULT_STEP)
    try:
        j = job()
        agg = j.aggregator()
        edges = {"hsi_station": j.edge("hsi_station"), "lidar_station": j.edge("lidar_station", port=proxy.port)}
        j.wait_round(FAULT_ROUND + 1)
        j.finish([agg, *edges.values()])
    finally:
        proxy.close()

    assert len(proxy.dropped) == 1, proxy.dropped
    t_fault = proxy.dropped[0]["at"]
    r = j.report()
    assert_ledger_exact(r, j.epochs, j.config)
    failed = failures_after(j, t_fault)
    assert [e["round"] for e in failed] == [FAULT_ROUND] and failed[0]["clients"] == ["lidar_station"], failed
    assert_same_model_as(reference[0], r)
    committed = [e["ts"] for e in j.events("round_committed") if e["round"] == FAULT_ROUND]
    figures.update(dropped=proxy.dropped[0], failure=failed[0]["msg"], rounds_retried=len(failed),
                   round_committed_after_s=round(committed[0] - t_fault, 1), oa=r["oa"], reference_oa=reference[0]["oa"])
