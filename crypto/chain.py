"""How a role plugs sealing into its channel: the filters and the broker credentials of a
provisioned party. The core never imports this; every role (station, label holder, aggregator)
calls ``party_security`` once when it opens its channel."""

from __future__ import annotations

from pathlib import Path

from feddiff.config import Config

from crypto import security_filters
from crypto.keys import load_directory, load_party


def keys_dir(cfg: Config) -> Path:
    """``federation.keys_dir`` resolved; every sealed or HE job needs provisioned keys."""
    from feddiff.errors import ConfigError

    if not cfg.federation.keys_dir:
        raise ConfigError(f"{cfg.source}: federation.keys_dir: required when federation.security is {cfg.federation.security!r}")
    return Path(cfg.resolve(cfg.federation.keys_dir))


def seal_filters(cfg: Config, party: str, state_dir: Path) -> list:
    d = keys_dir(cfg)
    me = load_party(d, party)
    directory = load_directory(d, me.root_public)
    return security_filters(cfg.federation.job, me, directory, replay_state=Path(state_dir) / "replay.json")


def credentials(cfg: Config, party: str) -> dict:
    me = load_party(keys_dir(cfg), party)
    return {"username": me.mqtt_username, "password": me.mqtt_password(), "tls": (str(me.ca_cert), str(me.tls_cert), str(me.tls_key))}


def party_security(cfg: Config, party: str, state_dir: Path) -> dict:
    """Keyword arguments for ``open_channel``: seal filters when the job is sealed, and the
    party's broker credentials and TLS files when keys are provisioned; nothing for a
    plaintext job without keys."""
    out: dict = {}
    if cfg.federation.security != "none":
        out["seal_filters"] = seal_filters(cfg, party, state_dir)
    if cfg.federation.keys_dir:
        out.update(credentials(cfg, party))
    return out
