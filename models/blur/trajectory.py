"""Motion-blur kernels: random camera-shake trajectories and straight lines, rasterised sub-pixel.

Camera shake follows the construction of Boracchi & Foi (2012, "Modeling the performance of image
restoration from motion blur"), which OSDD's synthetic set uses: a trajectory of constant speed whose
velocity is perturbed at every step by Gaussian noise (hand tremor), pulled back towards the start
(inertia / centripetal term), and occasionally reversed (impulsive jerks). All random draws come
from one ``torch.Generator`` in a fixed order, so a seed fixes the kernel.

Kernel conventions (shared with :mod:`.convolve` and the ``BLUR_KERNEL`` type):

* odd size ``k``, centre pixel ``k // 2``; entries are non-negative and sum to one;
* ``kernel[c + dy, c + dx]`` is the fraction of the exposure the image spent displaced by
  ``(dy, dx)``, i.e. blurring is the convolution ``out(p) = Σ_u kernel[c + u] · sharp(p − u)``;
* the centroid (first moment) is exactly the centre: the trajectory is centred on its time average
  and bilinear splatting preserves the mean, so blurring never shifts the image.

Intensity ``s`` in [0, 1] sets the extent: the path reaches at most ``s · (k − 1) / 2`` px from its
centroid, so it always fits the kernel (a straight path is then ``s · (k − 1)`` px long). Scaling by
extent rather than path length keeps jittery paths, which retrace themselves after every jerk, from
collapsing to a dot. The shape depends on the seed only, so for a fixed seed the kernel grows with
the intensity.
"""
from __future__ import annotations

import cmath
import math
from dataclasses import dataclass, asdict

import torch

SHAKE_STEPS = 2000  # trajectory samples, as in Boracchi & Foi's reference construction
_CANVAS_LENGTH = 60.0  # path length (px) the dynamics are defined at, then rescaled


@dataclass
class KernelInfo:
    """What made a kernel (JSON-safe; carried in ``BLUR_KERNEL['info']``)."""
    kind: str
    size: int
    length_px: float
    intensity: float | None = None
    angle_deg: float | None = None
    anxiety: float | None = None
    jerks: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def check_size(size: int) -> int:
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number (the centre is a pixel), got {size}")
    return size


def rasterize(points: torch.Tensor, size: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Splat ``[N, 2]`` offsets ``(dx, dy)`` from the kernel centre bilinearly onto a ``size²`` grid.

    Each point spreads its weight over the four surrounding pixels, so positions count with sub-pixel
    accuracy and the kernel's centroid equals the points' weighted mean. Points must lie within
    ``(size - 1) / 2`` of the centre. The result sums to one.
    """
    size = check_size(size)
    if size == 1:
        return torch.ones(1, 1)
    points = points.to(torch.float64)
    weights = torch.ones(len(points), dtype=torch.float64) if weights is None else weights.to(torch.float64)
    c = size // 2
    pos = points + c
    if pos.min() < -1e-6 or pos.max() > size - 1 + 1e-6:
        raise ValueError(f"trajectory leaves the {size}x{size} kernel; reduce its length")
    pos = pos.clamp(0, size - 1)
    base = pos.floor().clamp(max=size - 2)
    frac = pos - base
    kernel = torch.zeros(size * size, dtype=torch.float64)
    x0, y0 = base[:, 0].long(), base[:, 1].long()
    fx, fy = frac[:, 0], frac[:, 1]
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        kernel.index_add_(0, (y0 + dy) * size + x0 + dx, w * weights)
    kernel = kernel.view(size, size)
    return (kernel / kernel.sum()).float()


def _uniform(generator: torch.Generator | None, n: int = 1) -> list[float]:
    return torch.rand(n, generator=generator, dtype=torch.float64).tolist()


def shake_trajectory(generator: torch.Generator | None = None, steps: int = SHAKE_STEPS,
                     anxiety: float | None = None) -> tuple[torch.Tensor, dict]:
    """A random camera-shake path: ``[steps, 2]`` points ``(x, y)`` centred on their mean and reaching
    at most 1/2 from it, and the parameters drawn (``anxiety``, ``jerks``, ``length``: the path length
    in those units).

    Dynamics (Boracchi & Foi 2012): constant speed; each step adds Gaussian tremor and a pull back
    towards the start scaled by ``anxiety``; with probability ``freq · anxiety`` the velocity is
    reversed (an impulsive jerk, up to ±0.5 rad off the reverse direction).
    """
    drawn_anxiety, centripetal, tremor, freq_jerk, angle = _uniform(generator, 5)
    anxiety = 0.1 * drawn_anxiety if anxiety is None else float(anxiety)
    centripetal, tremor, freq_jerk = 0.7 * centripetal, 10.0 * tremor, 0.2 * freq_jerk
    jerk_test = _uniform(generator, steps)
    jerk_angle = _uniform(generator, steps)
    gauss = torch.randn(steps, 2, generator=generator, dtype=torch.float64).tolist()

    step_length = _CANVAS_LENGTH / (steps - 1)
    v = cmath.exp(1j * 2 * math.pi * angle) * step_length
    x = [0j] * steps
    jerks = 0
    for t in range(steps - 1):
        jump = 0j
        if jerk_test[t] < freq_jerk * anxiety:
            jump = 2 * v * cmath.exp(1j * (math.pi + jerk_angle[t] - 0.5))
            jerks += 1
        dv = jump + anxiety * (tremor * complex(*gauss[t]) - centripetal * x[t]) * step_length
        v = v + dv
        v = v / abs(v) * step_length if abs(v) > 0 else cmath.exp(1j * 2 * math.pi * angle) * step_length
        x[t + 1] = x[t] + v
    path = torch.tensor([[p.real, p.imag] for p in x], dtype=torch.float64)
    path = path - path.mean(0)
    scale = 2 * float(path.norm(dim=1).max()) or 1.0
    return path / scale, {"anxiety": anxiety, "jerks": jerks, "length": _CANVAS_LENGTH / scale}


def camera_shake_kernel(size: int, intensity: float, generator: torch.Generator | None = None,
                        anxiety: float | None = None, steps: int = SHAKE_STEPS) -> tuple[torch.Tensor, KernelInfo]:
    """A ``[size, size]`` camera-shake kernel reaching ``intensity · (size - 1) / 2`` px from its centre."""
    size = check_size(size)
    intensity = float(intensity)
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must be in [0, 1], got {intensity}")
    path, params = shake_trajectory(generator, steps, anxiety)
    extent = intensity * (size - 1)
    kernel = rasterize(path * extent, size)
    return kernel, KernelInfo("camera_shake", size, params["length"] * extent, intensity=intensity,
                              anxiety=params["anxiety"], jerks=params["jerks"])


def linear_kernel(size: int, length: float, angle_deg: float = 0.0) -> tuple[torch.Tensor, KernelInfo]:
    """Uniform motion along a straight segment of ``length`` px at ``angle_deg`` (counter-clockwise
    from +x, image y pointing down), centred; ``length`` at most ``size - 1``."""
    size = check_size(size)
    length = float(length)
    if not 0.0 <= length <= size - 1 + 1e-9:
        raise ValueError(f"a {length:g} px line does not fit a {size}x{size} kernel (at most {size - 1})")
    samples = max(2, int(math.ceil(length * 8)) + 1)
    s = torch.linspace(-0.5, 0.5, samples, dtype=torch.float64) * length
    theta = math.radians(angle_deg)
    points = torch.stack([s * math.cos(theta), -s * math.sin(theta)], 1)
    return rasterize(points, size), KernelInfo("linear", size, length, angle_deg=float(angle_deg))


def random_kernel(size: int, intensity: float, generator: torch.Generator | None = None,
                  kind: str = "camera_shake") -> tuple[torch.Tensor, KernelInfo]:
    """One kernel of ``kind`` ('camera_shake' or 'linear'; a linear one gets a random angle)."""
    if kind == "camera_shake":
        return camera_shake_kernel(size, intensity, generator)
    if kind == "linear":
        angle = 180.0 * _uniform(generator)[0]
        kernel, info = linear_kernel(size, intensity * (check_size(size) - 1), angle)
        info.intensity = float(intensity)
        return kernel, info
    raise ValueError(f"unknown kernel kind {kind!r}; use 'camera_shake' or 'linear'")


def kernel_spread(kernel: torch.Tensor) -> float:
    """Root-mean-square distance (px) of the kernel's mass from its centroid: a size measure."""
    k = kernel.double() / kernel.sum()
    ys, xs = torch.meshgrid(torch.arange(k.shape[-2], dtype=torch.float64),
                            torch.arange(k.shape[-1], dtype=torch.float64), indexing="ij")
    cy, cx = (k * ys).sum(), (k * xs).sum()
    return float(((k * ((ys - cy) ** 2 + (xs - cx) ** 2)).sum()).sqrt())


def kernel_centroid(kernel: torch.Tensor) -> tuple[float, float]:
    """``(dy, dx)`` of the kernel's centre of mass relative to its centre pixel."""
    k = kernel.double() / kernel.sum()
    c = kernel.shape[-1] // 2
    ys = torch.arange(k.shape[-2], dtype=torch.float64)[:, None]
    xs = torch.arange(k.shape[-1], dtype=torch.float64)[None, :]
    return float((k * ys).sum() - c), float((k * xs).sum() - c)
