"""``--set dotted.key=value`` for the benchmarks: a candidate recipe given on the command line,
so a measured variant is reproduced by its command alone instead of by a config copy."""

from __future__ import annotations

import json


def parse_value(text: str):
    """JSON where it parses (numbers, true/false, lists), the plain string otherwise: YAML
    would read ``off`` as false."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_sets(data: dict, sets: list[str]) -> dict:
    """Write each ``dotted.key=value`` into the nested mapping ``data`` (in place) and return it."""
    for item in sets:
        key, _, value = item.partition("=")
        node = data
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(value)
    return data
