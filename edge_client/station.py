"""A base station's local learning state: its branch(es), optimiser, and committed rounds.

Everything here stays on the station: the raw raster, the denoiser, the autograd graph of the
features it last sent. Only packed codes leave, and only code gradients come back.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from feddiff.config import Config
from feddiff.data.normalise import BandStats
from feddiff.data.scene import Scene
from feddiff.model.branch import ModalityBranch
from feddiff.model.checkpoint import atomic_torch_save
from feddiff.model.comm import Packed, quantise
from feddiff.model.losses import l2_penalty
from feddiff.model.net import build_branch
from feddiff.data.sources import PatchSource, apply_dihedral
from feddiff.model.train import cosine_lr, load_optimizer_state, make_optimizer, pretrain_denoiser, set_lr

log = logging.getLogger("feddiff.edge")
KEEP_ROUNDS = 3


def _seeded_linear(n_in: int, n_out: int, seed: int, modality: str) -> torch.nn.Linear:
    from feddiff.model.net import branch_seed

    with torch.random.fork_rng():
        torch.manual_seed(branch_seed(seed, modality) + 1)
        return torch.nn.Linear(n_in, n_out)


class Station:
    def __init__(self, cfg: Config, name: str, scene: Scene, state_dir: Path) -> None:
        self.cfg = cfg
        self.name = name
        self.scene = scene
        self.modalities = list(cfg.federation.clients[name].modalities)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.train.threads)
        self.branches = {m: build_branch(scene.modalities[m].shape[2], cfg.model, cfg.train.seed, m) for m in self.modalities}
        self.he = cfg.federation.security == "he"
        self.he_proj = {m: _seeded_linear(b.wire_dim, cfg.model.he_dim, cfg.train.seed, m) for m, b in self.branches.items()} if self.he else {}
        self.public_ctx = None  # CKKS public context (HE mode), from the JOB message
        self.group_ctx = self._group_contexts() if self.he else {}  # modality -> secret CKKS context of its horizontal group
        self.sources: dict[str, PatchSource] = {}
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.pending: dict[tuple, dict[str, torch.Tensor]] = {}
        self.loaded_round: Optional[int] = None
        self.applied_steps = 0  # gradient steps applied in the current round attempt
        self.meta = self._read_meta()

    def _group_contexts(self) -> dict:
        """HE mode: the secret keys of this station's horizontal groups, loaded at start so a
        missing key fails the station at once (one line), not in the first averaging."""
        from crypto.he_groups import member_contexts

        return member_contexts(self.cfg, self.name)

    # -- persistence ------------------------------------------------------------------------
    def _meta_path(self) -> Path:
        return self.state_dir / "station.json"

    def _read_meta(self) -> dict:
        p = self._meta_path()
        return json.loads(p.read_text()) if p.exists() else {"committed_round": -1, "seq": 0}

    def write_meta(self, **updates: object) -> None:
        self.meta.update(updates)
        tmp = self._meta_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(self.meta))
        os.replace(tmp, self._meta_path())

    @property
    def committed_round(self) -> int:
        return int(self.meta.get("committed_round", -1))

    # -- stage 1 ------------------------------------------------------------------------------
    def prepare(self, train_rows: np.ndarray, train_cols: np.ndarray, progress: bool) -> None:
        """Fit normalisation on the job's training pixels and pretrain the denoiser(s) once;
        both are saved so a restarted station does not redo them."""
        path = self.state_dir / "pretrained.pt"
        if path.exists():
            ck = torch.load(path, weights_only=True)
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
            atomic_torch_save({"stats": {m: s.to_dict() for m, s in stats.items()}, "unet": {m: b.unet.state_dict() for m, b in self.branches.items()}}, path)
        self.sources = self._sources(stats)
        self.optimizer = make_optimizer([*self.branches.values(), *self.he_proj.values()], self.cfg.train)
        if not (self.state_dir / "round_-1.pt").exists():
            self._save_round(-1)

    def _sources(self, stats: dict[str, BandStats]) -> dict[str, PatchSource]:
        return {m: PatchSource(self.scene.modalities[m], stats[m], self.cfg.model.patch_size) for m in self.modalities}

    @property
    def ready(self) -> bool:
        return self.optimizer is not None

    # -- rounds ---------------------------------------------------------------------------------
    def _trainable_state(self) -> dict:
        state = {m: {k: v for k, v in b.state_dict().items() if not k.startswith("unet.") and not k.startswith("features.")} for m, b in self.branches.items()}
        for m, lin in self.he_proj.items():
            state[m].update({f"he_proj.{k}": v for k, v in lin.state_dict().items()})
        return state

    def _load_trainable(self, states: dict) -> None:
        for m, b in self.branches.items():
            sd = dict(states.get(m, {}))
            if m in self.he_proj and any(k.startswith("he_proj.") for k in sd):
                self.he_proj[m].load_state_dict({k[len("he_proj."):]: sd.pop(k) for k in list(sd) if k.startswith("he_proj.")})
            b.load_state_dict(sd, strict=False)

    def _save_round(self, rnd: int) -> None:
        atomic_torch_save({"round": rnd, "branches": self._trainable_state(), "optimizer": self.optimizer.state_dict()}, self.state_dir / f"round_{rnd}.pt")
        for old in self.state_dir.glob("round_*.pt"):
            r = int(old.stem.split("_")[1])
            if r < rnd - KEEP_ROUNDS + 1 and r != -1:
                old.unlink(missing_ok=True)

    def rollback_to(self, start_round: int) -> None:
        """Load the state committed at the end of round ``start_round - 1``."""
        want = start_round - 1
        if self.loaded_round == want:
            return
        path = self.state_dir / f"round_{want}.pt"
        if not path.exists():
            raise RuntimeError(f"station {self.name}: no committed state for round {want} in {self.state_dir}")
        ck = torch.load(path, weights_only=True)
        self._load_trainable(ck["branches"])
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
            sel = None if own is None or own.get(m) is None else np.flatnonzero(np.asarray(own[m]).astype(bool))
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
                own: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
        return self.forward_inputs(key, self.inputs(rows, cols, dihedral, own), rows.shape[0], train)

    def forward_inputs(self, key: tuple, inputs: dict[str, tuple], n: int, train: bool) -> dict[str, np.ndarray]:
        """Packed codes for each of this station's modalities of an ``n``-sample batch from its
        ``inputs``; in training the graph is kept until the matching BACKWARD arrives. In HE
        mode, rows this station does not answer for contribute zeros to the encrypted sum."""
        out: dict[str, np.ndarray] = {}
        held: dict[str, torch.Tensor] = {}
        z = None
        for m, (sel, x, feats) in inputs.items():
            b = self.branches[m]
            b.train(train)
            with torch.set_grad_enabled(train):
                flat = b.flat_features(x, feats)
                codes = b.encoder.project(flat) if b.encoder is not None else flat
            packed = quantise(codes.detach(), b.encoder.bits) if b.encoder is not None else Packed(codes.detach().float(), torch.ones(codes.shape[0]))
            if self.he:
                with torch.set_grad_enabled(train):
                    deq = packed.codes.float() * packed.scale[:, None]
                    part = self.he_proj[m](codes + (deq - codes).detach())
                    if sel is not None:  # scatter into the full batch: the sum stays aligned per sample
                        part = torch.zeros(n, part.shape[1]).index_put((torch.from_numpy(sel),), part)
                z = part if z is None else z + part
                continue
            out[f"codes_{m}"] = packed.codes.numpy()
            out[f"scale_{m}"] = packed.scale.numpy()
            if train:
                held[m] = codes
        if self.he:
            if z is None:
                z = torch.zeros(n, self.cfg.model.he_dim)
            out = self._encrypt(z.detach().numpy())
            held = {"z": z}
        if train:
            self.pending = {key: held}
        return out

    def awaits_gradient(self, key: tuple) -> bool:
        return key in self.pending

    def _encrypt(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """HE mode: only ciphertexts of this station's projected features leave it."""
        from crypto.he import encrypt_batch
        from feddiff.protocol.arrays import blobs_to_arrays

        return {**blobs_to_arrays("ct", encrypt_batch(self.public_ctx, z)), "shape": np.array(z.shape, dtype=np.int64)}

    def backward(self, key: tuple, grads: dict[str, np.ndarray]) -> bool:
        held = self.pending.pop(key, None)
        if held is None:
            log.warning("station %s: gradient for %s without a pending forward; ignored", self.name, key)
            return False
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for m, codes in held.items():
            g = grads["grad_z"] if m == "z" else grads[f"grad_{m}"]
            total = total + (codes * torch.from_numpy(np.asarray(g)).float()).sum()
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

    def weights(self) -> dict[str, np.ndarray]:
        return {f"w_{m}/{k}": v.numpy() for m, sd in self._trainable_state().items() for k, v in sd.items()}

    def encrypted_weights(self, samples: int, totals: dict[str, int]) -> tuple[dict[str, np.ndarray], dict]:
        """HE mode: per horizontal group (modality in ``totals``), this station's trainable branch
        weights scaled by ``samples / total`` and encrypted under the group's CKKS key, plus the
        parameter layout. Plaintext weights never leave: a group without a key is an error."""
        from crypto.he_groups import encrypt_share, flatten
        from feddiff.protocol.arrays import blobs_to_arrays

        state = self._trainable_state()
        arrays: dict[str, np.ndarray] = {}
        layouts: dict[str, list] = {}
        for m in (m for m in totals if m in self.branches):
            if m not in self.group_ctx:
                raise RuntimeError(f"station {self.name}: no HE group key for modality {m!r}; refusing to send its weights")
            flat, layout = flatten({k: v.numpy() for k, v in state[m].items()})
            arrays.update(blobs_to_arrays(f"wct_{m}", encrypt_share(self.group_ctx[m], flat, samples, int(totals[m]))))
            layouts[m] = [[k, list(shape), dt] for k, shape, dt in layout]
        return arrays, {"he_layout": layouts}

    def _decrypt_averaged(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """HE mode: the aggregator returned the sum of the group's encrypted shares (the FedAvg);
        decrypt it with the group key into ``w_<m>/<param>`` arrays, laid out as our own state."""
        from crypto.he_groups import decrypt_average, layout_of
        from feddiff.protocol.arrays import arrays_to_blobs

        state = self._trainable_state()
        out: dict[str, np.ndarray] = {}
        for m, ctx in self.group_ctx.items():
            if f"wsum_{m}_data" not in arrays:
                continue
            layout = layout_of({k: v.numpy() for k, v in state[m].items()})
            out.update({f"w_{m}/{k}": v for k, v in decrypt_average(ctx, arrays_to_blobs(arrays, f"wsum_{m}"), layout).items()})
        return out

    def commit(self, rnd: int, averaged: dict[str, np.ndarray], seq: int) -> None:
        if self.he and averaged:
            averaged = self._decrypt_averaged(averaged)
        if averaged:
            self._load_trainable({m: {k[len(f"w_{m}/"):]: torch.from_numpy(np.array(v)) for k, v in averaged.items() if k.startswith(f"w_{m}/")} for m in self.branches})
        self._save_round(rnd)
        self.loaded_round = rnd
        self.write_meta(committed_round=rnd, seq=seq)
