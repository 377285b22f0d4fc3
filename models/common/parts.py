"""Models made of named parts (text encoder, autoencoder, UNet, …) that visit the compute device one
stage at a time, so a stage needs memory for its own parts only."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class NamedParts:
    """Mixin: a model with ``part(name) -> nn.Module`` gets :meth:`parts_on`."""

    def part(self, name: str) -> nn.Module:
        raise NotImplementedError

    @contextmanager
    def parts_on(self, names, device: torch.device, offload: torch.device | None = None):
        """Move the named parts to ``device`` for a stage, and to ``offload`` afterwards if given."""
        for name in names:
            self.part(name).to(device)
        try:
            yield
        finally:
            if offload is not None and torch.device(offload) != torch.device(device):
                for name in names:
                    self.part(name).to(offload)
