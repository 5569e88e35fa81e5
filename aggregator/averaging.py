"""Horizontal mode: FedAvg of each modality's branch weights over the stations holding it,
weighted by their training samples (Flower's Strategy shape: configure, collect, aggregate).

``FedAvg`` averages plaintext weights; ``EncryptedFedAvg`` (security: he) adds the members'
shares Enc(w_i * n_i / N) under the group's public CKKS key, so the sum it returns in every
member's COMMIT is the average, still encrypted. Both return per-station COMMIT payloads.
"""

from __future__ import annotations

import json
import logging
from typing import Optional

import numpy as np

from feddiff.config import Config
from feddiff.data.sources import PixelSet
from feddiff.protocol import jobs
from feddiff.protocol.messages import Commit, GetWeights, Weights

from aggregator.fusion.plain import ownership
from aggregator.link import Link, RoundFailed

log = logging.getLogger("feddiff.aggregator")


class FedAvg:
    def __init__(self, cfg: Config, link: Link) -> None:
        self.link = link
        self.groups = {m: cs for m, cs in jobs.horizontal_groups(link.clients).items() if len(cs) > 1}
        self.samples: Optional[dict[str, int]] = None  # per member, computed once per job

    def average(self, rnd: int, train: PixelSet) -> dict[str, Commit]:
        if not self.groups:
            return {}
        members = sorted({c for cs in self.groups.values() for c in cs})
        if self.samples is None:
            masks = ownership(self.link.clients, jobs.modalities_of(self.link.clients), train.rows, train.cols).masks
            self.samples = {c: int(masks.get(c, np.zeros(1, bool)).sum()) for c in members}
        totals = {m: max(sum(self.samples[c] for c in cs), 1) for m, cs in self.groups.items()}
        for c in members:
            self.link.send(c, GetWeights(self.samples, {m: t for m, t in totals.items() if c in self.groups[m]}), round=rnd)
        replies = self.link.collect(Weights, set(members), rnd)
        return self.combine(replies, totals)

    def combine(self, replies: dict[str, Weights], totals: dict[str, int]) -> dict[str, Commit]:
        out = {c: Commit() for cs in self.groups.values() for c in cs}
        for m, cs in self.groups.items():
            keys = list(replies[cs[0]].params.get(m, {}))
            if any(set(replies[c].params.get(m, {})) != set(keys) for c in cs):
                raise RoundFailed("weights_mismatch", cs)
            for k in keys:
                if len({np.shape(replies[c].params[m][k]) for c in cs}) != 1:
                    raise RoundFailed("weights_mismatch", cs)  # a malformed reply must fail the round, not the daemon
                avg = sum(np.asarray(replies[c].params[m][k], dtype=np.float64) * (self.samples[c] / totals[m]) for c in cs)
                for c in cs:
                    out[c].params.setdefault(m, {})[k] = avg.astype(np.asarray(replies[c].params[m][k]).dtype)
        return out


class EncryptedFedAvg(FedAvg):
    def __init__(self, cfg: Config, link: Link) -> None:
        from crypto.he_groups import aggregator_contexts

        super().__init__(cfg, link)
        self.contexts = aggregator_contexts(cfg)  # modality -> PUBLIC context of its group (sums only)
        if self.contexts:
            private = any(ctx.is_private() for ctx in self.contexts.values())
            link.status.update(he_group_context_private=private)
            log.info("HE group contexts for %s (secret key held here: %s)", ", ".join(sorted(self.contexts)), private)

    def combine(self, replies: dict[str, Weights], totals: dict[str, int]) -> dict[str, Commit]:
        from crypto.he import HEError
        from crypto.he_groups import sum_shares

        out = {c: Commit() for cs in self.groups.values() for c in cs}
        for m, cs in self.groups.items():
            layouts = {json.dumps(replies[c].layouts.get(m)) for c in cs}
            if len(layouts) != 1 or "null" in layouts or any(m not in replies[c].encrypted for c in cs):
                raise RoundFailed("weights_mismatch", cs)  # different branch shapes cannot be averaged
            try:
                total = sum_shares(self.contexts[m], [replies[c].encrypted[m] for c in cs])
            except HEError as exc:  # a bad ciphertext blob: the round fails naming the group, the daemon lives
                log.warning("encrypted weights of group %s do not add up: %s", m, exc)
                raise RoundFailed("bad_reply", cs) from None
            for c in cs:
                out[c].encrypted[m] = total
        return out


def make_averaging(cfg: Config, link: Link) -> FedAvg:
    return EncryptedFedAvg(cfg, link) if cfg.federation.security == "he" else FedAvg(cfg, link)
