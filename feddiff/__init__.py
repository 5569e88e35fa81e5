"""FedDiff: diffusion-model driven federated multi-modal land-cover classification."""

__version__ = "0.1.0"
