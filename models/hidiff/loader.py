"""Finding, loading and saving HI-Diff models.

Two layouts are accepted: a folder of the official release (``net_g.pth``, ``net_le_dm.pth``,
``net_d.pth``, each ``{'params': state_dict}``) and the pack's single ``.safetensors`` whose keys are
prefixed by the part name and whose metadata records the sampler and the source.
"""
from __future__ import annotations

import json
import os

import torch

from ..common.checkpoint import SAFETENSORS_SUFFIXES, CheckpointError, read_metadata, read_state_dict
from ..common.colour import MAX_SIGMA
from ..common.discovery import find_models
from ..common.state_dict import build_checked, check_entries, check_size, load_strict, require_finite, sub_state
from .denoiser import SimpleDenoiser, build_denoiser
from .diffusion import SamplerConfig
from .latent_encoder import LatentEncoder, LatentEncoderConfig
from .model import HIDiff
from .transformer import Transformer, TransformerConfig

METHOD = "hidiff"
PARTS = ("net_g", "net_le_dm", "net_d")
OPTIONAL_PARTS = ("net_le",)
# Bounds of the architecture, far above the official releases (widths up to 384, a 4x4 prior of
# 256 channels, 6 blocks a level): what a file's shapes may describe.
MAX_SIZE = 1 << 14  # any tensor dimension
MAX_GROUP = 64  # the prior is group² tokens
MAX_BLOCKS = 256  # blocks of one level or encoder


def _official_file(folder: str, part: str) -> str | None:
    for suffix in (".pth", ".safetensors"):
        path = os.path.join(folder, part + suffix)
        if os.path.isfile(path):
            return path
    return None


def is_official_folder(folder: str) -> bool:
    return all(_official_file(folder, part) for part in PARTS)


def is_hidiff_file(path: str) -> bool:
    """A pack ``.safetensors`` of HI-Diff (its header only is read); raises CheckpointError for a
    ``.safetensors`` that cannot be read, so the listing can say why it is skipped."""
    return path.lower().endswith(SAFETENSORS_SUFFIXES) and read_metadata(path).get("method") == METHOD


def find_hidiff_models(root: str) -> list[str]:
    """Names (relative to ``root``, '/'-separated) of the HI-Diff models under it, sorted."""
    return find_models(root, is_official_folder, is_hidiff_file)


def default_sampler(net_d_state: dict) -> SamplerConfig:
    """The official releases pair the denoiser variant with its sampler: GoPro's mixer denoiser runs
    the local 8-step sampler, RealBlur's simple denoiser the 16-step LDM one."""
    return SamplerConfig.ldm(16) if "resmlp.0.weight" in net_d_state else SamplerConfig.local(8)


def sampler_from_metadata(metadata: dict[str, str], path: str) -> SamplerConfig | None:
    """The sampler a pack file records, validated (a file's numbers decide how long a run takes)."""
    if "sampler" not in metadata:
        return None
    try:
        data = json.loads(metadata["sampler"])
    except ValueError:
        raise CheckpointError(path, "its metadata field 'sampler' is not valid JSON") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, "its metadata field 'sampler' is not a table of settings")
    unknown = sorted(set(data) - set(SamplerConfig.__dataclass_fields__))
    if unknown:
        raise CheckpointError(path, f"its metadata field 'sampler' has unknown settings: {', '.join(unknown)}")
    config = SamplerConfig(**data)
    problems = config.problems()
    if problems:
        raise CheckpointError(path, "its metadata field 'sampler' is invalid: " + "; ".join(problems))
    return config


def read_parts(path: str) -> tuple[dict[str, dict], dict[str, str], dict[str, str]]:
    """The state dict of each part, the file each came from (for errors) and the metadata."""
    path = os.fspath(path)
    if os.path.isdir(path):
        states, sources = {}, {}
        for part in PARTS + OPTIONAL_PARTS:
            file = _official_file(path, part)
            if file is None:
                if part in PARTS:
                    raise CheckpointError(os.path.join(path, part + ".pth"),
                                          "missing; an HI-Diff folder needs net_g.pth, net_le_dm.pth and net_d.pth")
                continue
            states[part], sources[part] = read_state_dict(file), file
        return states, sources, {}
    metadata = read_metadata(path)
    state = read_state_dict(path)
    if metadata.get("method", METHOD) != METHOD:
        raise CheckpointError(path, f"is a {metadata['method']!r} model, not an HI-Diff one")
    states = {part: sub_state(state, part + ".") for part in PARTS + OPTIONAL_PARTS}
    missing = [part for part in PARTS if not states[part]]
    if missing:
        raise CheckpointError(path, f"holds no HI-Diff weights for {', '.join(missing)} (keys must start with 'net_g.', 'net_le_dm.', 'net_d.')")
    if not states["net_le"]:
        del states["net_le"]
    return states, {part: f"{path} [{part}]" for part in states}, metadata


def load_hidiff(path: str, sampler: SamplerConfig | None = None) -> HIDiff:
    """Build an HI-Diff from a release folder or a pack ``.safetensors``, strictly, sizes from shapes."""
    states, sources, metadata = read_parts(path)
    if sampler is None:
        sampler = sampler_from_metadata(metadata, path) or default_sampler(states["net_d"])
    for part, state in states.items():
        check_entries(state, sources[part], MAX_SIZE)
        require_finite(state, sources[part])
    parts = {name: _build(name, states[name], sources[name]) if name in states else None
             for name in ("net_g", "net_le_dm", "net_d", "net_le")}
    net_g, net_le_dm, net_d, net_le = parts.values()
    for name, module in parts.items():
        if module is not None:
            load_strict(module, states[name], sources[name])
    _check_compatible(net_g, net_le_dm, net_d, path)
    return HIDiff(net_g, net_le_dm, net_d, sampler, net_le, colour_fix=_colour_fix(metadata, path)).eval()


def _build(part: str, state: dict, source: str):
    """One part sized from its shapes, checked against the architecture's bounds and then against
    the file on the meta device before it is built (``build_checked``)."""
    if part == "net_g":
        config = TransformerConfig.from_state_dict(state, source)
        check_size(source, "the prior group", config.group, 1, MAX_GROUP)
        for name, layer in config.layers.items():
            check_size(source, f"{name} blocks", layer.blocks, 0, MAX_BLOCKS)
            check_size(source, f"{name} heads", layer.heads, 1, layer.dim)
        return build_checked(lambda: Transformer(config), state, source)
    if part == "net_d":
        return build_checked(lambda: build_denoiser(state, source), state, source)
    config = LatentEncoderConfig.from_state_dict(state, source)
    check_size(source, "the prior group", config.group, 1, MAX_GROUP)
    check_size(source, "encoder blocks", config.blocks, 0, MAX_BLOCKS)
    return build_checked(lambda: LatentEncoder(config), state, source)


def _colour_fix(metadata: dict, path: str) -> float:
    """The model file's colour-anchoring scale (0 when absent), checked: the file is untrusted."""
    text = metadata.get("colour_fix", "0")
    try:
        value = float(text)
    except ValueError:
        raise CheckpointError(path, f"colour_fix must be a number of pixels, got {text[:40]!r}") from None
    if not 0.0 <= value <= MAX_SIGMA:  # also refuses NaN
        raise CheckpointError(path, f"colour_fix must be between 0 and {MAX_SIGMA:g} px, got {value}")
    return value


def _check_compatible(net_g, net_le_dm, net_d, path):
    prior_g, tokens_g = net_g.config.prior_dim, net_g.config.group ** 2
    prior_e, tokens_e = net_le_dm.config.embed_dim * 4, net_le_dm.config.group ** 2
    width_d = net_d.resmlp[0].weight.shape[0] if isinstance(net_d, SimpleDenoiser) else net_d.final_layer[0].weight.shape[0]
    if not (prior_g == prior_e == width_d and tokens_g == tokens_e):
        raise CheckpointError(path, f"parts do not fit together: net_g expects {tokens_g}x{prior_g} prior tokens, "
                                    f"net_le_dm makes {tokens_e}x{prior_e}, net_d works on {width_d} channels")


def save_hidiff(model: HIDiff, path: str, source: str = "", extra: dict[str, str] | None = None) -> None:
    """Write the pack's single-file format: all parts in float32 plus metadata describing them."""
    from safetensors.torch import save_file

    tensors = {}
    for part in PARTS + OPTIONAL_PARTS:
        module = getattr(model, part)
        if module is not None:
            for key, value in module.state_dict().items():
                tensors[f"{part}.{key}"] = value.detach().float().contiguous().cpu()
    metadata = {
        "method": METHOD,
        "format_version": "1",
        "source": source,
        "sampler": json.dumps(model.sampler.config.to_dict()),
        "net_g": json.dumps(model.net_g.config.to_dict()),
        "net_le_dm": json.dumps(model.net_le_dm.config.to_dict()),
        "net_d": type(model.net_d).__name__,
        **({"colour_fix": f"{model.colour_fix:g}"} if model.colour_fix > 0 else {}),
        **(extra or {}),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=metadata)
