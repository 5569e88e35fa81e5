"""What the HE label holder keeps of an evaluation: every prediction, the metrics and the map.

Why here: predictions are labels of the test and scene pixels; in HE mode the aggregator only
relays, so the holder keeps them per evaluation tag (a grid of the scene, -1 = not predicted),
scores the test pixels from its own grid (never predictions someone else sends it: scoring
chosen predictions would make it a label oracle) and writes the map once a tag covers the
whole scene.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from feddiff.maps import write_png_map
from feddiff.metrics import classification_metrics
from feddiff.state.atomic import write_json_atomic

log = logging.getLogger("feddiff.labels")
MAP_FILE = "classification_map.png"
REPORT_FILE = "report.json"


class HeldPredictions:
    def __init__(self, shape: tuple[int, int], test: tuple[np.ndarray, np.ndarray, np.ndarray], class_names: list[str], state_dir: Path) -> None:
        self.shape, self.test, self.class_names = (int(shape[0]), int(shape[1])), test, class_names
        self.state_dir = Path(state_dir)
        self.grids: dict[int, np.ndarray] = {}
        self.mapped: set[int] = set()
        self.report: dict = {}

    def clear(self, tag: int) -> None:
        """A new attempt at ``tag``: forget what an interrupted one predicted."""
        self.grids.pop(tag, None)
        self.mapped.discard(tag)

    def keep(self, tag: int, rows: np.ndarray, cols: np.ndarray, pred: np.ndarray) -> None:
        """Store one batch's predictions; ValueError for pixels outside the scene."""
        h, w = self.shape
        if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= h or cols.max() >= w):
            raise ValueError(f"evaluation batch names pixels outside the {h}x{w} scene")
        grid = self.grids.setdefault(tag, np.full(self.shape, -1, dtype=np.int16))
        grid[rows, cols] = pred
        if tag not in self.mapped and (grid >= 0).all():
            self.mapped.add(tag)
            write_png_map((grid + 1).astype(np.uint8), self.class_names, self.state_dir / MAP_FILE)
            log.info("classification map of the whole scene written to %s", self.state_dir / MAP_FILE)
            if self.report:
                self.write_report(**self.report)

    def metrics(self, tag: int) -> dict:
        """Scores of the test pixels from the predictions kept under ``tag``."""
        grid = self.grids.get(tag)
        rows, cols, labels = self.test
        if grid is None:
            raise ValueError(f"no predictions kept for evaluation {tag}")
        pred = grid[rows, cols].astype(np.int64)
        if (pred < 0).any():
            raise ValueError(f"evaluation {tag}: {int((pred < 0).sum())} of {pred.size} test pixels were never predicted")
        return classification_metrics(labels, pred, len(self.class_names))

    def write_report(self, job: str, metrics: dict, privacy: dict) -> None:
        """The holder's own report: what it published, plus where its map is (rewritten once
        the map exists: the scene is classified after the test set is scored)."""
        self.report = {"job": job, "metrics": metrics, "privacy": privacy}
        doc = {"job": job, **{k: metrics[k] for k in ("oa", "aa", "kappa")}, "per_class": dict(zip(self.class_names, metrics["per_class"])),
               "confusion": metrics["confusion"], "label_dp": privacy,
               "map": str(self.state_dir / MAP_FILE) if (self.state_dir / MAP_FILE).exists() else None}
        write_json_atomic(self.state_dir / REPORT_FILE, doc)
