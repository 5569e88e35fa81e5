"""What the aggregator knows of the samples: labels when it is the label holder, else only which
pixels are samples (from the label holder's hello).

The aggregator, as label holder, reads the train/test label maps named in the job config and
nothing else; stations read only their own rasters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feddiff.config import Config
from feddiff.data.loader import load_labels as load_label_maps
from feddiff.data.patches import labelled_pixels
from feddiff.data.sources import PixelSet
from feddiff.protocol.messages import Hello


@dataclass
class Labels:
    train: PixelSet
    test: PixelSet
    class_names: list[str]


def load_labels(cfg: Config) -> Labels:
    train_map, test_map, class_names = load_label_maps(cfg)
    return Labels(PixelSet(*labelled_pixels(train_map)), PixelSet(*labelled_pixels(test_map)), class_names)


def placeholder_labels() -> Labels:
    """Another party holds the labels: its hello fills in the samples."""
    empty = PixelSet(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Labels(empty, empty, [])


def labels_from_hello(hello: Hello) -> Labels:
    """The samples a remote label holder announced, with unknown (-1) labels."""
    if hello.train is None or hello.test is None:
        raise ValueError("label holder's hello carries no samples")
    tr, te = hello.train, hello.test
    return Labels(PixelSet(tr.rows, tr.cols, np.full(tr.rows.shape[0], -1)), PixelSet(te.rows, te.cols, np.full(te.rows.shape[0], -1)),
                  list(hello.meta.get("classes", [])))
