"""Blurry/sharp pairs for training and evaluation, from files.

* :class:`PairedFolder`: the GoPro / RealBlur layout after the usual preparation, ``root/input/`` and
  ``root/target/`` with the same relative file names (``blur/`` + ``sharp/`` also accepted).
* :class:`SharpFolder`: sharp images only; blur is synthesised (:mod:`.synthesis`).
* :class:`PatchSampler`: random training batches from either, seeded and resumable (its generator
  state is saved with the checkpoint), with flips/rotations; synthetic blur is made on a crop with a
  margin of half a kernel, so borders never see the padding.
* :func:`synthetic_pairs`: a fixed evaluation set: image ``i`` blurred with kernels from seed
  ``(seed, i)``, so a set is reproducible and independent of its order and size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..common.image_io import ImageReadError, list_images, read_image
from .synthesis import BlurMix, BlurSettings, degrade, draw_kernels

PAIR_LAYOUTS = (("input", "target"), ("blur", "sharp"))


@dataclass
class Pair:
    name: str
    blurry: torch.Tensor  # [3, H, W]
    sharp: torch.Tensor
    kernel: dict | None = None  # the BLUR_KERNEL when synthetic


def find_pairs(root: str) -> list[tuple[str, str, str]]:
    """(relative name, blurry path, sharp path) of every pair under ``root``."""
    for blurry_dir, sharp_dir in PAIR_LAYOUTS:
        a, b = os.path.join(root, blurry_dir), os.path.join(root, sharp_dir)
        if os.path.isdir(a) and os.path.isdir(b):
            names = [os.path.relpath(p, a) for p in list_images(a, recursive=True)]
            pairs = [(n, os.path.join(a, n), os.path.join(b, n)) for n in names if os.path.isfile(os.path.join(b, n))]
            if not pairs:
                raise FileNotFoundError(f"{root}: no file in {blurry_dir}/ has a namesake in {sharp_dir}/")
            return pairs
    raise FileNotFoundError(f"{root}: expected sub-folders input/ and target/ (GoPro/RealBlur layout) or blur/ and sharp/")


class PairedFolder:
    def __init__(self, root: str):
        self.root = root
        self.items = find_pairs(root)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Pair:
        name, blurry_path, sharp_path = self.items[index]
        blurry, sharp = read_image(blurry_path), read_image(sharp_path)
        if blurry.shape != sharp.shape:
            raise ImageReadError(blurry_path, f"is {blurry.shape[-1]}x{blurry.shape[-2]} but its target is {sharp.shape[-1]}x{sharp.shape[-2]}")
        return Pair(name, blurry, sharp)


class SharpFolder:
    def __init__(self, root: str):
        self.root = root
        self.paths = list_images(root, recursive=True)
        if not self.paths:
            raise FileNotFoundError(f"{root}: no images found")

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return os.path.relpath(self.paths[index], self.root)

    def __getitem__(self, index: int) -> torch.Tensor:
        return read_image(self.paths[index])


def pair_seed(seed: int, index: int) -> int:
    return (int(seed) * 1_000_003 + index) % (2 ** 63)


def synthetic_pairs(folder: SharpFolder, settings: BlurSettings, seed: int, crop: int = 0):
    """Yield a :class:`Pair` per image: blurred with kernels from ``pair_seed(seed, i)``; ``crop`` > 0
    takes the central ``crop × crop`` square first (images smaller than that stay whole)."""
    for index in range(len(folder)):
        sharp = folder[index]
        if crop:
            h, w = sharp.shape[-2:]
            top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
            sharp = sharp[:, top:top + crop, left:left + crop]
        generator = torch.Generator().manual_seed(pair_seed(seed, index))
        kernel = draw_kernels(1, settings, generator)
        blurry = degrade(sharp[None], kernel, settings, generator)[0]
        yield Pair(folder.name(index), blurry, sharp, kernel)


def augment(images: list[torch.Tensor], code: int) -> list[torch.Tensor]:
    """One of the 8 flips/rotations of the square (``code`` 0..7), the same for every image."""
    out = []
    for image in images:
        if code & 1:
            image = image.flip(-1)
        out.append(torch.rot90(image, code >> 1, (-2, -1)))
    return out


class SeededStream:
    """Draws from its own generator only, so a seed (and a restored :meth:`state`) reproduces the stream."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(int(seed))

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (), generator=self.generator))

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator, dtype=torch.float64))


class PatchSampler(SeededStream):
    """Random ``(blurry, sharp)`` batches ``[B, 3, P, P]``; ``next_batch`` draws everything from its
    own generator, so a seed (and a restored :meth:`state`) reproduces the stream exactly.

    With ``settings`` the source is sharp images (all kept in memory as 8-bit) and the blur is
    synthesised per patch (a :class:`BlurMix` draws new settings for every patch; its sharp draws
    give pairs whose input is the target); otherwise paired images. ``scale`` draws a zoom factor per patch from the
    range (< 1 shrinks the image first), which multiplies the effective variety of small data.
    """

    def __init__(self, source: PairedFolder | SharpFolder, patch: int, batch: int, seed: int,
                 settings: BlurSettings | BlurMix | None = None, scale: tuple[float, float] = (1.0, 1.0)):
        super().__init__(seed)
        self.patch, self.batch, self.settings, self.scale = patch, batch, settings, scale
        if settings is None:
            pairs = [source[i] for i in range(len(source))]
            self.images = [torch.stack([p.blurry, p.sharp]).mul(255).round().to(torch.uint8) for p in pairs]
        else:
            self.images = [source[i].mul(255).round().to(torch.uint8)[None] for i in range(len(source))]
        small = [i for i, im in enumerate(self.images) if min(im.shape[-2:]) < patch]
        if small:
            raise ValueError(f"{len(small)} training image(s) are smaller than the {patch} px patch")

    def _crop(self, image: torch.Tensor, size: int) -> torch.Tensor:
        """A random ``size`` square (after a random zoom) of ``[n, 3, H, W]`` uint8 → float."""
        zoom = self._uniform(*self.scale)
        h, w = image.shape[-2:]
        zoom = max(zoom, size / min(h, w))  # never smaller than the crop
        region = min(h, w, int(round(size / zoom)))
        top, left = self._randint(h - region + 1), self._randint(w - region + 1)
        crop = image[..., top:top + region, left:left + region].float() / 255
        if region != size:
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return crop

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        blurry, sharp = [], []
        for _ in range(self.batch):
            image = self.images[self._randint(len(self.images))]
            code = self._randint(8)
            if self.settings is None:
                b, s = augment(list(self._crop(image, self.patch)), code)
            else:
                margin = self.settings.kernel_size // 2
                big = augment([self._crop(image, self.patch + 2 * margin)[0]], code)[0]
                settings = self.settings.draw(self.generator) if isinstance(self.settings, BlurMix) else self.settings
                if settings is None:
                    b = big
                else:
                    kernel = draw_kernels(1, settings, self.generator)
                    b = degrade(big[None], kernel, settings, self.generator)[0]
                inner = (slice(None), slice(margin, margin + self.patch), slice(margin, margin + self.patch))
                b, s = b[inner], big[inner]
            blurry.append(b)
            sharp.append(s)
        return torch.stack(blurry), torch.stack(sharp)
