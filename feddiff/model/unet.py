"""Guided-diffusion style denoising U-Net for small patches, with a frequency-domain block.

One U-Net per modality. Only ``encode`` (input to middle block) is needed for diffusion features,
so feature extraction never pays for the decoder. The 2-D DFT of the frequency block is written
as products with fixed cosine/sine matrices: for 8 x 8 patches that is as cheap as an FFT, it is
exactly the complex transform (real and imaginary parts both kept, unlike the released code,
which dropped the imaginary part), and it exports to plain ONNX MatMuls.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from feddiff.config_specs import UNetSpec


def _groups(channels: int, wanted: int) -> int:
    g = min(wanted, channels)
    while channels % g:
        g -= 1
    return g


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Transformer / DDPM style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _rdft_bases(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine matrices of the real DFT of length ``n`` (n // 2 + 1 frequencies)."""
    k = torch.arange(n // 2 + 1, dtype=torch.float64)[:, None]
    m = torch.arange(n, dtype=torch.float64)[None]
    ang = 2 * math.pi * k * m / n
    return torch.cos(ang), torch.sin(ang)


class SpectralMixing(nn.Module):
    """rFFT2 -> complex 1x1 channel mixing -> inverse rFFT2, computed in closed form.

    The complex weight ``W = Wr + i Wi`` mixes channels at every frequency, so the block can
    shift phase as well as scale amplitude: the information the released code threw away.

    Why no transforms at run time: ``W`` is the same at every frequency, so it commutes with the
    DFT. The full DFT along H and its inverse cancel, and along W the inverse real transform of
    ``i * rfft(x)`` is a fixed real linear map ``x -> x @ K`` (a discrete Hilbert transform).
    The block is therefore exactly ``Wr x + Wi (x @ K)``: one small matmul and one 1x1 mixing of
    2C channels instead of a dozen tiny matmuls per block (they were 40 % of inference time).
    ``K`` is built from the DFT matrices below, and tests check the result against torch.fft.
    """

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.wr = nn.Parameter(torch.eye(channels) + 0.02 * torch.randn(channels, channels))
        self.wi = nn.Parameter(0.02 * torch.randn(channels, channels))
        self.register_buffer("k", _hilbert_matrix(width).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.cat([self.wr, self.wi], dim=1)[:, :, None, None]
        return F.conv2d(torch.cat([x, x @ self.k], dim=1), w)


def _hilbert_matrix(width: int) -> torch.Tensor:
    """K with ``irfft(i * rfft(v)) = v @ K`` for real row vectors v of length ``width``."""
    cw, sw = _rdft_bases(width)  # rfft: V = v @ (cw - i sw)^T
    # inverse along the half axis: Hermitian weights (DC and Nyquist once, the rest twice)
    c = torch.full((width // 2 + 1, 1), 2.0, dtype=torch.float64)
    c[0] = 1.0
    if width % 2 == 0:
        c[-1] = 1.0
    aw, bw = c * cw / width, c * sw / width  # irfft(Y) = Re(Y) @ aw - Im(Y) @ bw
    # i * V = (v @ sw^T) + i (v @ cw^T)
    return sw.t() @ aw - cw.t() @ bw


class FrequencyBlock(nn.Module):
    """Spectral mixing followed by a small conv stack, added back residually."""

    def __init__(self, channels: int, size: int, groups: int) -> None:
        super().__init__()
        self.spectral = SpectralMixing(channels, size, size)
        self.convs = nn.Sequential(
            nn.GroupNorm(_groups(channels, groups), channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.convs(self.spectral(x))


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, timestep added, twice; residual (projected when the width
    changes). ``kernel`` and ``norm`` let the spectral denoiser reuse it per pixel (1 x 1, its
    own per-pixel norm) with the same parameter names and order."""

    def __init__(self, cin: int, cout: int, tdim: int, groups: int, kernel: int = 3,
                 norm: Optional[Callable[[int], nn.Module]] = None) -> None:
        super().__init__()
        norm = norm or (lambda c: nn.GroupNorm(_groups(c, groups), c))
        self.norm1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel, padding=kernel // 2)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the (tiny) middle-block grid; plain matmuls for export."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # b, hw, hw
        out = (v @ attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj(out)


class Denoiser(nn.Module):
    """What every consumer of a denoiser calls (``DiffusionFeatures``, stage-1 pretraining, the
    ONNX export): ``stem``, ``encode``, ``encode_stem`` and ``forward``, written once here so the
    U-Net and the spectral denoiser cannot drift apart. A subclass builds its own layers (this
    class creates no parameters, so names and seeded values are the subclass's alone) and gives
    ``stem``, ``_encode`` (stem output to the middle block, plus the time embedding and the
    skips) and ``_decode`` (middle block back to the predicted noise)."""

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode(self, h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def _decode(self, h: torch.Tensor, temb: torch.Tensor, hs: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Middle-block output (B, mid_channels, mid_size, mid_size): the diffusion feature.
        ``t`` is one timestep per sample, or shape (1,) for one timestep shared by the batch."""
        return self._encode(self.stem(x), t)[0]

    def encode_stem(self, stem: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``encode`` from a precomputed ``stem(x)``."""
        return self._encode(stem, t)[0]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._decode(*self._encode(self.stem(x), t))


class DenoisingUNet(Denoiser):
    """Predicts the noise in a noisy patch. ``encode`` stops at the middle block."""

    def __init__(self, in_channels: int, patch_size: int, spec: UNetSpec = UNetSpec()) -> None:
        super().__init__()
        base_channels, channel_mult, num_res_blocks, groups = spec.base_channels, spec.channel_mult, spec.num_res_blocks, spec.groups
        attention, freq_block = spec.attention, spec.freq_block
        self.in_channels = in_channels
        self.patch_size = patch_size
        levels = len(channel_mult)
        self.multiple = 2 ** (levels - 1)
        self.padded = -(-patch_size // self.multiple) * self.multiple
        tdim = base_channels * 4
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [base_channels]
        ch, size = base_channels, self.padded
        for lvl, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out = base_channels * mult
                block = nn.ModuleList([ResBlock(ch, out, tdim, groups)])
                block.append(FrequencyBlock(out, size, groups) if freq_block else nn.Identity())
                self.down.append(block)
                ch = out
                skips.append(ch)
            if lvl < levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                size //= 2
        self.mid_channels = ch
        self.mid_size = size
        self.mid1 = ResBlock(ch, ch, tdim, groups)
        self.mid_attn = SelfAttention(ch, groups) if attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, tdim, groups)

        self.up = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                out = base_channels * mult
                self.up.append(nn.ModuleList([ResBlock(ch + skips.pop(), out, tdim, groups)]))
                ch = out
            if lvl > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]))
        self.out = nn.Sequential(nn.GroupNorm(_groups(ch, groups), ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.padded - x.shape[-1]
        return F.pad(x, (0, extra, 0, extra), mode="replicate") if extra else x

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The first convolution (after padding). It is linear in ``x``, which lets feature
        extraction run it once per patch instead of once per timestep."""
        return self.conv_in(self._pad(x))

    def _encode(self, h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """From the stem's output ``h`` to the middle block; also the embedding and the skips."""
        temb = self.time_mlp(timestep_embedding(t, self.base_channels))
        hs = [h]
        for block in self.down:
            if isinstance(block[0], ResBlock):
                h = block[1](block[0](h, temb))
            else:
                h = block[0](h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        return h, temb, hs

    def _decode(self, h: torch.Tensor, temb: torch.Tensor, hs: list[torch.Tensor]) -> torch.Tensor:
        """Up path from the middle block; the output is cropped back to the unpadded patch."""
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = block[0](torch.cat([h, hs.pop()], dim=1), temb)
            else:
                h = block[1](block[0](h))
        out = self.out(h)
        p = self.patch_size
        return out[..., :p, :p]
