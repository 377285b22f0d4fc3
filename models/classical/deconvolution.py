"""Non-blind deconvolution of ``[B, C, H, W]`` images with a known ``[k, k]`` kernel (the orientation
of :func:`models.blur.convolve`).

The FFT treats the image as periodic, so the jump between opposite borders would ring through the
result. The image is therefore padded and its border region cross-faded into its own circular blur
(the "edge taper" of MATLAB's deconvolution tools), which makes it consistent with a periodic blur.
Mirroring the image instead would be wrong: a mirrored copy of a blurred image is blurred by the
mirrored kernel.
"""
from __future__ import annotations

import torch

from ..blur.convolve import convolve


def _taper(x: torch.Tensor, kernel: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` padded by a margin and blended, towards its outer edge, into its circular blur."""
    k = kernel.shape[-1]
    margin = min(2 * k, max(x.shape[-2:]))
    mode = "reflect" if margin < min(x.shape[-2:]) else "replicate"
    padded = torch.nn.functional.pad(x, (margin,) * 4, mode=mode)
    size = padded.shape[-2:]
    blurred = torch.fft.ifft2(torch.fft.fft2(padded) * kernel_spectrum(kernel, size)).real
    ramps = []
    for n in size:
        t = torch.ones(n, dtype=x.dtype)
        edge = torch.linspace(0, 1, margin + 2, dtype=x.dtype)[1:-1]
        t[:margin], t[n - margin:] = edge, edge.flip(0)
        ramps.append(t)
    alpha = ramps[0][:, None] * ramps[1][None, :]
    return alpha * padded + (1 - alpha) * blurred, margin


def kernel_spectrum(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The FFT of ``kernel`` placed with its centre at the origin of a ``size`` grid."""
    k = kernel.double()
    c = k.shape[-1] // 2
    padded = torch.zeros(size, dtype=torch.float64)
    padded[:k.shape[0], :k.shape[1]] = k
    return torch.fft.fft2(torch.roll(padded, (-c, -c), (0, 1)))


def gradient_spectrum(size: tuple[int, int]) -> torch.Tensor:
    """``|F(∂x)|² + |F(∂y)|²`` of forward differences on a ``size`` grid."""
    h, w = size
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    return (2 - 2 * torch.cos(2 * torch.pi * fx)) + (2 - 2 * torch.cos(2 * torch.pi * fy))


def wiener_deconvolve(blurry: torch.Tensor, kernel: torch.Tensor, weight: float = 2e-3, exact_borders: bool = True,
                      iterations: int = 30) -> torch.Tensor:
    """Least squares with a gradient penalty, ``argmin ||k * x − y||² + weight·||∇x||²``.

    ``exact_borders``: the image beyond the border is unknown; ``x`` extends half a kernel past it and
    only the pixels the blurry image has constrain it (solved by conjugate gradients, FFT operators).
    Otherwise one closed-form Fourier step (a Wiener filter whose noise-to-signal ratio grows with
    frequency) on an edge-tapered copy: fast, slightly worse near the borders.
    """
    if exact_borders:
        return _deconvolve_valid(blurry.double(), kernel.double(), weight, iterations).to(blurry.dtype)
    tapered, margin = _taper(blurry.double(), kernel)
    size = tapered.shape[-2:]
    K = kernel_spectrum(kernel, size)
    X = torch.conj(K) * torch.fft.fft2(tapered) / (K.abs() ** 2 + weight * gradient_spectrum(size))
    h, w = blurry.shape[-2:]
    return torch.fft.ifft2(X).real[..., margin:margin + h, margin:margin + w].to(blurry.dtype)


def sparse_deconvolve(blurry: torch.Tensor, kernel: torch.Tensor, weight: float = 2e-3, steps: int = 6) -> torch.Tensor:
    """Total variation by half-quadratic splitting (Krishnan & Fergus 2009 with exponent 1):
    ``argmin ||k * x − y||² + weight·Σ(|∂x x| + |∂y x|)`` on an edge-tapered copy.

    Each step shrinks the gradients of the current estimate towards zero (soft threshold) and solves the
    quadratic problem that pulls ``∇x`` to them in closed form with the FFT; the coupling doubles per step,
    so the result moves from a Wiener filter towards the TV solution: flat areas lose the noise Wiener
    amplifies, edges stay."""
    tapered, margin = _taper(blurry.double(), kernel)
    size = tapered.shape[-2:]
    K = kernel_spectrum(kernel, size)
    fy = torch.fft.fftfreq(size[0], dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(size[1], dtype=torch.float64)[None, :]
    Dx, Dy = torch.exp(2j * torch.pi * fx) - 1, torch.exp(2j * torch.pi * fy) - 1  # forward differences
    numerator = torch.conj(K) * torch.fft.fft2(tapered)
    beta = weight * 4  # first step: a Wiener filter with this gradient weight
    X = numerator / (K.abs() ** 2 + beta * gradient_spectrum(size))
    for _ in range(steps):
        gx, gy = torch.fft.ifft2(Dx * X).real, torch.fft.ifft2(Dy * X).real
        t = weight / (2 * beta)
        wx, wy = torch.sign(gx) * (gx.abs() - t).clamp(min=0), torch.sign(gy) * (gy.abs() - t).clamp(min=0)
        rhs = numerator + beta * (torch.conj(Dx) * torch.fft.fft2(wx) + torch.conj(Dy) * torch.fft.fft2(wy))
        X = rhs / (K.abs() ** 2 + beta * gradient_spectrum(size))
        beta *= 2
    h, w = blurry.shape[-2:]
    return torch.fft.ifft2(X).real[..., margin:margin + h, margin:margin + w].to(blurry.dtype)


def richardson_lucy(blurry: torch.Tensor, kernel: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Richardson–Lucy: multiplicative updates that keep the estimate positive (Poisson likelihood)."""
    estimate = blurry.clamp(min=1e-4).double()
    observed = blurry.double().clamp(min=0)
    flipped = kernel.flip(-2, -1).double()
    kern = kernel.double()
    for _ in range(iterations):
        ratio = observed / convolve(estimate, kern).clamp(min=1e-6)
        estimate = estimate * convolve(ratio, flipped)
    return estimate.to(blurry.dtype)


def _deconvolve_valid(y: torch.Tensor, kernel: torch.Tensor, weight: float, iterations: int) -> torch.Tensor:
    c = kernel.shape[-1] // 2
    h, w = y.shape[-2:]
    size = (h + 2 * c, w + 2 * c)
    K = kernel_spectrum(kernel, size)
    G = gradient_spectrum(size)

    def blur_valid(x):  # circular on the extended canvas; the cropped part never wraps
        return torch.fft.ifft2(torch.fft.fft2(x) * K).real[..., c:c + h, c:c + w]

    def blur_adjoint(r):
        canvas = torch.nn.functional.pad(r, (c, c, c, c))
        return torch.fft.ifft2(torch.fft.fft2(canvas) * torch.conj(K)).real

    def normal(x):
        return blur_adjoint(blur_valid(x)) + weight * torch.fft.ifft2(torch.fft.fft2(x) * G).real

    x = torch.nn.functional.pad(y, (c, c, c, c), mode="replicate")
    r = blur_adjoint(y) - normal(x)
    p = r.clone()
    rs = (r * r).sum((-2, -1), keepdim=True)
    for _ in range(iterations):
        ap = normal(p)
        alpha = rs / (p * ap).sum((-2, -1), keepdim=True).clamp(min=1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum((-2, -1), keepdim=True)
        if float(rs_new.max()) < 1e-20:
            break
        p = r + (rs_new / rs.clamp(min=1e-30)) * p
        rs = rs_new
    return x[..., c:c + h, c:c + w]
