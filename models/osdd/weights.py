"""OSDD's own weights: one pack-format ``.safetensors`` next to a Stable Diffusion 2.x base the user has.

Keys (diffusers module names; LoRAs in the core's pack layout, :mod:`..sd21.lora`):

* ``skips.<level>.…`` — the eVAE skip blocks;
* ``vae_lora.<module>.lora_down.weight`` / ``lora_up.weight`` / ``alpha`` — the encoder LoRA
  (module names inside the autoencoder, e.g. ``encoder.down_blocks.0.resnets.0.conv1``); optional;
* ``unet_lora.real.…`` and ``unet_lora.synthetic.…`` — the dual adapter;
* ``gate.net.{0,2}.{weight,bias}`` — the γ gate; ``text.embedding`` — the stored prompt embedding.

Metadata: ``method`` = ``osdd``, ``format_version``, ``config`` (JSON of :class:`OSDDConfig`),
``base_fingerprint`` (:func:`..sd21.base.base_fingerprint` of the base it was trained on), ``base_name`` (its
file or folder name, by which the method registry finds it among the host's bases), ``source``.
Sizes (ranks, gate width, skip widths) come from the shapes and must fit the base's.
"""
from __future__ import annotations

import json
import os

import torch

from ..common.checkpoint import CheckpointError, read_metadata, read_state_dict
from ..common.discovery import find_models
from ..common.state_dict import build_checked, check_entries, check_size, load_strict, sub_state
from ..sd21.base import SDBase
from ..sd21.lora import adapter_state, load_adapter, merge_adapters, unwrap_lora
from ..sd21.one_step import TextEmbedding
from .dda import ADAPTERS, DDAGate
from .evae import EVAE
from .model import OSDD, VAE_ADAPTER, OSDDConfig

METHOD = "osdd"
FORMAT_VERSION = "1"
PREFIXES = ("skips.", "vae_lora.", "unet_lora.real.", "unet_lora.synthetic.", "gate.", "text.")
MAX_SIZE = 1 << 18  # any tensor dimension: far above SD 2.1's widths
MAX_GATE_WIDTH = 4096  # the γ gate's hidden width (a few dozen in the paper's sense of a small MLP)


def osdd_state(model: OSDD) -> dict[str, torch.Tensor]:
    """Everything OSDD adds to the base, in the file's layout (the encoder LoRA only while unmerged)."""
    state = {f"skips.{k}": v for k, v in model.evae.skips.state_dict().items()}
    state |= {f"vae_lora.{k}": v for k, v in adapter_state(model.evae.vae, VAE_ADAPTER).items()}
    for name in ADAPTERS:
        state |= {f"unet_lora.{name}.{k}": v for k, v in adapter_state(model.unet, name).items()}
    state |= {f"gate.{k}": v for k, v in model.gate.state_dict().items()}
    state["text.embedding"] = model.text.embedding
    return state


def save_osdd(model: OSDD, path: str, source: str = "", dtype: torch.dtype = torch.float32) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() and v.ndim else torch.float32).contiguous()
               for k, v in osdd_state(model).items()}
    metadata = {"method": METHOD, "format_version": FORMAT_VERSION, "config": model.config.to_json(),
                "base_fingerprint": model.fingerprint, "base_name": os.path.basename(os.path.normpath(model.base_source)),
                "source": source}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=metadata)


def read_osdd(path: str) -> tuple[OSDDConfig, dict[str, torch.Tensor], dict[str, str]]:
    path = os.fspath(path)
    if not path.lower().endswith((".safetensors", ".sft")):
        raise CheckpointError(path, "OSDD weights are a .safetensors file made by tools/train_osdd.py")
    metadata = read_metadata(path)
    if metadata.get("method") != METHOD:
        found = metadata.get("method")
        raise CheckpointError(path, f"is {'a ' + repr(found) + ' model' if found else 'not a pack file (no method in its metadata)'}, not OSDD weights")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(path, f"OSDD format version {metadata.get('format_version')!r}; this pack reads {FORMAT_VERSION}")
    try:
        config = OSDDConfig.from_dict(json.loads(metadata.get("config", "{}")))
    except (TypeError, ValueError) as error:
        raise CheckpointError(path, f"unreadable OSDD configuration in the metadata ({error})") from None
    state = read_state_dict(path)
    check_entries(state, path, MAX_SIZE)  # before any size is read from a shape
    stray = [k for k in state if not k.startswith(PREFIXES)]
    if stray:
        raise CheckpointError(path, f"{len(stray)} entries belong to no OSDD part (e.g. {stray[0]!r})")
    for required in ("skips.", "unet_lora.real.", "unet_lora.synthetic.", "gate.", "text."):
        if not any(k.startswith(required) for k in state):
            raise CheckpointError(path, f"holds no {required.rstrip('.')} weights")
    return config, state, metadata


def load_osdd(path: str, base: SDBase, check_base: bool = True) -> OSDD:
    """OSDD on ``base`` (modified in place: adapters added to its UNet, encoder LoRA merged into its
    autoencoder), in the base's dtype, for inference."""
    path = os.fspath(path)
    config, state, metadata = read_osdd(path)
    trained_on = metadata.get("base_fingerprint", "")
    if check_base and trained_on and trained_on != base.fingerprint:
        raise CheckpointError(path, f"was trained on another base (fingerprint {trained_on}, "
                                    f"{metadata.get('base_name') or 'name unknown'}) than {base.source} ({base.fingerprint})")
    dtype = base.vae.dtype
    evae = EVAE(base.vae)
    load_strict(evae.skips, sub_state(state, "skips."), f"{path} [eVAE skips for {base.source}]")
    vae_lora = sub_state(state, "vae_lora.")
    if vae_lora:
        load_adapter(evae.vae, vae_lora, VAE_ADAPTER, f"{path} [encoder LoRA]")
        merge_adapters(evae.vae)
        unwrap_lora(evae.vae)
    for name in ADAPTERS:
        load_adapter(base.unet, sub_state(state, f"unet_lora.{name}."), name, f"{path} [{name} adapter]")
    gate_state = sub_state(state, "gate.")
    first = gate_state.get("net.0.weight")
    if first is None or first.ndim != 2:
        raise CheckpointError(path, "the γ gate lacks 'gate.net.0.weight' [hidden, channels]")
    deepest = evae.skips[-1].skip_conv.in_channels
    if first.shape[1] != deepest:
        raise CheckpointError(path, f"the γ gate reads {first.shape[1]} channels, the base's deepest encoder level has {deepest}")
    check_size(f"{path} [gate]", "the γ gate's width", first.shape[0], 1, MAX_GATE_WIDTH)
    gate = build_checked(lambda: DDAGate(first.shape[1], first.shape[0]), gate_state, f"{path} [gate]")
    load_strict(gate, gate_state, f"{path} [gate]")
    embedding = state.get("text.embedding")
    width = base.unet_config.context_dim
    if embedding is None or embedding.ndim != 3 or embedding.shape[0] != 1 or embedding.shape[-1] != width:
        raise CheckpointError(path, f"'text.embedding' is {tuple(embedding.shape) if embedding is not None else 'missing'}, "
                                    f"the UNet needs [1, tokens, {width}]")
    text = TextEmbedding(width, embedding.shape[1], embedding)
    model = OSDD(base, evae, gate, text, config)
    return model.to(dtype).eval().requires_grad_(False)


def is_osdd_file(path: str) -> bool:
    if not path.lower().endswith((".safetensors", ".sft")):
        return False
    try:
        return read_metadata(path).get("method") == METHOD
    except (CheckpointError, OSError):
        return False


def find_osdd_models(root: str) -> list[str]:
    return find_models(root, is_model_file=is_osdd_file)
