"""What ``feddiff export`` tells a user about parity: a cause is never claimed for a clean graph."""

from __future__ import annotations

from export.cli import parity_spread
from export.parity import BOUNDARY_SHARE, PARITY_TOL


def test_a_graph_with_no_patch_over_the_tolerance_is_reported_as_such():
    line = parity_spread(0.0, PARITY_TOL)
    assert line == f"every patch within {PARITY_TOL:g}" and "rounding" not in line


def test_patches_over_the_tolerance_are_counted_against_the_allowance():
    line = parity_spread(0.004, PARITY_TOL)
    assert line.startswith("0.4 % of patches over") and f"{100 * BOUNDARY_SHARE:g} %" in line
