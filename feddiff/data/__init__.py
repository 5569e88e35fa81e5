"""Data layer: readers, scenes, splits, normalisation, patches, synthetic scene."""

from feddiff.data.loader import load_scene
from feddiff.data.normalise import BandStats
from feddiff.data.scene import GeoRef, Scene
from feddiff.data.synthetic import make_synthetic_scene

__all__ = ["BandStats", "GeoRef", "Scene", "load_scene", "make_synthetic_scene"]
