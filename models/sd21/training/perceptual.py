"""Edge-aware perceptual losses: EA-X(a, b) = X(a, b) + X(S(a), S(b)), S the Sobel magnitude.

The lab's definition (OSDFace, D3SR; FideDiff's "EA-LPIPS"): Sobel on the grayscale image as
``√(gx² + gy² + 1e-6)``, repeated to three channels so any RGB metric takes it. X is pluggable:
LPIPS when the ``lpips`` package is installed (training-only: it pulls torchvision and downloads
its backbone weights on first use), or :class:`FeatureDistance` on any feature network (the tests use
:class:`RandomConvFeatures`, a seeded random convolution stack: real computation, no weights to fetch).
Images are ``[B, 3, H, W]`` in [-1, 1].
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GRAY = (0.299, 0.587, 0.114)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` → ``[B, 3, H, W]``: the grayscale gradient magnitude (replicate padding),
    repeated over three channels."""
    gray = (image * image.new_tensor(GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True)
    kx = image.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(2, 3))
    return torch.sqrt(gx * gx + gy * gy + 1e-6).expand(-1, 3, -1, -1)


def edge_aware(distance: Distance) -> Distance:
    """EA-X: the distance of the images plus the distance of their Sobel magnitudes (per sample)."""
    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return distance(a, b) + distance(sobel_magnitude(a), sobel_magnitude(b))
    return loss


class FeatureDistance(nn.Module):
    """LPIPS-style distance on any feature network returning a list of maps: channel-normalised
    features, squared difference, spatial mean, summed over layers; one value per sample."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features.requires_grad_(False).eval()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = a.new_zeros(a.shape[0])
        for fa, fb in zip(self.features(a), self.features(b)):
            fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
            fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
            total = total + (fa - fb).pow(2).sum(1).mean((1, 2))
        return total


class RandomConvFeatures(nn.Module):
    """A seeded stack of strided 3x3 convolutions + ReLU; returns each stage's map."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        stages, previous = [], 3
        for width in widths:
            conv = nn.Conv2d(previous, width, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / (previous * 9)) ** 0.5)
                conv.bias.zero_()
            stages.append(nn.Sequential(conv, nn.ReLU()))
            previous = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


def lpips_distance(net: str = "vgg") -> nn.Module:
    """LPIPS from the ``lpips`` package (``pip install lpips``; downloads its backbone's ImageNet
    weights through torchvision on first use). Returns a module ``(a, b) → [B]``."""
    try:
        import lpips
    except ImportError:
        raise ImportError("EA-LPIPS needs the 'lpips' package (training only): pip install lpips") from None

    class _LPIPS(nn.Module):
        def __init__(self):
            super().__init__()
            self.metric = lpips.LPIPS(net=net, verbose=False).requires_grad_(False).eval()

        def forward(self, a, b):
            return self.metric(a, b, normalize=False).reshape(a.shape[0])

    return _LPIPS()


PERCEPTUAL_KINDS = ("lpips", "features")


def perceptual_distance(kind: str) -> nn.Module:
    """The training tools' ``--perceptual`` choice: ``lpips`` (VGG) or ``features`` (a seeded random
    conv net: no package, no download)."""
    if kind == "lpips":
        return lpips_distance("vgg")
    if kind == "features":
        return FeatureDistance(RandomConvFeatures())
    raise ValueError(f"perceptual must be one of {PERCEPTUAL_KINDS}, got {kind!r}")
