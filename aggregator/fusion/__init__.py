"""Fusion strategies: how the aggregator turns the stations' features into a trained head.

  base            the Fusion protocol the round loop calls (steps, predict, score, state)
  plain           plain feature exchange (FORWARD / FEATURES / BACKWARD), shared by the two below
  local           LocalLabels (labels at the aggregator) and StationLabels (labels at a station)
  he              HeThirdParty: ciphertext sums to a third-party label holder (security: he)

``make_fusion`` picks one from the job config: ``model.fusion`` (additive = HE, resolved from
``federation.security`` when auto; config rules keep the two consistent) and
``federation.label_holder``.
"""

from __future__ import annotations

from feddiff.config import Config

from aggregator.fusion.base import Fusion
from aggregator.link import Link


def make_fusion(cfg: Config, link: Link) -> Fusion:
    from aggregator.fusion.he import HeThirdParty
    from aggregator.fusion.local import LocalLabels, StationLabels

    if cfg.model.fusion == "additive" or (cfg.model.fusion == "auto" and cfg.federation.security == "he"):
        return HeThirdParty(cfg, link)
    return StationLabels(cfg, link) if link.holder is not None else LocalLabels(cfg, link)
