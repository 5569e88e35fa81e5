"""``feddiff keys init|issue|revoke|check|he-holder|he-group``: the command-line face of crypto.provision
(and of crypto.he_groups for the per-modality CKKS keys of horizontal HE jobs).

Why ``run`` takes a parsed Namespace: the main ``feddiff`` CLI owns the parser tree and only
dispatches here (lazily, so the core never imports ``crypto``). User mistakes raise
``FedDiffError`` subclasses whose message is one line; the main CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crypto import provision
from crypto.keys import ROLES, KeyMaterialError, load_directory, load_party
from feddiff.errors import FedDiffError


def add_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register the ``keys`` subcommand on the main CLI's subparsers."""
    p = subparsers.add_parser("keys", help="provision job keys, certificates and broker ACLs")
    sub = p.add_subparsers(dest="keys_cmd", required=True)
    pi = sub.add_parser("init", help="create a job's root keys, CA and broker configuration")
    pi.add_argument("--job", required=True)
    pi.add_argument("--out", required=True, type=Path)
    pi.add_argument("--broker-host", dest="broker_host", default="127.0.0.1")
    ps = sub.add_parser("issue", help="issue or rotate one party's keys")
    ps.add_argument("--dir", required=True, type=Path)
    ps.add_argument("--role", required=True, choices=ROLES)
    ps.add_argument("--id", required=True)
    ps.add_argument("--job", default=None, help="refuse if --dir belongs to another job")
    pr = sub.add_parser("revoke", help="remove a party and regenerate the broker password file and ACL")
    pr.add_argument("--dir", required=True, type=Path)
    pr.add_argument("--id", required=True)
    pc = sub.add_parser("check", help="check one party's bundle: 0600 secrets, keys matching the signed directory")
    pc.add_argument("--dir", required=True, type=Path)
    pc.add_argument("--id", required=True)
    pl = sub.add_parser("he-holder", help="CKKS key of the HE label holder: secret (0600) and signed public context in its bundle")
    pl.add_argument("--dir", required=True, type=Path)
    pl.add_argument("--id", required=True, help="the label holder (role labels)")
    ph = sub.add_parser("he-group", help="CKKS key for one horizontal group (HE mode): secret to the members, public to the aggregator")
    ph.add_argument("--dir", required=True, type=Path)
    ph.add_argument("--group", required=True, help="the modality the members share, e.g. hsi")
    ph.add_argument("--members", required=True, help="comma-separated station ids, at least two")
    return p


def run(args: argparse.Namespace) -> int:
    """Execute one ``keys`` subcommand; returns 0 on success, raises FedDiffError otherwise."""
    cmd = getattr(args, "keys_cmd", None)
    if cmd == "init":
        out = Path(args.out)
        provision.init_job(args.job, out, broker_host=getattr(args, "broker_host", None) or "127.0.0.1")
        print(f"job {args.job}: trust root in {out}; broker config {out / 'broker' / 'mosquitto.conf'}")
        return 0
    if cmd == "issue":
        d = Path(args.dir)
        provision.issue(d, args.role, args.id, job=getattr(args, "job", None))
        directory = load_directory(d)
        print(f"job {directory.job}: issued {args.role} {args.id} (directory serial {directory.serial}); "
              f"bundle {d / 'parties' / args.id}")
        return 0
    if cmd == "revoke":
        d = Path(args.dir)
        provision.revoke(d, args.id)
        print(f"revoked {args.id}; reload the broker (SIGHUP) and redistribute directory.json")
        return 0
    if cmd == "check":
        d = Path(args.dir)
        me = load_party(d, args.id)
        listed = load_directory(d, me.root_public).get(me.name)
        if listed is None or listed.sign_public != me.sign_public or listed.agree_public != me.agree_public:
            raise KeyMaterialError(f"party {me.name!r} is not in {d / 'directory.json'} with these keys (rotated or revoked?)")
        print(f"job {me.job}: bundle of {me.role} {me.name} is complete, private and listed in the directory")
        return 0
    if cmd == "he-holder":
        pdir = provision.provision_he_holder(Path(args.dir), args.id)
        print(f"HE label holder {args.id}: secret context {pdir / 'he_secret.ctx'} (0600), signed public context beside it")
        return 0
    if cmd == "he-group":
        from crypto.he_groups import provision_group

        d = Path(args.dir)
        members = [m.strip() for m in str(args.members).split(",") if m.strip()]
        agg = provision_group(d, args.group, members)
        print(f"HE group {args.group}: secret context for {', '.join(members)}; public context for {agg}")
        return 0
    raise KeyMaterialError(f"unknown keys command {cmd!r}: expected init, issue, revoke, check, he-holder or he-group")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m crypto.keys_cli keys init ...``)."""
    parser = argparse.ArgumentParser(prog="feddiff")
    add_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except FedDiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
