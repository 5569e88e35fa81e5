"""The arguments of ``feddiff keys``: init, issue, revoke, check, he-holder, he-group, bridge.

They live with the command line, not in ``crypto``, so that building the parser (``feddiff
--help``) never imports the cryptography stack; ``crypto.keys_cli.run`` does the work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROLES = ("edge", "aggregator", "labels")  # checked again by crypto.provision.issue


def add_keys_actions(keys: argparse.ArgumentParser) -> None:
    """Register every ``feddiff keys ACTION`` on the ``keys`` parser."""
    sub = keys.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")
    p = sub.add_parser("init", help="create a job's trust root, CA and broker configuration")
    p.add_argument("--job", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--broker-host", dest="broker_host", default="127.0.0.1")
    p = sub.add_parser("issue", help="issue or rotate one party's keys and certificates")
    p.add_argument("--dir", default="keys", type=Path)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--id", required=True)
    p.add_argument("--job", default=None, help="refuse if --dir belongs to another job")
    p = sub.add_parser("revoke", help="remove a party and regenerate the broker password file and ACL")
    p.add_argument("--dir", default="keys", type=Path)
    p.add_argument("--id", required=True)
    p = sub.add_parser("check", help="check one party's bundle: 0600 secrets, keys matching the signed directory")
    p.add_argument("--dir", default="keys", type=Path)
    p.add_argument("--id", required=True)
    p = sub.add_parser("he-holder", help="CKKS key of the HE label holder: secret (0600) and signed public context in its bundle")
    p.add_argument("--dir", default="keys", type=Path)
    p.add_argument("--id", required=True, help="the label holder (role labels)")
    p = sub.add_parser("he-group", help="CKKS key of one horizontal group (HE mode): secret to its stations, public to the aggregator")
    p.add_argument("--dir", default="keys", type=Path)
    p.add_argument("--group", required=True, help="the modality the members share, e.g. hsi")
    p.add_argument("--members", required=True, help="comma-separated station ids, at least two")
    p = sub.add_parser("bridge", help="a station's own Mosquitto bridged to the central broker (stores and forwards across link cuts)")
    p.add_argument("--dir", default="keys", type=Path)
    p.add_argument("--id", required=True, help="the station (role edge or labels)")
    p.add_argument("--central-host", dest="central_host", required=True, help="the central broker's name or address, as in its certificate")
    p.add_argument("--central-port", dest="central_port", type=int, default=8883)
    p.add_argument("--out", required=True, type=Path, help="the folder to write (the path it will have on the station)")
    p.add_argument("--local-port", dest="local_port", type=int, default=8883, help="the station broker's loopback port")
