"""Finding, loading and saving DeblurDiff models.

Two file layouts are accepted:

* the official release: one ``model.pth``, the state dict of the official ``ControlLDM`` with keys
  ``unet.`` (SD 2.1 UNet, LDM layout), ``controlnet.`` (DiffBIR ControlNet), ``kpn.unet.`` (the LKPN's
  UNet; its EAC has no weights), ``vae.`` (LDM ``AutoencoderKL``) and ``clip.model.`` (OpenCLIP text
  tower). It is read with ``torch.load(weights_only=True, mmap=True)``, split, renamed to the pack's
  layout and adopted without copies;
* the pack's ``.safetensors`` (``tools/convert_deblurdiff.py``): keys ``unet.``, ``controlnet.``,
  ``lkpn.unet.``, ``vae.`` (diffusers names) and ``text_encoder.`` (OpenCLIP names), with the
  configuration in the metadata.

Sizes always come from the tensors' shapes, so reduced models of the same architecture load too.
"""
from __future__ import annotations

import json
import math
import os

import torch

from ..common.discovery import find_models
from ..common.checkpoint import SAFETENSORS_SUFFIXES, CheckpointError, read_metadata, read_state_dict, torch_zip_pickle
from ..common.state_dict import check_entries, load_strict, require_finite, sub_state
from ..sd21 import (BaseFileReader, TextEncoderConfig, UNetConfig, VAEConfig, register_base_file, unet_to_diffusers, unet_to_ldm,
                    vae_to_diffusers, vae_to_ldm)
from .model import PARTS, DeblurDiff, DeblurDiffConfig

METHOD = "deblurdiff"
OFFICIAL_PREFIXES = {"unet": "unet.", "controlnet": "controlnet.", "lkpn": "kpn.unet.", "vae": "vae.", "text_encoder": "clip.model."}
PACK_PREFIXES = {"unet": "unet.", "controlnet": "controlnet.", "lkpn": "lkpn.unet.", "vae": "vae.", "text_encoder": "text_encoder."}
# Byte strings that the pickle of an official model.pth contains (its key names).
OFFICIAL_MARKERS = (b"kpn.unet.input_blocks", b"controlnet.zero_convs", b"clip.model.token_embedding")


def split_parts(state: dict, prefixes: dict[str, str], source: str) -> dict[str, dict]:
    parts = {name: sub_state(state, prefix) for name, prefix in prefixes.items()}
    known = tuple(prefixes.values())
    stray = [k for k in state if not k.startswith(known)]
    if stray:
        raise CheckpointError(source, f"has {len(stray)} entries that belong to no DeblurDiff part (e.g. {stray[0]!r}); "
                                      f"expected keys starting with {', '.join(repr(p) for p in known)}")
    missing = [f"{name} ({prefixes[name]!r})" for name, part in parts.items() if not part]
    if missing:
        raise CheckpointError(source, f"holds no weights for {', '.join(missing)}; is this DeblurDiff's model.pth?")
    return parts


def config_from_official(parts: dict[str, dict], source: str) -> DeblurDiffConfig:
    config = DeblurDiffConfig(
        unet=UNetConfig.from_ldm(parts["unet"], f"{source} [unet]"),
        controlnet=UNetConfig.from_ldm(parts["controlnet"], f"{source} [controlnet]", control=True),
        lkpn=UNetConfig.from_ldm(parts["lkpn"], f"{source} [kpn]"),
        vae=VAEConfig.from_ldm(parts["vae"], f"{source} [vae]"),
        text_encoder=TextEncoderConfig.from_state_dict(parts["text_encoder"], f"{source} [clip]"),
    )
    problems = config.problems()
    if problems:
        raise CheckpointError(source, "parts do not fit together: " + "; ".join(problems))
    return config


MAX_SIZE = 1 << 16  # channels, widths, vocabulary: far above SD 2.1's, far below what could exhaust memory


def config_from_metadata(metadata: dict[str, str], states: dict[str, dict], path: str) -> DeblurDiffConfig:
    """The configuration a pack file records, validated before any network is built from it: every
    number finite and bounded, every count (levels, blocks, layers) at most the part's tensor count,
    so a hostile file cannot make construction take unbounded time; shapes are then checked strictly."""
    def fail(problem):
        raise CheckpointError(path, f"its metadata field 'config' {problem}; convert the official model.pth again")

    try:
        data = json.loads(metadata["config"])
    except KeyError:
        fail("is missing")
    except ValueError:
        fail("is not valid JSON")
    if not isinstance(data, dict):
        fail("is not a table of settings")
    for where, value in _numbers(data):
        if isinstance(value, float) and not (math.isfinite(value) and 0 < value < MAX_SIZE) or \
                isinstance(value, int) and not 0 <= value <= MAX_SIZE:
            fail(f"has {where} = {value!r}, out of range")
    try:
        config = DeblurDiffConfig.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        fail(f"is malformed ({type(error).__name__}: {error})")
    counts = {name: [len(part.channel_mult), part.num_res_blocks, *part.transformer_depth,
                     len(part.channel_mult) * part.num_res_blocks] for name, part in
              (("unet", config.unet), ("controlnet", config.controlnet), ("lkpn", config.lkpn))}
    counts["vae"] = [len(config.vae.channel_mult), len(config.vae.channel_mult) * config.vae.num_res_blocks]
    counts["text_encoder"] = [config.text_encoder.layers, config.text_encoder.skip_last]
    for name, values in counts.items():
        if max(values) > len(states[name]):
            fail(f"describes {max(values)} levels, blocks or layers for the {name}, which has only {len(states[name])} tensors")
    if not any(part.head_channels for part in (config.unet, config.controlnet, config.lkpn)) or \
            min(part.head_channels for part in (config.unet, config.controlnet, config.lkpn)) < 1:
        fail("has a head width of 0")
    return config


def _numbers(value, where="config"):
    """(location, number) of every number in a JSON value; booleans are not numbers here."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        if len(value) > 64:
            yield f"{where} (length)", len(value) * MAX_SIZE
        for index, item in enumerate(value):
            yield from _numbers(item, f"{where}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield where, value


def official_to_pack(parts: dict[str, dict], config: DeblurDiffConfig, source: str) -> dict[str, dict]:
    vae = config.vae
    return {
        "unet": unet_to_diffusers(parts["unet"], config.unet, f"{source} [unet]"),
        "controlnet": unet_to_diffusers(parts["controlnet"], config.controlnet, f"{source} [controlnet]", control=True),
        "lkpn": unet_to_diffusers(parts["lkpn"], config.lkpn, f"{source} [kpn]"),
        "vae": vae_to_diffusers(parts["vae"], len(vae.channel_mult), vae.num_res_blocks, f"{source} [vae]"),
        "text_encoder": dict(parts["text_encoder"]),
    }


def pack_to_official(states: dict[str, dict], config: DeblurDiffConfig) -> dict[str, torch.Tensor]:
    """The official ``model.pth`` state dict for pack-layout part states (the inverse conversion)."""
    vae = config.vae
    parts = {
        "unet": unet_to_ldm(states["unet"], config.unet),
        "controlnet": unet_to_ldm(states["controlnet"], config.controlnet, control=True),
        "lkpn": unet_to_ldm(states["lkpn"], config.lkpn),
        "vae": vae_to_ldm(states["vae"], len(vae.channel_mult), vae.num_res_blocks),
        "text_encoder": states["text_encoder"],
    }
    return {OFFICIAL_PREFIXES[name] + key: value for name, part in parts.items() for key, value in part.items()}


def model_states(model: DeblurDiff) -> dict[str, dict]:
    return {name: ({k[len("unet."):]: v for k, v in model.lkpn.state_dict().items()} if name == "lkpn"
                   else model.part(name).state_dict()) for name in PARTS}


def read_deblurdiff(path: str) -> tuple[DeblurDiffConfig, dict[str, dict], dict[str, str]]:
    """The configuration, the pack-layout state of each part, and the file's metadata."""
    path = os.fspath(path)
    metadata = read_metadata(path)
    if metadata.get("method") not in (None, METHOD):
        raise CheckpointError(path, f"is a {metadata['method']!r} model, not a DeblurDiff one")
    state = read_state_dict(path, mmap=True)
    check_entries(state, path, MAX_SIZE)  # before any size is read from a shape
    if metadata.get("method") == METHOD:
        states = split_parts(state, PACK_PREFIXES, path)
        return config_from_metadata(metadata, states, path), states, metadata
    parts = split_parts(state, OFFICIAL_PREFIXES, path)
    config = config_from_official(parts, path)
    return config, official_to_pack(parts, config, path), metadata


def load_deblurdiff(path: str, dtype: torch.dtype = torch.float32) -> DeblurDiff:
    """Build a DeblurDiff from the official ``model.pth`` or a pack ``.safetensors``, strictly, sizes
    from shapes, on the CPU in ``dtype``. Networks are created on the meta device and adopt the
    file's tensors, so loading needs no second copy of the weights (beyond the dtype conversion)."""
    config, states, _ = read_deblurdiff(path)
    try:
        model = DeblurDiff(config, device="meta")
    except (ValueError, ZeroDivisionError, RuntimeError) as error:
        raise CheckpointError(path, f"its configuration cannot be built ({type(error).__name__}: {error})") from None
    for name in PARTS:
        module = model.lkpn.unet if name == "lkpn" else model.part(name)
        require_finite(states[name], f"{path} [{name}]")
        load_strict(module, states[name], f"{path} [{name}]", assign=True)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def save_deblurdiff(model: DeblurDiff, path: str, source: str = "", dtype: torch.dtype = torch.float32) -> None:
    """Write the pack's single-file format (all parts in ``dtype``, configuration in the metadata)."""
    from safetensors.torch import save_file

    tensors = {PACK_PREFIXES[name] + key: value.detach().to("cpu", dtype).contiguous()
               for name, state in model_states(model).items() for key, value in state.items()}
    metadata = {"method": METHOD, "format_version": "1", "source": source, "config": json.dumps(model.config.to_dict())}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=metadata)


def is_deblurdiff_file(path: str) -> bool:
    """A pack ``.safetensors`` of DeblurDiff (header only), or a zip checkpoint whose ``data.pkl``
    names the official model's keys (read, never unpickled or inflated). Raises CheckpointError for
    a ``.safetensors`` or zip checkpoint that cannot be read, so the listing can say why."""
    lower = path.lower()
    if lower.endswith(SAFETENSORS_SUFFIXES):
        return read_metadata(path).get("method") == METHOD
    if lower.endswith((".pth", ".pt", ".ckpt")):
        with open(path, "rb") as handle:
            if handle.read(2) != b"PK":
                return False  # a legacy pickle or another file: never the official release
        data = torch_zip_pickle(path)
        return all(marker in data for marker in OFFICIAL_MARKERS)
    return False


def find_deblurdiff_models(root: str) -> list[str]:
    """Names (relative to ``root``, '/'-separated) of the DeblurDiff models under it, sorted."""
    return find_models(root, is_model_file=is_deblurdiff_file)


def read_sd_base(path: str, with_text: bool = False) -> tuple[dict, dict, dict | None, str]:
    """DeblurDiff's UNet, autoencoder (and text tower) as a Stable Diffusion 2.1 base (epsilon prediction)."""
    _, states, _ = read_deblurdiff(path)
    return states["unet"], states["vae"], states["text_encoder"] if with_text else None, "epsilon"


# FideDiff and OSDD can run on the SD 2.1 inside DeblurDiff's model (listed as ``deblur/<file>``).
register_base_file(BaseFileReader("DeblurDiff", is_deblurdiff_file, read_sd_base))
