"""Start-up check of the security mode: ``none`` is loud, and never silently remote.

Why: ``federation.security: none`` is the default so a demo runs with no keys, but then every
payload crosses the broker in plaintext, anyone reaching the broker can publish as anyone, and
nothing is authenticated. That is acceptable on one machine (a loopback broker) and nowhere
else unless the operator says so explicitly (``--insecure``). Every role calls
``check_security_mode`` before it connects.
"""

from __future__ import annotations

import ipaddress
import logging

from feddiff.errors import FedDiffError

log = logging.getLogger("feddiff.security")

MODES = ("none", "signed", "he")


class InsecureModeRefused(FedDiffError):
    """``security: none`` towards a broker off this machine, without ``--insecure``."""


def is_loopback(host: str) -> bool:
    """True only for ``localhost`` and literal loopback addresses (127/8, ::1, v4-mapped 127/8).

    Names are not resolved: a name that resolves to loopback today may not tomorrow."""
    if not isinstance(host, str):
        return False
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def check_security_mode(security: str, broker_host: str, insecure: bool = False) -> None:
    """Refuse ``none`` towards a non-loopback broker unless ``insecure``; warn loudly in
    ``none`` mode either way. Raises FedDiffError (one line) for a refusal or an unknown mode."""
    if security not in MODES:
        raise FedDiffError(f"unknown federation.security {security!r}: expected one of {', '.join(MODES)}")
    if security != "none":
        return
    if not is_loopback(broker_host) and not insecure:
        raise InsecureModeRefused(
            f"security: none with the broker at {broker_host!r} (not loopback) would send every payload in plaintext "
            f"and accept anyone's messages; use security: signed or he, or pass --insecure to accept that"
        )
    log.warning("SECURITY: security: none; messages to the broker at %s are neither encrypted nor authenticated: "
                "any client of the broker can read every payload and publish as any party", broker_host,
                extra={"event": "insecure_mode", "broker": broker_host})
