"""Data layer: readers, scenes, splits, normalisation, patches, synthetic scene."""

from feddiff.data.normalise import BandStats
from feddiff.data.scene import Scene

__all__ = ["BandStats", "Scene"]
