"""protocol layer of the FedDiff core."""
