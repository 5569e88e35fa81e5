"""The party runtime: one long-running node loop for every party that is not the aggregator.

  node      Node: connect, hello/heartbeat, attempt filter, typed decode, error containment, and
            the handlers an app registers per message kind (Flower's node vs the app it runs)
  observe   Observer hooks for monitoring (events with fields), shared with the aggregator

A station (``edge_client``) and the HE label holder (``label_holder``) are apps: a hello and a
table of handlers. See docs/architecture.md.
"""

from feddiff.runtime.node import App, Incoming, Node, Route
from feddiff.runtime.observe import Observer, Observers

__all__ = ["App", "Incoming", "Node", "Observer", "Observers", "Route"]
