"""transport layer of the FedDiff core."""
