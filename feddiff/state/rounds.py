"""A party's committed rounds: one ``round_<r>.pt`` per kept round plus a JSON meta file.

The meta file (``station.json`` for a station) names the committed round and the channel's
sequence number; a round file is written before the meta names it, so a crash between the two
leaves an uncommitted file that ``latest`` ignores. Round -1 is the start state and is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from feddiff.errors import FedDiffError
from feddiff.state.atomic import atomic_torch_save, load_torch, write_json_atomic

KEEP_ROUNDS = 3


class RoundStore:
    def __init__(self, directory: Path, meta_name: str = "station.json", keep: int = KEEP_ROUNDS) -> None:
        self.dir = Path(directory)
        self.meta_path = self.dir / meta_name
        self.keep = keep
        self.meta: dict[str, Any] = self._read_meta()

    # -- meta ---------------------------------------------------------------------------------
    def _read_meta(self) -> dict[str, Any]:
        if not self.meta_path.exists():
            return {"committed_round": -1, "seq": 0}
        try:
            return json.loads(self.meta_path.read_text())
        except (ValueError, OSError) as exc:
            raise FedDiffError(f"{self.meta_path}: unreadable ({exc}); move it away to start over") from None

    def write_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        write_json_atomic(self.meta_path, self.meta)

    @property
    def committed_round(self) -> int:
        return int(self.meta.get("committed_round", -1))

    # -- named documents (e.g. the station's pretrained denoisers) ------------------------------
    def doc_path(self, name: str) -> Path:
        return self.dir / f"{name}.pt"

    def has_doc(self, name: str) -> bool:
        return self.doc_path(name).exists()

    def save_doc(self, name: str, doc: dict) -> None:
        atomic_torch_save(doc, self.doc_path(name))

    def load_doc(self, name: str) -> dict:
        return load_torch(self.doc_path(name), name)

    # -- rounds -------------------------------------------------------------------------------
    def round_path(self, rnd: int) -> Path:
        return self.dir / f"round_{rnd}.pt"

    def has_round(self, rnd: int) -> bool:
        return self.round_path(rnd).exists()

    def save_round(self, rnd: int, doc: dict) -> None:
        """Write round ``rnd``'s document and drop rounds older than the kept window (never -1)."""
        atomic_torch_save({"round": rnd, **doc}, self.round_path(rnd))
        for r in self.rounds():
            if r < rnd - self.keep + 1 and r != -1:
                self.round_path(r).unlink(missing_ok=True)

    def load_round(self, rnd: int) -> dict:
        if not self.has_round(rnd):
            raise FedDiffError(f"{self.dir}: no committed state for round {rnd}")
        return load_torch(self.round_path(rnd), f"round {rnd}")

    def commit(self, rnd: int, doc: dict, **meta: Any) -> None:
        """Round file first, then the meta that names it committed."""
        self.save_round(rnd, doc)
        self.write_meta(committed_round=rnd, **meta)

    def rounds(self) -> list[int]:
        out = []
        for p in self.dir.glob("round_*.pt"):
            try:
                out.append(int(p.stem.split("_", 1)[1]))
            except ValueError:
                continue
        return sorted(out)

    def latest(self) -> Optional[int]:
        """The committed round if its file exists, else the highest round file, else None."""
        if self.committed_round >= 0 and self.has_round(self.committed_round):
            return self.committed_round
        rounds = self.rounds()
        return rounds[-1] if rounds else None
