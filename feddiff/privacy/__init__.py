"""Label differential privacy for the gradients a label holder returns (``label_dp``) and the
Renyi-DP accountant that turns its releases into (epsilon, delta) (``accountant``)."""
