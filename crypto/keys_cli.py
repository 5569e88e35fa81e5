"""``feddiff keys init|issue|revoke|check|he-holder|he-group|bridge``: the command-line face of crypto.provision
(and of crypto.he_groups for the per-modality CKKS keys of horizontal HE jobs, crypto.bridge_conf
for a station's bridged broker).

Why ``run`` takes a parsed Namespace: the main ``feddiff`` CLI owns the parser tree
(``feddiff_app.keys_parser``) and only dispatches here (lazily, so the core never imports ``crypto``). User mistakes raise
``FedDiffError`` subclasses whose message is one line; the main CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crypto import provision
from crypto.directory import load_directory
from crypto.keys import KeyMaterialError, load_party


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
    if cmd == "bridge":
        from crypto.bridge_conf import write_bridge_config

        conf = write_bridge_config(Path(args.dir), args.id, args.central_host, args.central_port, Path(args.out), local_port=args.local_port)
        print(f"station {args.id}: bridged broker config {conf}; install the folder on the station, run `mosquitto -c {conf}` "
              f"and point federation.broker at 127.0.0.1:{args.local_port}")
        return 0
    raise KeyMaterialError(f"unknown keys command {cmd!r}: expected init, issue, revoke, check, he-holder, he-group or bridge")
