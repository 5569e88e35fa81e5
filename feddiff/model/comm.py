"""The lightweight communication module: low-rank projection then integer quantisation.

A client's feature vector x (D values) is projected onto a rank-r basis held by the client
(codes = x W_down^T + b), quantised to int8 with one float32 scale per sample, and sent; the
receiver reconstructs x_hat = codes W_up^T + c with its own basis. Both bases are trained end
to end from a random start, through the quantiser with a straight-through estimator: a PCA
start (``init_from_pca``) would need the station's basis at the aggregator before the first
step, fitted to features of conv paths that are themselves still untrained (an orthogonal start
shared through the job seed was measured: no gain). The downlink gradient is the gradient of the
r codes only, so it is small too. Everything is matmul/round/clip, so it exports to ONNX as it
runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class Packed:
    """Exactly what crosses the network for a batch: int codes and per-sample scales."""

    codes: torch.Tensor  # (B, r) int8 / int16, or float32 when bits == 32
    scale: torch.Tensor  # (B,) float32

    def nbytes(self) -> int:
        return self.codes.numel() * self.codes.element_size() + self.scale.numel() * 4


def payload_bytes(batch: int, rank: int, bits: int) -> int:
    """Bytes of one batch's packed features: B*r*bits/8 codes + B float32 scales."""
    return batch * rank * bits // 8 + batch * 4


def raw_bytes(batch: int, dim: int) -> int:
    """Bytes of the same batch sent as raw float32 features."""
    return batch * dim * 4


def quantise(codes: torch.Tensor, bits: int) -> Packed:
    """The wire form of ``codes``: symmetric per-sample integer quantisation (identity at 32 bits)."""
    if bits == 32:
        return Packed(codes.float(), torch.ones(codes.shape[0]))
    qmax = 2 ** (bits - 1) - 1
    scale = codes.abs().amax(dim=1).clamp_min(1e-8) / qmax
    q = torch.round(codes / scale[:, None]).clamp(-qmax, qmax)
    return Packed(q.to(torch.int8 if bits == 8 else torch.int16), scale.float())


def dequantise_codes(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """What the receiver computes from the wire form; written on tensors so ONNX graphs use it too."""
    return codes.float() * scale[:, None]


def dequantise(packed: Packed) -> torch.Tensor:
    return dequantise_codes(packed.codes, packed.scale)


def straight_through(codes: torch.Tensor, bits: int) -> tuple[torch.Tensor, Packed]:
    """(the dequantised codes with the gradient of ``codes``, the wire form): the forward value is
    exactly what the receiver reconstructs, the backward pass skips the rounding."""
    packed = quantise(codes.detach(), bits)
    return codes + (dequantise(packed) - codes).detach(), packed


def wire_bits(encoder: "LowRankEncoder | None") -> int:
    """Bits per code on the wire: raw float32 features when the comm module is off."""
    return encoder.bits if encoder is not None else 32


class LowRankEncoder(nn.Module):
    """Client half: D -> r projection and quantiser."""

    def __init__(self, dim: int, rank: int, bits: int = 8) -> None:
        super().__init__()
        self.dim, self.rank, self.bits = dim, rank, bits
        self.proj = nn.Linear(dim, rank)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def pack(self, x: torch.Tensor) -> Packed:
        """The wire form (no gradient): what the federated client publishes."""
        return quantise(self.project(x).detach(), self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projected and quantised codes, with a straight-through gradient to the projection."""
        return straight_through(self.project(x), self.bits)[0]


class LowRankDecoder(nn.Module):
    """Receiver half: r -> D reconstruction."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.proj = nn.Linear(rank, dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.proj(codes)


@torch.no_grad()
def init_from_pca(encoder: LowRankEncoder, decoder: LowRankDecoder, x: torch.Tensor) -> None:
    """Both bases at the PCA of ``x``: the best linear rank-r fit of fixed features, which is how
    the tests measure what the codec itself can carry."""
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    r = min(encoder.rank, vh.shape[0])
    basis = torch.zeros(encoder.rank, x.shape[1])
    basis[:r] = vh[:r]
    encoder.proj.weight.copy_(basis)
    encoder.proj.bias.copy_(-(basis @ mean))
    decoder.proj.weight.copy_(basis.t())
    decoder.proj.bias.copy_(mean)
