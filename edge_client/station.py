"""A base station's local learning state: its branch(es), optimiser, and committed rounds.

Everything here stays on the station: the raw raster, the denoiser, the autograd graph of the
features it last sent. Only the uplink's payload leaves (``edge_client.uplink``), and only the
gradient of what it sent comes back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from feddiff.config import Config
from feddiff.data.normalise import BandStats
from feddiff.data.scene import Scene
from feddiff.data.sources import PatchSource, apply_dihedral
from feddiff.model.comm import straight_through, wire_bits
from feddiff.model.losses import l2_penalty
from feddiff.model.net import build_branch
from feddiff.model.optim import cosine_lr, load_optimizer_state, make_optimizer, set_lr
from feddiff.model.pretrain import pretrain_denoiser
from feddiff.protocol.messages import Commit, Payload, Weights
from feddiff.state.layout import PRETRAINED, station_store

from edge_client.uplink import Part, make_uplink

log = logging.getLogger("feddiff.edge")


class Station:
    def __init__(self, cfg: Config, name: str, scene: Scene, state_dir: Path) -> None:
        self.cfg = cfg
        self.name = name
        self.scene = scene
        self.modalities = list(cfg.federation.clients[name].modalities)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = station_store(self.state_dir)
        torch.set_num_threads(cfg.train.threads)
        self.branches = {m: build_branch(scene.modalities[m].shape[2], cfg.model, cfg.train.seed, m) for m in self.modalities}
        self.uplink = make_uplink(cfg, name, {m: b.wire_dim for m, b in self.branches.items()})
        self.sources: dict[str, PatchSource] = {}
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.pending: dict[tuple, dict[str, torch.Tensor]] = {}
        self.loaded_round: Optional[int] = None
        self.applied_steps = 0  # gradient steps applied in the current round attempt

    @property
    def meta(self) -> dict:
        return self.store.meta

    def write_meta(self, **updates: object) -> None:
        self.store.write_meta(**updates)

    @property
    def committed_round(self) -> int:
        return self.store.committed_round

    # -- stage 1 ------------------------------------------------------------------------------
    def prepare(self, train_rows: np.ndarray, train_cols: np.ndarray, progress: bool) -> None:
        """Fit normalisation on the job's training pixels and pretrain the denoiser(s) once;
        both are saved so a restarted station does not redo them."""
        if self.store.has_doc(PRETRAINED):
            ck = self.store.load_doc(PRETRAINED)
            stats = {m: BandStats.from_dict(d) for m, d in ck["stats"].items()}
            for m, b in self.branches.items():
                b.unet.load_state_dict(ck["unet"][m])
                b.freeze_denoiser()
        else:
            mask = np.zeros(self.scene.shape, dtype=bool)
            mask[train_rows, train_cols] = True
            stats = {m: BandStats.fit(self.scene.modalities[m], mask) for m in self.modalities}
            srcs = self._sources(stats)
            for m, b in self.branches.items():
                pretrain_denoiser(b, srcs[m], self.cfg, self.cfg.train.seed, progress, desc=f"pretrain {m}")
                b.freeze_denoiser()
            self.store.save_doc(PRETRAINED, {"stats": {m: s.to_dict() for m, s in stats.items()}, "unet": {m: b.unet.state_dict() for m, b in self.branches.items()}})
        self.sources = self._sources(stats)
        extras = [mod for mods in self.uplink.modules.values() for mod in mods.values()]
        self.optimizer = make_optimizer([*self.branches.values(), *extras], self.cfg.train)
        if not self.store.has_round(-1):
            self.store.save_round(-1, self._round_doc())

    def _sources(self, stats: dict[str, BandStats]) -> dict[str, PatchSource]:
        return {m: PatchSource(self.scene.modalities[m], stats[m], self.cfg.model.patch_size) for m in self.modalities}

    @property
    def ready(self) -> bool:
        return self.optimizer is not None

    # -- rounds ---------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per modality, what training changes: the branch without its frozen denoiser, plus the
        uplink's own modules as ``<module>.<param>`` (what horizontal averaging exchanges)."""
        state = {m: {k: v for k, v in b.state_dict().items() if not k.startswith(("unet.", "features."))} for m, b in self.branches.items()}
        for m, mods in self.uplink.modules.items():
            state[m].update({f"{name}.{k}": v for name, mod in mods.items() for k, v in mod.state_dict().items()})
        return state

    def _load_trainable(self, states: dict[str, dict]) -> None:
        for m, b in self.branches.items():
            sd = dict(states.get(m, {}))
            for name, mod in self.uplink.modules.get(m, {}).items():
                mine = {k[len(name) + 1:]: sd.pop(k) for k in list(sd) if k.startswith(f"{name}.")}
                if mine:
                    mod.load_state_dict(mine)
            b.load_state_dict(sd, strict=False)

    def _round_doc(self) -> dict:
        """A round as stored: the model's branches apart from the uplink's modules, so export
        reads the branches as they are."""
        state, extras = self.trainable_state(), {}
        for m, mods in self.uplink.modules.items():
            extras[m] = {k: state[m].pop(k) for k in list(state[m]) if k.split(".", 1)[0] in mods}
        return {"branches": state, "uplink": extras, "optimizer": self.optimizer.state_dict()}

    def rollback_to(self, start_round: int) -> None:
        """Load the state committed at the end of round ``start_round - 1``."""
        want = start_round - 1
        if self.loaded_round == want:
            return
        ck = self.store.load_round(want)
        self._load_trainable({m: {**sd, **ck.get("uplink", {}).get(m, {})} for m, sd in ck["branches"].items()})
        load_optimizer_state(self.optimizer, ck["optimizer"], f"station {self.name} round {want}")
        self.pending.clear()
        self.loaded_round = want
        log.info("station %s at committed round %d", self.name, want)

    def begin_round(self, rnd: int) -> None:
        set_lr(self.optimizer, cosine_lr(self.cfg.train.lr, rnd, self.cfg.train.epochs))
        self.applied_steps = 0

    def inputs(self, rows: np.ndarray, cols: np.ndarray, dihedral: Optional[np.ndarray], own: Optional[dict[str, np.ndarray]] = None) -> dict[str, tuple]:
        """Per modality, (selected rows or None, patches, frozen diffusion features): the part of
        a forward that does not depend on the weights being trained, so the agent can compute it
        for the next step while the last step's gradient is still on its way. ``own`` (HE mode)
        maps a modality to the samples of the batch this station answers for."""
        out: dict[str, tuple] = {}
        for m, b in self.branches.items():
            sel = None if not own or own.get(m) is None else np.flatnonzero(np.asarray(own[m]).astype(bool))
            if sel is not None and sel.size == 0:
                continue  # another station of this modality answers for the whole batch
            x = self.sources[m].patches(rows if sel is None else rows[sel], cols if sel is None else cols[sel])
            if dihedral is not None:
                d = dihedral if sel is None else dihedral[sel]
                x = apply_dihedral(x, torch.from_numpy(d.astype(np.int64)))
            with torch.no_grad():
                out[m] = (sel, x, b.diffusion_features(x))
        return out

    def forward(self, key: tuple, rows: np.ndarray, cols: np.ndarray, dihedral: Optional[np.ndarray], train: bool,
                own: Optional[dict[str, np.ndarray]] = None) -> Payload:
        return self.forward_inputs(key, self.inputs(rows, cols, dihedral, own), rows.shape[0], train)

    def forward_inputs(self, key: tuple, inputs: dict[str, tuple], n: int, train: bool) -> Payload:
        """The FEATURES payload of an ``n``-sample batch from its ``inputs``; in training the
        graph is kept until the matching BACKWARD arrives."""
        parts: dict[str, Part] = {}
        for m, (sel, x, feats) in inputs.items():
            b = self.branches[m]
            b.train(train)
            with torch.set_grad_enabled(train):
                flat = b.flat_features(x, feats)
                codes = b.encoder.project(flat) if b.encoder is not None else flat
                received, packed = straight_through(codes, wire_bits(b.encoder))
            parts[m] = Part(codes, packed, received, sel)
        with torch.set_grad_enabled(train):
            payload, held = self.uplink.features(parts, n)
        if train:
            self.pending = {key: held}
        return payload

    def awaits_gradient(self, key: tuple) -> bool:
        return key in self.pending

    def backward(self, key: tuple, grads: dict[str, np.ndarray]) -> bool:
        held = self.pending.pop(key, None)
        if held is None:
            log.warning("station %s: gradient for %s without a pending forward; ignored", self.name, key)
            return False
        if set(held) - set(grads):
            raise ValueError(f"station {self.name}: gradient for {sorted(set(held) - set(grads))} missing")
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for name, sent in held.items():
            total = total + (sent * torch.from_numpy(np.asarray(grads[name])).float()).sum()
        l2 = self.cfg.train.l2
        if l2 > 0:
            total = total + l2 * l2_penalty((n, p) for b in self.branches.values() for n, p in b.named_parameters())
        total.backward()
        self.optimizer.step()
        # the weights now hold steps of an uncommitted round: a rerun of this round (after a
        # timeout or a restarted peer) must reload the committed state, not skip the rollback
        self.loaded_round = None
        self.applied_steps += 1
        return True

    def weights(self, samples: int, totals: dict[str, int]) -> Weights:
        return self.uplink.weights(self.trainable_state(), samples, totals)

    def commit(self, rnd: int, commit: Commit, seq: int) -> None:
        averaged = self.uplink.averaged(commit, self.trainable_state())
        if averaged:
            self._load_trainable({m: {k: torch.from_numpy(np.array(v)) for k, v in sd.items()} for m, sd in averaged.items() if m in self.branches})
        self.store.commit(rnd, self._round_doc(), seq=seq)
        self.loaded_round = rnd
