"""One state store for every party: atomic files, committed rounds, rollback.

  atomic     temp file + fsync + rename for bytes, JSON and torch documents; safe torch loads
  rounds     RoundStore: a party's committed rounds (``round_<r>.pt``) and its small JSON meta
  snapshot   SnapshotStore (one committed document) and Committed (in-memory rollback point)
  federated  what export needs from a finished job, read through the stores above

Why one package: a crash at any moment must leave each file either the old or the new version,
and export must read a federated model through the same code that wrote it, never by parsing
another role's private files.
"""
