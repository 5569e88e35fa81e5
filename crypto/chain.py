"""How a role plugs sealing into its channel: the filters and the broker credentials of a
provisioned party. The core never imports this; every role (station, label holder, aggregator)
calls ``party_security`` once when it opens its channel."""

from __future__ import annotations

from pathlib import Path

from feddiff.config import Config

from crypto import security_filters
from crypto.directory import load_directory
from crypto.keys import load_party


def keys_dir(cfg: Config) -> Path:
    """``federation.keys_dir`` resolved; every sealed or HE job needs provisioned keys."""
    from feddiff.errors import ConfigError

    if not cfg.federation.keys_dir:
        raise ConfigError(f"{cfg.source}: federation.keys_dir: required when federation.security is {cfg.federation.security!r}")
    return Path(cfg.resolve(cfg.federation.keys_dir))


def job_directory(cfg: Config, party: str):
    """The job's directory as ``party`` trusts it: signed by the root key pinned in the party's
    own bundle (not just the one in job.json, which a directory swap would replace too)."""
    d = keys_dir(cfg)
    return load_directory(d, load_party(d, party).root_public)


def verified_he_context(cfg: Config, party: str, blob: bytes):
    """The CKKS public context in ``blob`` (``crypto.he_context.bundle_context``), once shown
    to be signed by the label holder ``party``'s own config names, with pinned parameters.
    Raises HEError naming what failed: nothing is ever encrypted under an unverified context."""
    from crypto.he_context import unbundle_context, verify_public_context

    public, sig = unbundle_context(blob)
    return verify_public_context(job_directory(cfg, party), cfg.federation.label_holder, public, sig)


def seal_filters(cfg: Config, party: str, state_dir: Path) -> list:
    d = keys_dir(cfg)
    me = load_party(d, party)
    directory = load_directory(d, me.root_public)
    return security_filters(cfg.federation.job, me, directory, replay_state=Path(state_dir) / "replay.json")


def credentials(cfg: Config, party: str) -> dict:
    me = load_party(keys_dir(cfg), party)
    return {"username": me.mqtt_username, "password": me.mqtt_password(), "tls": (str(me.ca_cert), str(me.tls_cert), str(me.tls_key))}


RELAY_HOOK = "relay_box"


def relay_box(cfg: Config, party: str):
    """HE mode: the label holder's ``GradientSealer`` or a station's ``GradientOpener`` (bound to
    the label holder its own config names); None for the aggregator and other modes, which
    only ever relay the boxes."""
    from crypto.relay_box import GradientOpener, GradientSealer

    if cfg.federation.security != "he":
        return None
    d = keys_dir(cfg)
    me = load_party(d, party)
    directory = load_directory(d, me.root_public)
    if me.role == "labels":
        return GradientSealer(me, directory)
    if me.role == "edge":
        return GradientOpener(me, directory, cfg.federation.label_holder)
    return None


def party_security(cfg: Config, party: str, state_dir: Path) -> dict:
    """Keyword arguments for ``open_channel``: seal filters when the job is sealed, and the
    party's broker credentials and TLS files when keys are provisioned; nothing for a
    plaintext job without keys. In HE mode a station or label holder also gets its relay box
    under ``RELAY_HOOK``, which its app takes out (``take_relay_box``) before the channel opens."""
    out: dict = {}
    if cfg.federation.security != "none":
        out["seal_filters"] = seal_filters(cfg, party, state_dir)
    if cfg.federation.keys_dir:
        out.update(credentials(cfg, party))
    box = relay_box(cfg, party)
    if box is not None:
        out[RELAY_HOOK] = box
    return out


def take_relay_box(security: dict):
    """Remove and return the relay box from a party's security hooks (what is left are
    ``open_channel``'s keyword arguments)."""
    return security.pop(RELAY_HOOK, None)
