"""Error types whose message is the one line a user sees.

Every error a user can cause (bad config, bad raster, bad message, missing key) derives from
``FedDiffError`` so the CLI can print it on one line and exit 2 instead of a traceback.
"""


class FedDiffError(Exception):
    """An error caused by input the user controls; its message is complete on one line."""


class ConfigError(FedDiffError):
    """A configuration file is missing, malformed, or holds a value out of range."""


class DataError(FedDiffError):
    """A raster, label map or sample table is unreadable or inconsistent."""
