"""LoRA for the SD 2.1 UNet at inference, without peft.

A :class:`LoRALayer` wraps one ``nn.Linear`` or ``nn.Conv2d`` and holds any number of named adapters,
each a ``down`` (same kernel, stride and padding as the base, ``rank`` outputs) and an ``up`` (1x1 or
linear, ``rank`` inputs) with ``alpha``; its output is ``base(x) + Σ scale · alpha/rank · up(down(x))``.
A scale is a float or a per-sample tensor of shape ``(B,)`` (OSDD mixes two adapters per image).
:func:`merge_adapters` folds adapters with float scales into the base weights (one network evaluation
instead of 1 + adapters); the rank comes from the shapes.

The pack's LoRA state dict: ``{module}.lora_down.weight``, ``{module}.lora_up.weight`` and
``{module}.alpha`` (a 0-d tensor) per adapter, ``module`` the diffusers module name.
:func:`peft_to_pack` / :func:`pack_to_peft` convert from and to peft's keys
(``{module}.lora_A[.{adapter}].weight``, ``lora_B``; alpha lives in peft's config, not its state).
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

from ..common.checkpoint import CheckpointError

# OSEDiff-lineage target list (module-name suffixes), used by FideDiff and OSDD.
UNET_TARGETS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut", "conv_out",
                "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
PACK_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
_PEFT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_PEFT_PREFIXES = ("base_model.model.", "unet.")
MAX_RANK = 1024  # far above the ranks LoRAs are trained with (4..256); refused before anything is allocated

Scale = float | torch.Tensor


class LoRAAdapter(nn.Module):
    """One adapter's weights for a base layer: ``down`` then ``up``, scaled by ``alpha / rank``."""

    def __init__(self, base: nn.Linear | nn.Conv2d, rank: int, alpha: float):
        super().__init__()
        if isinstance(base, nn.Conv2d):
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation,
                                  groups=1, bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        self.down.to(base.weight.device, base.weight.dtype)
        self.up.to(base.weight.device, base.weight.dtype)
        self.rank = rank
        self.alpha = float(alpha)

    @property
    def factor(self) -> float:
        return self.alpha / self.rank

    def delta_weight(self) -> torch.Tensor:
        """``up @ down`` as a weight of the base layer's shape (float32)."""
        down, up = self.down.weight.float(), self.up.weight.float()
        if down.dim() == 4:
            return torch.einsum("or,rihw->oihw", up[:, :, 0, 0], down) * self.factor
        return up @ down * self.factor


class LoRALayer(nn.Module):
    """A base ``nn.Linear``/``nn.Conv2d`` plus named adapters with float or per-sample scales."""

    def __init__(self, base: nn.Linear | nn.Conv2d):
        super().__init__()
        if not isinstance(base, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"LoRA wraps nn.Linear or nn.Conv2d, not {type(base).__name__}")
        self.base = base
        self.adapters = nn.ModuleDict()
        self.scales: dict[str, Scale] = {}

    def add(self, name: str, rank: int, alpha: float, scale: Scale = 1.0) -> LoRAAdapter:
        if not name.isidentifier() or hasattr(self.adapters, name):
            raise ValueError(f"LoRA adapter name {name!r} is not usable (an identifier that no module attribute has)")
        if isinstance(self.base, nn.Conv2d) and self.base.groups != 1:
            raise ValueError("LoRA on grouped convolutions is not supported")
        adapter = LoRAAdapter(self.base, rank, alpha)
        self.adapters[name] = adapter
        self.scales[name] = scale
        return adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        for name, adapter in self.adapters.items():
            scale = self.scales.get(name, 1.0)
            if isinstance(scale, torch.Tensor):
                if scale.dim() != 1 or scale.shape[0] != x.shape[0]:
                    raise ValueError(f"LoRA '{name}': per-sample scale of shape {tuple(scale.shape)} for a batch of {x.shape[0]}")
                scale = scale.to(out.device, out.dtype).view(-1, *([1] * (out.dim() - 1)))
            elif scale == 0:
                continue
            out = out + adapter.up(adapter.down(x)) * (scale * adapter.factor)
        return out

    def merge(self, names: Iterable[str] | None = None) -> None:
        """Fold adapters (float scales only) into the base weights and drop them."""
        names = list(self.adapters) if names is None else [n for n in names if n in self.adapters]
        weight = self.base.weight
        total = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for name in names:
            scale = self.scales.get(name, 1.0)
            if isinstance(scale, torch.Tensor):
                raise ValueError(f"LoRA '{name}' has a per-sample scale and cannot be merged")
            total += self.adapters[name].delta_weight() * float(scale)
            del self.adapters[name]
            self.scales.pop(name, None)
        with torch.no_grad():
            weight.copy_((weight.float() + total).to(weight.dtype))


def _matches(name: str, targets: Iterable[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_layers(model: nn.Module) -> dict[str, LoRALayer]:
    """Module name (of the wrapped base layer, as before injection) → its LoRA wrapper."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALayer)}


def _wrap(model: nn.Module, name: str) -> LoRALayer:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    module = getattr(parent, child)
    if isinstance(module, LoRALayer):
        return module
    layer = LoRALayer(module)
    setattr(parent, child, layer)
    return layer


def inject_lora(model: nn.Module, name: str, rank: int, alpha: float | None = None,
                targets: Iterable[str] = UNET_TARGETS, scale: Scale = 1.0, init: str = "zero_up") -> list[str]:
    """Add adapter ``name`` to every Linear/Conv2d whose module name ends with a target.

    ``init="zero_up"``: down random (Kaiming uniform, as peft), up zero, so the model is unchanged.
    Returns the wrapped module names."""
    targets = tuple(targets)
    found = [n for n, m in model.named_modules()
             if (isinstance(m, LoRALayer) or (isinstance(m, (nn.Linear, nn.Conv2d)) and not n.endswith((".base", ".down", ".up"))))
             and ".adapters." not in n and _matches(n, targets)]  # wrapped layers take a further adapter
    for module_name in found:
        adapter = _wrap(model, module_name).add(name, rank, rank if alpha is None else alpha, scale)
        nn.init.kaiming_uniform_(adapter.down.weight, a=5 ** 0.5)
        if init == "zero_up":
            nn.init.zeros_(adapter.up.weight)
        else:
            nn.init.normal_(adapter.up.weight, std=1.0 / rank)
    return found


def set_scale(model: nn.Module, name: str, scale: Scale) -> None:
    for layer in lora_layers(model).values():
        if name in layer.adapters:
            layer.scales[name] = scale


def merge_adapters(model: nn.Module, names: Iterable[str] | None = None) -> None:
    names = None if names is None else list(names)
    for layer in lora_layers(model).values():
        layer.merge(names)


def unwrap_lora(model: nn.Module) -> None:
    """Replace wrappers that hold no adapter any more by their base layer (after a full merge)."""
    for name, layer in lora_layers(model).items():
        if not layer.adapters:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base)


def adapter_state(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Adapter ``name`` in the pack's layout."""
    state = {}
    for module_name, layer in lora_layers(model).items():
        if name in layer.adapters:
            adapter = layer.adapters[name]
            state[f"{module_name}.lora_down.weight"] = adapter.down.weight.detach()
            state[f"{module_name}.lora_up.weight"] = adapter.up.weight.detach()
            state[f"{module_name}.alpha"] = torch.tensor(adapter.alpha)
    return state


def load_adapter(model: nn.Module, state: dict[str, torch.Tensor], name: str, source: str, scale: Scale = 1.0) -> int:
    """Add adapter ``name`` from a pack-layout state; ranks from the shapes. Returns the rank (the
    largest if they differ). Every key must name a Linear/Conv2d of ``model`` with fitting shapes."""
    modules = sorted({k[: -len(s)] for k in state for s in PACK_SUFFIXES if k.endswith(s)})
    stray = [k for k in state if not k.endswith(PACK_SUFFIXES)]
    if stray or not modules:
        raise CheckpointError(source, f"not a LoRA state dict (e.g. entry {stray[0]!r})" if stray else "holds no LoRA weights")
    named = dict(model.named_modules())
    ranks = []
    for module_name in modules:
        down, up = state.get(f"{module_name}.lora_down.weight"), state.get(f"{module_name}.lora_up.weight")
        if down is None or up is None:
            raise CheckpointError(source, f"LoRA for {module_name!r} lacks its down or up weight")
        module = named.get(module_name)
        if isinstance(module, LoRALayer):
            module = module.base
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise CheckpointError(source, f"LoRA for {module_name!r}, which is not a linear or convolution layer of this UNet")
        rank = _checked_rank(module, module_name, down, up, state.get(f"{module_name}.alpha"), source)
        alpha = float(state[f"{module_name}.alpha"]) if f"{module_name}.alpha" in state else float(rank)
        layer = _wrap(model, module_name)
        adapter = layer.add(name, rank, alpha, scale)
        for part, tensor in (("down", down), ("up", up)):
            target = getattr(adapter, part).weight
            with torch.no_grad():
                target.copy_(tensor)
        ranks.append(rank)
    return max(ranks)


def _checked_rank(base: nn.Linear | nn.Conv2d, module_name: str, down: torch.Tensor, up: torch.Tensor,
                  alpha: torch.Tensor | None, source: str) -> int:
    """The rank of one layer's LoRA, after its down and up weights are checked against the base
    layer (shapes, floating point, rank within 1..MAX_RANK, a finite alpha) before any adapter is
    allocated: a rank read from a hostile shape would otherwise size the adapter."""
    rank = down.shape[0] if down.dim() else 0
    if not 1 <= rank <= MAX_RANK:
        raise CheckpointError(source, f"LoRA down of {module_name!r} is {tuple(down.shape)}: rank {rank}, "
                                      f"outside 1..{MAX_RANK}")
    if isinstance(base, nn.Conv2d):
        shapes = {"down": (rank, base.in_channels, *base.kernel_size), "up": (base.out_channels, rank, 1, 1)}
    else:
        shapes = {"down": (rank, base.in_features), "up": (base.out_features, rank)}
    for part, tensor in (("down", down), ("up", up)):
        if tuple(tensor.shape) != shapes[part]:
            raise CheckpointError(source, f"LoRA {part} of {module_name!r} is {tuple(tensor.shape)}, the layer needs {shapes[part]}")
        if not tensor.is_floating_point():
            raise CheckpointError(source, f"LoRA {part} of {module_name!r} holds {str(tensor.dtype).replace('torch.', '')} "
                                          "data where weights are floating point; the file is damaged or was rewritten")
    if alpha is not None and (alpha.numel() != 1 or not alpha.is_floating_point() or not torch.isfinite(alpha).all()):
        raise CheckpointError(source, f"LoRA alpha of {module_name!r} must be one finite floating-point number, "
                                      f"got {str(alpha.dtype).replace('torch.', '')} {tuple(alpha.shape)}")
    return rank


def peft_to_pack(state: dict[str, torch.Tensor], alpha: float | dict[str, float], adapter: str | None = None,
                 source: str = "peft") -> dict[str, torch.Tensor]:
    """peft's LoRA keys (``get_peft_model_state_dict`` or a full ``state_dict`` of a peft-wrapped UNet)
    → the pack's. ``alpha``: peft's ``lora_alpha`` (or per-module values); ``adapter``: which adapter
    when the keys carry adapter names (all keys must belong to one adapter otherwise)."""
    out, adapters = {}, set()
    for key, value in state.items():
        match = _PEFT_KEY.match(key)
        if not match:
            continue
        found = match.group("adapter")
        if adapter is not None and found not in (None, adapter):
            continue
        adapters.add(found)
        module = match.group("module")
        for prefix in _PEFT_PREFIXES:
            if module.startswith(prefix):
                module = module[len(prefix):]
        module = module.removesuffix(".base_layer")
        out[f"{module}.lora_{'down' if match.group('side') == 'A' else 'up'}.weight"] = value
        module_alpha = alpha.get(module, None) if isinstance(alpha, dict) else alpha
        if module_alpha is not None:
            out[f"{module}.alpha"] = torch.tensor(float(module_alpha))
    if len(adapters) > 1:
        raise CheckpointError(source, f"holds several LoRA adapters {sorted(a or '' for a in adapters)}; name one")
    if not out:
        raise CheckpointError(source, "holds no peft LoRA weights ('….lora_A.weight')")
    return out


def pack_to_peft(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The pack's layout → peft's keys (as ``set_peft_model_state_dict`` takes them) and the alphas."""
    out, alphas = {}, {}
    for key, value in state.items():
        if key.endswith(".lora_down.weight"):
            out[key[: -len(".lora_down.weight")] + ".lora_A.weight"] = value
        elif key.endswith(".lora_up.weight"):
            out[key[: -len(".lora_up.weight")] + ".lora_B.weight"] = value
        elif key.endswith(".alpha"):
            alphas[key[: -len(".alpha")]] = float(value)
    return out, alphas

