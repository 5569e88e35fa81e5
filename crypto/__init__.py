"""Optional security layer of FedDiff: key provisioning, sealed envelopes, replay guard, CKKS.

Why a separate top-level package: the core (``feddiff``) must run, and be tested, without any
of this. Security plugs in as extra filters on the message chain (``crypto.seal``), so the
dependency points one way only: ``crypto`` imports ``feddiff``, never the reverse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from crypto.directory import Directory, PartyInfo, load_directory

from crypto.keys import PartyKeys, load_party
from crypto.provision import init_job, issue, revoke
from crypto.replay import ReplayGuard
from crypto.seal import SealFilter

__all__ = [
    "Directory",
    "PartyInfo",
    "PartyKeys",
    "ReplayGuard",
    "SealFilter",
    "init_job",
    "issue",
    "load_directory",
    "load_party",
    "revoke",
    "security_filters",
]


def security_filters(
    job: str,
    me: PartyKeys,
    directory: Directory,
    replay_state: Optional[Path] = None,
    max_age_s: float = 300.0,
) -> list:
    """The filters to put between CompressFilter and ChunkFilter, in outbound order.

    Why this order: inbound runs the chain reversed, so SealFilter authenticates a message
    *before* ReplayGuard advances the sender's sequence counter. The other way round a forger
    could bump a victim's counter with unauthenticated messages and make the real ones look
    like replays.
    """
    return [ReplayGuard(replay_state, max_age_s), SealFilter(job, me, directory, max_age_s)]
