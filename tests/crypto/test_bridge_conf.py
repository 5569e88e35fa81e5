"""A station's bridged Mosquitto: the generated folder, and two real brokers on loopback.

The broker tests run the central broker with the job's generated TLS/ACL config and the
station broker with the generated bridge config (only ``user root`` is added when the tests run
as root, as feddiff_app.broker does for the central one), then check what crosses the bridge:
the station's uplink does, a foreign topic does not, and messages published while the central
broker is down arrive once it is back.
"""

from __future__ import annotations

import os
import stat
import time

import pytest

from crypto.bridge_conf import bridge_topics, write_bridge_config
from crypto.keys import KeyMaterialError
from crypto.provision import init_job, issue
from feddiff.protocol import topics
from feddiff_app.broker import BrokerProcess, free_port, mosquitto_binary, start_mosquitto_from_conf

JOB = "bridgetest"
STATION = "hsi_station"


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    init_job(JOB, d)
    issue(d, "aggregator", "aggregator")
    issue(d, "edge", STATION)
    issue(d, "edge", "lidar_station")
    return d


def conf_lines(path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]


def test_config_bridges_only_the_stations_topics_over_tls_with_its_credentials(keys, tmp_path):
    conf = write_bridge_config(keys, STATION, "central.example.org", 8884, tmp_path / "edge")
    lines = conf_lines(conf)
    out = conf.parent
    password = (keys / "parties" / STATION / "mqtt_password").read_text().strip()
    assert "address central.example.org:8884" in lines
    assert f"remote_username {STATION}" in lines and f"remote_password {password}" in lines
    assert f"bridge_cafile {out.resolve() / 'ca.crt'}" in lines and "bridge_insecure false" in lines
    assert (out / "bridge.crt").read_bytes() == (keys / "parties" / STATION / "tls.crt").read_bytes()
    assert (out / "bridge.key").read_bytes() == (keys / "parties" / STATION / "tls.key").read_bytes()
    assert {"cleansession false", "persistence true", "bridge_attempt_unsubscribe false", "listener 8883 127.0.0.1"} <= set(lines)
    assert [ln for ln in lines if ln.startswith("topic ")] == [
        f"topic {topics.uplink(JOB, STATION)} out 1",
        f"topic {topics.presence(JOB, STATION)} out 1",
        f"topic {topics.downlink(JOB, STATION)} in 1",
        f"topic {topics.broadcast(JOB)} in 1",
    ]
    assert int(next(ln for ln in lines if ln.startswith("max_queued_messages ")).split()[1]) >= 100_000
    assert not any("lidar_station" in ln for ln in lines)


def test_secrets_are_0600_in_a_0700_folder(keys, tmp_path):
    out = write_bridge_config(keys, STATION, "10.0.0.1", 8883, tmp_path / "edge").parent
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name in ("mosquitto.conf", "passwd", "bridge.key", "local.key"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    for name in ("ca.crt", "bridge.crt", "local.crt", "acl"):
        assert not stat.S_IMODE((out / name).stat().st_mode) & 0o022, name


def test_install_dir_and_local_port_are_what_the_config_names(keys, tmp_path):
    conf = write_bridge_config(keys, STATION, "10.0.0.1", 8883, tmp_path / "edge", local_port=18830, install_dir="/etc/mosquitto/feddiff")
    lines = conf_lines(conf)
    assert "listener 18830 127.0.0.1" in lines and "password_file /etc/mosquitto/feddiff/passwd" in lines
    assert "persistence_location /etc/mosquitto/feddiff/" in lines


@pytest.mark.parametrize(
    "args, expect",
    [
        (("nobody", "10.0.0.1", 8883), "'nobody' is not in the directory"),
        (("aggregator", "10.0.0.1", 8883), "only stations"),
        ((STATION, "host with space", 8883), "invalid central broker host"),
        ((STATION, "10.0.0.1", 0), "invalid central broker port"),
    ],
)
def test_bad_input_is_one_line_naming_it(keys, tmp_path, args, expect):
    with pytest.raises(KeyMaterialError, match=expect) as e:
        write_bridge_config(keys, *args, tmp_path / "edge")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "edge").exists()


def test_without_the_ca_key_it_says_where_to_run(keys, tmp_path):
    (keys / "root" / "ca.key").rename(tmp_path / "ca.key.away")
    with pytest.raises(KeyMaterialError, match="root keys"):
        write_bridge_config(keys, STATION, "10.0.0.1", 8883, tmp_path / "edge")


def test_bridge_topics_follow_the_central_acl():
    assert ("in", topics.downlink(JOB, "lab")) in bridge_topics(JOB, "lab", "labels")
    with pytest.raises(KeyMaterialError):
        bridge_topics(JOB, "aggregator", "aggregator")


# ----------------------------------------------------------------------------- two real brokers

needs_mosquitto = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def run_conf(conf, port: int, workdir) -> BrokerProcess:
    """The generated config as it is; as root, Mosquitto would drop to its own user and lose
    the 0600 files of the test's folder, so ``user root`` goes first."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = conf
    if os.geteuid() == 0:
        path = workdir / "as_root.conf"
        path.write_text("user root\n" + conf.read_text())
        path.chmod(0o600)
    return BrokerProcess("mosquitto", [mosquitto_binary(), "-c", str(path)], port, workdir)


def party_client(keys, name: str, port: int, client_id: str):
    from feddiff.transport.mqtt import MqttTransport

    p = keys / "parties" / name
    t = MqttTransport(client_id, "127.0.0.1", port, username=name, password=(p / "mqtt_password").read_text().strip(),
                      tls_ca=str(keys / "ca.crt"), tls_cert=str(p / "tls.crt"), tls_key=str(p / "tls.key"),
                      reconnect_min_s=0.1, reconnect_max_s=0.5, publish_timeout=20)
    t.connect(10)
    return t


def drain(t, want: int, timeout: float) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        item = t.get(0.1)
        if item is not None:
            got.append(item)
    return got


def start_central(keys, workdir) -> BrokerProcess:
    """The job's generated central config, with persistence so that a subscriber's session
    outlives a restart (what the store-and-forward test restarts is the link, not the
    aggregator's subscription)."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "central_source.conf"
    text = (keys / "broker" / "mosquitto.conf").read_text()
    conf.write_text(text.replace("persistence false", f"persistence true\npersistence_location {workdir}/"))
    return start_mosquitto_from_conf(conf, workdir)


@pytest.fixture
def bridged(keys, tmp_path):
    """(central broker, station broker, aggregator client on central, station client on its
    broker), everything stopped after the test."""
    central = start_central(keys, tmp_path / "central")
    local_port = free_port()
    conf = write_bridge_config(keys, STATION, "127.0.0.1", central.port, tmp_path / "edge", local_port=local_port)
    local = run_conf(conf, local_port, tmp_path / "edge_run")
    clients = []
    try:
        agg = party_client(keys, "aggregator", central.port, "agg")
        clients.append(agg)
        agg.subscribe(topics.uplink(JOB, topics.ANY))
        st = party_client(keys, STATION, local_port, "station")
        clients.append(st)
        st.subscribe(topics.downlink(JOB, STATION))
        yield central, local, agg, st
    finally:
        for c in clients:
            c.close()
        local.kill()
        central.kill()


def wait_bridge_up(agg, st, timeout: float = 20) -> None:
    """Until a probe on the station's uplink crosses (the bridge connects asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st.publish(topics.uplink(JOB, STATION), b"probe", qos=1)
        if drain(agg, 1, 1.0):
            while agg.get(0.3) is not None:  # probes of earlier tries
                pass
            return
    raise AssertionError(f"bridge did not come up within {timeout:g}s")


@needs_mosquitto
def test_station_uplink_crosses_foreign_topics_do_not_and_downlink_comes_back(bridged):
    central, local, agg, st = bridged
    wait_bridge_up(agg, st)
    st.publish(topics.uplink(JOB, STATION), b"features", qos=1)
    assert drain(agg, 1, 10) == [(topics.uplink(JOB, STATION), b"features")]

    # another station's uplink: the local ACL refuses it silently, the bridge has no such topic
    st.publish(topics.uplink(JOB, "lidar_station"), b"forged", qos=1)
    assert drain(agg, 1, 2) == []

    agg.publish(topics.downlink(JOB, STATION), b"backward", qos=1)
    assert drain(st, 1, 10) == [(topics.downlink(JOB, STATION), b"backward")]


@needs_mosquitto
def test_messages_published_while_central_is_down_arrive_after_it_returns(bridged, tmp_path):
    central, local, agg, st = bridged
    wait_bridge_up(agg, st)
    central.stop()
    sent = [f"queued-{i}".encode() for i in range(5)]
    for payload in sent:
        st.publish(topics.uplink(JOB, STATION), payload, qos=1)  # the local broker acknowledges at once
    time.sleep(1.0)
    central.start()
    # held on the station until the bridge reconnects (it retries every RESTART_TIMEOUT_S)
    got = drain(agg, 5, 30)
    assert [p for _, p in got] == sent


# ----------------------------------------------------------------------------- the command line

def keys_cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "feddiff_app.cli", "keys", *args], capture_output=True, text=True, timeout=120)


def test_feddiff_keys_bridge_writes_the_folder_and_refuses_an_unknown_station_in_one_line(keys, tmp_path):
    probe = keys_cli("bridge", "--help")
    if probe.returncode != 0 and "invalid choice" in probe.stderr:
        pytest.skip("`feddiff keys bridge` is not wired yet (parser in feddiff_app/cli.py, dispatch in crypto/keys_cli.py)")
    out = tmp_path / "edge"
    r = keys_cli("bridge", "--dir", str(keys), "--id", STATION, "--central-host", "10.0.0.1", "--central-port", "8884", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "address 10.0.0.1:8884" in (out / "mosquitto.conf").read_text()
    assert str(out / "mosquitto.conf") in r.stdout
    bad = keys_cli("bridge", "--dir", str(keys), "--id", "nobody", "--central-host", "10.0.0.1", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert [ln for ln in bad.stderr.splitlines() if ln.strip()] == [ln for ln in bad.stderr.splitlines() if "nobody" in ln]
