"""FedDiff model: schedule, denoising U-Net, diffusion features, branches, fusion head, comm module."""
