"""What a station's features become on the wire: the plain codec, or CKKS ciphertexts (HE).

The station computes, per modality, its codes and their wire form (``feddiff.model.comm``); an
uplink turns them into the FEATURES payload, says which tensors the returned gradient belongs
to, and does the same for the branch weights of horizontal averaging. The job's security mode
picks the uplink once (``make_uplink``): the station itself has no HE branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from feddiff.config import Config
from feddiff.model.comm import Packed
from feddiff.protocol.label_messages import Encrypted
from feddiff.protocol.messages import Commit, Features, Job, Payload, Weights

Params = dict[str, dict[str, np.ndarray]]


@dataclass
class Part:
    """One modality's contribution to a batch: its codes (with graph), their wire form, the value
    the receiver reconstructs (straight-through) and, HE, the batch rows it answers for."""

    codes: torch.Tensor
    packed: Packed
    received: torch.Tensor
    sel: Optional[np.ndarray] = None


class PlainUplink:
    """Codes leave as the comm module's wire form; plaintext weights are averaged by the aggregator."""

    def __init__(self) -> None:
        self.modules: dict[str, dict[str, torch.nn.Module]] = {}

    def join(self, job: Job) -> None:
        """Nothing to take from the JOB: plain codes need no key."""

    def features(self, parts: dict[str, Part], n: int) -> tuple[Payload, dict[str, torch.Tensor]]:
        return Features({m: p.packed for m, p in parts.items()}), {m: p.codes for m, p in parts.items()}

    def weights(self, state: dict[str, dict[str, torch.Tensor]], samples: int, totals: dict[str, int]) -> Weights:
        return Weights({m: {k: v.numpy() for k, v in sd.items()} for m, sd in state.items()}, samples)

    def averaged(self, commit: Commit, state: dict[str, dict[str, torch.Tensor]]) -> Params:
        return commit.params


class HeUplink:
    """HE mode: each modality's received codes go through a seeded projection to ``he_dim``; the
    station sends Enc(sum of its projections), zeros where it does not answer for a row, so the
    aggregator's ciphertext sum holds one contribution per modality and sample. Branch weights
    leave only as shares encrypted under the horizontal group's key."""

    def __init__(self, cfg: Config, name: str, wire_dims: dict[str, int]) -> None:
        from crypto.he_groups import member_contexts
        from feddiff.model.net import branch_seed

        self.cfg, self.name, self.dim = cfg, name, cfg.model.he_dim
        self.public_ctx = None  # from the JOB message
        self.group_ctx = member_contexts(cfg, name)  # a missing group key fails the station at start
        self.modules = {}
        for m, d in wire_dims.items():
            with torch.random.fork_rng():
                torch.manual_seed(branch_seed(cfg.train.seed, m) + 1)
                self.modules[m] = {"he_proj": torch.nn.Linear(d, self.dim)}

    def join(self, job: Job) -> None:
        """The label holder's public CKKS context comes with the JOB (once is enough), relayed
        by the aggregator, which could swap it for one whose secret it holds: it is used only
        once verified as signed by the label holder our own config names (HEError otherwise)."""
        if self.public_ctx is None and job.public_ctx is not None:
            from crypto.chain import verified_he_context

            self.public_ctx = verified_he_context(self.cfg, self.name, job.public_ctx)

    def features(self, parts: dict[str, Part], n: int) -> tuple[Payload, dict[str, torch.Tensor]]:
        from crypto.he import HEError, encrypt_batch

        if self.public_ctx is None:
            raise HEError(f"station {self.name}: no verified CKKS context from the label holder yet; refusing to send features")
        z = torch.zeros(n, self.dim)
        for m, p in parts.items():
            part = self.modules[m]["he_proj"](p.received)
            if p.sel is not None:  # scatter into the full batch: the sum stays aligned per sample
                part = torch.zeros(n, part.shape[1]).index_put((torch.from_numpy(p.sel),), part)
            z = z + part
        return Encrypted(encrypt_batch(self.public_ctx, z.detach().numpy()), (n, self.dim)), {"z": z}

    def weights(self, state: dict[str, dict[str, torch.Tensor]], samples: int, totals: dict[str, int]) -> Weights:
        from crypto.he_groups import encrypt_share, flatten

        out = Weights(samples=samples)
        for m in (m for m in totals if m in state):
            if m not in self.group_ctx:
                raise RuntimeError(f"station {self.name}: no HE group key for modality {m!r}; refusing to send its weights")
            flat, layout = flatten({k: v.numpy() for k, v in state[m].items()})
            out.encrypted[m] = encrypt_share(self.group_ctx[m], flat, samples, int(totals[m]))
            out.layouts[m] = [[k, list(shape), dt] for k, shape, dt in layout]
        return out

    def averaged(self, commit: Commit, state: dict[str, dict[str, torch.Tensor]]) -> Params:
        """The aggregator returned the sum of the group's encrypted shares (the FedAvg): decrypt it
        with the group key, laid out as our own state."""
        from crypto.he_groups import decrypt_average, layout_of

        out: Params = {}
        for m, cts in commit.encrypted.items():
            if m in self.group_ctx and m in state:
                out[m] = decrypt_average(self.group_ctx[m], cts, layout_of({k: v.numpy() for k, v in state[m].items()}))
        return out


def make_uplink(cfg: Config, name: str, wire_dims: dict[str, int]) -> PlainUplink | HeUplink:
    return HeUplink(cfg, name, wire_dims) if cfg.federation.security == "he" else PlainUplink()
