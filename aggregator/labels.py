"""The label holder's view of the scene: label maps only, never a modality raster.

The aggregator, as label holder, reads the train/test label maps named in the job config and
nothing else; stations read only their own rasters.
"""

from __future__ import annotations

import numpy as np

from feddiff.config import Config
from feddiff.data.loader import load_labels as load_label_maps
from feddiff.data.sources import PixelSet
from feddiff.data.patches import labelled_pixels

from aggregator.coordinator import Labels


def load_labels(cfg: Config) -> Labels:
    train_map, test_map, class_names = load_label_maps(cfg)
    tr = PixelSet(*labelled_pixels(train_map))
    te = PixelSet(*labelled_pixels(test_map))
    return Labels(tr, te, class_names)


def placeholder_labels() -> Labels:
    """HE mode: the aggregator holds no labels; the label holder's hello fills in the samples."""
    empty = PixelSet(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Labels(empty, empty, [])
