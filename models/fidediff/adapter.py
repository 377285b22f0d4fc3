"""FideDiff's own weights in one pack-format ``.safetensors``, applied to a base the user has.

Keys: ``lora.<module>.lora_down.weight`` / ``lora_up.weight`` / ``alpha`` (the UNet's LoRA, pack
layout of :mod:`..sd21.lora`), ``kcn.*`` (the Kernel ControlNet, optional: the paper's fast variant
has none), ``text_embedding`` ``[1, 77, width]``, and the estimator's ``estimator.*`` (M) and
``regressor.*`` (T) as the estimator module writes them (optional). Metadata: ``method = fidediff``,
``latent_downsample`` (4 | 8), ``kernel_size`` (m), ``lora_rank``, ``base_fingerprint`` and
``base_name`` (the base it was trained on), ``prediction``. Sizes come from the shapes.
"""
from __future__ import annotations

import json
import os

import torch

from ..common.checkpoint import CheckpointError, read_metadata, read_state_dict
from ..common.discovery import find_models
from ..common.state_dict import check_entries, load_strict, sub_state
from ..sd21 import TextEmbedding, load_adapter, load_base, merge_adapters, unwrap_lora
from .kcn import KernelControlNet
from .model import LATENT_DOWNSAMPLES, FideDiff

METHOD = "fidediff"
FORMAT_VERSION = "1"
ADAPTER_NAME = "fidediff"
ESTIMATOR_PREFIXES = ("estimator.", "regressor.")
KNOWN_PREFIXES = ("lora.", "kcn.", "text_embedding") + ESTIMATOR_PREFIXES
MAX_SIZE = 1 << 18  # any tensor dimension: far above SD 2.1's widths (1280, 10240 in the feed-forward)


def save_adapter(path: str, lora: dict, text_embedding: torch.Tensor, kcn: dict | None = None,
                 estimator: dict | None = None, metadata: dict | None = None, dtype: torch.dtype = torch.float32) -> None:
    """Write the adapter file; ``metadata`` needs ``latent_downsample`` and ``base_fingerprint``.
    An existing file is replaced only through a temporary file (no half-written adapter)."""
    from safetensors.torch import save_file

    metadata = {k: str(v) for k, v in (metadata or {}).items()}
    for required in ("latent_downsample", "base_fingerprint"):
        if required not in metadata:
            raise ValueError(f"adapter metadata needs {required!r}")
    tensors = {"lora." + k: v for k, v in lora.items()} | {"text_embedding": text_embedding}
    tensors |= {"kcn." + k: v for k, v in (kcn or {}).items()} | dict(estimator or {})
    tensors = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() and v.dim() else v.detach().cpu().float()).contiguous()
               for k, v in tensors.items()}
    ranks = [v.shape[0] for k, v in lora.items() if k.endswith(".lora_down.weight")]
    metadata = {"method": METHOD, "format_version": FORMAT_VERSION, "lora_rank": str(max(ranks, default=0))} | metadata
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".partial"
    save_file(tensors, temporary, metadata=metadata)
    os.replace(temporary, path)


def read_adapter(path: str) -> tuple[dict, dict]:
    path = os.fspath(path)
    metadata = read_metadata(path)
    if not path.lower().endswith((".safetensors", ".sft")):
        raise CheckpointError(path, "a FideDiff adapter is a .safetensors file")
    if metadata.get("method") != METHOD:
        raise CheckpointError(path, f"is not a FideDiff adapter (method {metadata.get('method')!r}; expected {METHOD!r})")
    state = read_state_dict(path)
    stray = [k for k in state if not k.startswith(KNOWN_PREFIXES)]
    if stray:
        raise CheckpointError(path, f"unexpected entry {stray[0]!r} in a FideDiff adapter")
    check_entries(state, path, MAX_SIZE)  # before any size is read from a shape
    if "text_embedding" not in state or not any(k.startswith("lora.") for k in state):
        raise CheckpointError(path, "a FideDiff adapter needs 'text_embedding' and 'lora.*' weights")
    try:
        d = int(metadata.get("latent_downsample", "4"))
    except ValueError:
        d = 0
    if d not in LATENT_DOWNSAMPLES:
        raise CheckpointError(path, f"latent_downsample {metadata.get('latent_downsample')!r} is not 4 or 8")
    return state, metadata


def _estimator(state: dict, source: str):
    """The adapter's own M and T, else the pack's bundled estimator (trained on synthetic blur), else none."""
    from .estimator_model import default_available, estimator_from_state, load_blur_estimator

    if any(k.startswith(ESTIMATOR_PREFIXES) for k in state):
        return estimator_from_state(state, source)
    if default_available():
        from .estimator_model import DEFAULT_PATH

        return load_blur_estimator(DEFAULT_PATH)
    return None


def load_fidediff(base_path: str, adapter_path: str, dtype: torch.dtype = torch.float32, check_base: bool = True,
                  merge: bool = True) -> FideDiff:
    """The base from the user's file plus the adapter. A base other than the one the adapter was
    trained on is refused with both names (``check_base=False`` skips this, at the user's risk).
    ``merge``: fold the LoRA into the UNet (one plain UNet evaluation per step)."""
    state, metadata = read_adapter(adapter_path)
    base = load_base(base_path, dtype=torch.float32, prediction=metadata.get("prediction", "auto"))
    expected = metadata.get("base_fingerprint", "")
    if check_base and expected != base.fingerprint:
        trained_on = metadata.get("base_name") or "another base"
        raise CheckpointError(adapter_path, f"was trained on {trained_on} (fingerprint {expected}), but the chosen base "
                                            f"{base_path} has fingerprint {base.fingerprint}; pick the base it was made for")
    load_adapter(base.unet, sub_state(state, "lora."), ADAPTER_NAME, f"{adapter_path} [lora]")
    if merge:
        merge_adapters(base.unet)
        unwrap_lora(base.unet)
    embedding = state["text_embedding"]
    if embedding.dim() != 3 or embedding.shape[0] != 1 or embedding.shape[2] != base.unet_config.context_dim:
        raise CheckpointError(adapter_path, f"text_embedding is {tuple(embedding.shape)}; this base needs "
                                            f"(1, tokens, {base.unet_config.context_dim})")
    text = TextEmbedding(embedding.shape[2], embedding.shape[1], embedding)
    kcn = None
    kcn_state = sub_state(state, "kcn.")
    if kcn_state:
        source = f"{adapter_path} [kcn]"
        with torch.device("meta"):
            kcn = KernelControlNet(base.unet_config, KernelControlNet.kernel_channels_of(kcn_state, source))
        load_strict(kcn, kcn_state, source, assign=True)
    estimator = _estimator(state, adapter_path)
    model = FideDiff(base, text, kcn, estimator, int(metadata.get("latent_downsample", "4")))
    model.metadata = metadata
    model.adapter_source = adapter_path
    model = model.to(dtype=dtype).eval().requires_grad_(False)
    if model.estimator is not None:
        model.estimator.float()  # small, and written for float32
    return model


def is_adapter_file(path: str) -> bool:
    try:
        return path.lower().endswith((".safetensors", ".sft")) and read_metadata(path).get("method") == METHOD
    except (CheckpointError, OSError):
        return False


def find_adapters(root: str) -> list[str]:
    return find_models(root, is_model_file=is_adapter_file)


def describe(metadata: dict) -> str:
    keys = ("latent_downsample", "kernel_size", "lora_rank", "base_name", "base_fingerprint", "prediction")
    return json.dumps({k: metadata[k] for k in keys if k in metadata})
