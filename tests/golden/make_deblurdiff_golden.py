#!/usr/bin/env python
"""Regenerate the DeblurDiff golden test data by running the OFFICIAL DeblurDiff code on the CPU.

Usage (from the repository root)::

    python tests/golden/make_deblurdiff_golden.py --official /path/to/DeblurDiff [--out tests/data]

``--official`` is a checkout of https://github.com/kkkls/DeblurDiff . No official code lives in this
repository: the official modules are imported, unmodified, from that path. What this script puts
around them, and why:

* **Stubs** in ``sys.modules`` for three imports the inference path does not need: ``cupy`` (the
  official EAC is a cupy CUDA kernel; see below), ``omegaconf`` (only ``ListConfig`` for an
  ``isinstance`` test and ``OmegaConf`` for YAML loading we do not use) and ``ftfy`` (``fix_text``
  as the identity: the golden prompts are plain ASCII, which ftfy leaves unchanged).
* **EAC on the CPU.** The official ``IDynamicConv`` calls ``model.lkpn._idynamic_cuda``, which
  launches the cupy kernel and raises ``NotImplementedError`` for CPU tensors. Only that function is
  replaced, by :func:`eac_following_cuda_kernel`, which evaluates exactly the kernel's formula
  (``idynamic_forward_kernel``: output ``(n, c, h, w)`` sums ``weight[((((n*G + g)*KH + kh)*KW + kw)
  *H + h)*W + w] * input[n, c, h - pad + kh*dil, w - pad + kw*dil]`` over in-bounds taps, with
  ``g = c / (C / G)``), plus the optional bias like ``_idynamic_cuda``.
* **Reduced sizes.** ``ControlLDM`` takes its sizes from configs (given below). ``LKPN`` hard-codes
  its ``UNetModel`` arguments, so ``model.lkpn.UNetModel`` is replaced while ``LKPN()`` runs by a
  wrapper that overrides the size arguments (channels, levels, context width) and passes the rest
  through. ``use_checkpoint`` is off (gradient checkpointing only; same forward values).
* **Windows.** Official ``SpatialTransformer`` s attend within ``kernel_size`` windows (64 latent
  pixels at the first level). The ``windows`` case divides every module's ``kernel_size`` by 8 after
  construction so a small image exercises the overlapping-window path.

The pipeline that runs is the official ``utils.pipeline.Pipeline.run`` (padding, conditions, CFG,
better start, tiled or whole sampling with ``utils.sampler.SpacedSampler``, decoding, colour fix)
after ``torch.manual_seed(seed)``, as ``inference.py`` does through ``accelerate.set_seed``. The final
latent is recorded by wrapping ``cldm.vae_decode`` / ``vae_decode_tiled``.

The tiny weights are ``random_state_dict(shapes['tiny'], seed=WEIGHT_SEED)`` (tests/random_weights.py):
the test regenerates them from the key/shape manifest (``deblurdiff_shapes.json``) instead of
storing ~70 MB of tensors, writes them as an official ``model.pth`` and loads that. The manifest also
holds the full-size key/shapes of the official configuration (built on the meta device).

Everything runs in fp32 on CPU with one thread.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import subprocess
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT_REL = "tests/golden/make_deblurdiff_golden.py"
WEIGHT_SEED = 4242
NEGATIVE = "low quality, blurry, low-resolution, noisy, unsharp, weird textures"  # inference.py default


def _load_test_helper(name: str):
    spec = importlib.util.spec_from_file_location(f"_{name}", REPO_ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


random_weights = _load_test_helper("random_weights")

# --- configurations ----------------------------------------------------------------------------

UNET = dict(use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=64,
            attention_resolutions=[1, 2], num_res_blocks=1, channel_mult=[1, 1, 2], num_head_channels=64,
            use_spatial_transformer=True, use_linear_in_transformer=True, transformer_depth=1,
            context_dim=128, legacy=False)
CONTROLNET = dict(UNET, hint_channels=8)
CONTROLNET.pop("out_channels")
TINY = dict(
    latent_scale_factor=0.18215,
    unet_cfg=UNET,
    vae_cfg=dict(embed_dim=4, ddconfig=dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3,
                                             ch=32, ch_mult=[1, 2, 2, 2], num_res_blocks=1, attn_resolutions=[],
                                             dropout=0.0)),
    clip_cfg=dict(embed_dim=128, vision_cfg=dict(image_size=28, layers=1, width=64, head_width=64, patch_size=14),
                  text_cfg=dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=3),
                  layer="penultimate"),
    controlnet_cfg=CONTROLNET,
)
# LKPN's UNetModel sizes for the tiny model (the official class hard-codes 128 / [1,2,4,4] / 2 / 1024)
TINY_LKPN = dict(model_channels=64, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[1, 2],
                 context_dim=128, num_head_channels=64, use_checkpoint=False)

FULL_UNET = dict(use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=320,
                 attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_head_channels=64,
                 use_spatial_transformer=True, use_linear_in_transformer=True, transformer_depth=1,
                 context_dim=1024, legacy=False)
FULL_CONTROLNET = dict(FULL_UNET, hint_channels=8)
FULL_CONTROLNET.pop("out_channels")
FULL = dict(  # configs/inference/cldm.yaml
    latent_scale_factor=0.18215, unet_cfg=FULL_UNET,
    vae_cfg=dict(embed_dim=4, ddconfig=dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3,
                                             ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[],
                                             dropout=0.0)),
    clip_cfg=dict(embed_dim=1024, vision_cfg=dict(image_size=224, layers=32, width=1280, head_width=80, patch_size=14),
                  text_cfg=dict(context_length=77, vocab_size=49408, width=1024, heads=16, layers=24),
                  layer="penultimate"),
    controlnet_cfg=FULL_CONTROLNET,
)

# (name, height, width, seed, options)
CASES = [
    ("plain", 45, 61, 231, dict(steps=4, cfg_scale=1.0, strength=1.0, pos_prompt="", neg_prompt=NEGATIVE,
                                better_start=False, tiled=False, tile_size=512, tile_stride=256)),
    ("cfg_better_start", 40, 52, 7, dict(steps=3, cfg_scale=4.0, strength=0.8, pos_prompt="a sharp photo of a red car",
                                          neg_prompt=NEGATIVE, better_start=True, tiled=False, tile_size=512,
                                          tile_stride=256)),
    ("tiled", 128, 96, 11, dict(steps=3, cfg_scale=2.0, strength=1.0, pos_prompt="", neg_prompt=NEGATIVE,
                                better_start=True, tiled=True, tile_size=64, tile_stride=32)),
    ("windows", 136, 72, 5, dict(steps=2, cfg_scale=1.0, strength=1.0, pos_prompt="", neg_prompt=NEGATIVE,
                                 better_start=False, tiled=False, tile_size=512, tile_stride=256)),
]
WINDOW_DIVISOR = {"windows": 8}


# --- importing the official code ---------------------------------------------------------------

def _install_stubs() -> None:
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__path__ = []
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    def memoize(for_each_device=False):
        return lambda f: f

    cupy = module("cupy", RawKernel=None, ndarray=type("ndarray", (), {}))  # einops probes cupy.ndarray
    cupy._util = module("cupy._util", memoize=memoize)

    class ListConfig(list):
        pass

    omegaconf = module("omegaconf", OmegaConf=None)
    omegaconf.listconfig = module("omegaconf.listconfig", ListConfig=ListConfig)
    module("ftfy", fix_text=lambda text: text)


def eac_following_cuda_kernel(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """The official ``idynamic_forward_kernel`` evaluated on any device: for every tap (kh, kw) the
    weight plane ``weight[n, g, kh, kw]`` multiplies the input shifted by ``kh*dil - pad`` rows and
    ``kw*dil - pad`` columns (zero outside), channel ``c`` using group ``g = c // (C // G)``."""
    stride, padding, dilation = (int(v if isinstance(v, int) else v[0]) for v in (stride, padding, dilation))
    n, channels, height, width = input.shape
    groups, kernel_h, kernel_w = weight.shape[1:4]
    out_h = (height + 2 * padding - (dilation * (kernel_h - 1) + 1)) // stride + 1
    out_w = (width + 2 * padding - (dilation * (kernel_w - 1) + 1)) // stride + 1
    assert weight.shape[4:] == (out_h, out_w)
    padded = torch.nn.functional.pad(input, (padding, padding, padding, padding))
    group_of_channel = torch.arange(channels) // (channels // groups)
    out = torch.zeros(n, channels, out_h, out_w, dtype=input.dtype)
    for kh in range(kernel_h):
        for kw in range(kernel_w):
            rows = slice(kh * dilation, kh * dilation + stride * (out_h - 1) + 1, stride)
            cols = slice(kw * dilation, kw * dilation + stride * (out_w - 1) + 1, stride)
            out += weight[:, group_of_channel, kh, kw] * padded[:, :, rows, cols]
    if bias is not None:
        out += bias.view(1, -1, 1, 1)
    return out


@contextmanager
def _lkpn_sizes(lkpn_module, sizes: dict | None):
    if not sizes:
        yield
        return
    original = lkpn_module.UNetModel

    def reduced(**kwargs):
        return original(**{**kwargs, **sizes})

    lkpn_module.UNetModel = reduced
    try:
        yield
    finally:
        lkpn_module.UNetModel = original


def import_official(official: str):
    official = str(Path(official).resolve())
    if not os.path.isfile(os.path.join(official, "model", "lkpn.py")):
        raise SystemExit(f"{official} does not look like a DeblurDiff checkout")
    _install_stubs()
    sys.path.insert(0, official)
    import model  # noqa: F401  (official package __init__)
    import model.lkpn as lkpn
    from model.cldm import ControlLDM
    from model.gaussian_diffusion import Diffusion
    from utils.pipeline import Pipeline

    lkpn._idynamic_cuda = eac_following_cuda_kernel  # the only replaced function (cupy kernel)
    return types.SimpleNamespace(ControlLDM=ControlLDM, Diffusion=Diffusion, Pipeline=Pipeline, lkpn=lkpn,
                                 root=official)


def build_cldm(official, config: dict, lkpn_sizes: dict | None):
    with _lkpn_sizes(official.lkpn, lkpn_sizes):
        return official.ControlLDM(**copy.deepcopy(config))


def official_commit(official: str) -> str:
    try:
        return subprocess.check_output(["git", "-C", official, "rev-parse", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:  # pragma: no cover
        return "unknown"


# --- running -----------------------------------------------------------------------------------

def make_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth colour pattern plus noise, as uint8 ``[H, W, 3]``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height)[:, None, None]
    x = torch.linspace(0, 1, width)[None, :, None]
    base = torch.cat([0.5 + 0.4 * torch.sin(6 * x + 3 * y), 0.5 + 0.4 * torch.cos(5 * y - 2 * x), 0.3 + 0.5 * x * y], -1)
    image = (base + 0.08 * torch.randn(height, width, 3, generator=g)).clamp(0, 1)
    return (image * 255).round().to(torch.uint8).numpy()


def set_window_divisor(cldm, divisor: int | None) -> None:
    from model.attention import SpatialTransformer

    for module in cldm.modules():
        if isinstance(module, SpatialTransformer):
            if not hasattr(module, "_golden_kernel_size"):
                module._golden_kernel_size = tuple(module.kernel_size)
            base = module._golden_kernel_size
            module.kernel_size = base if not divisor else tuple(max(k // divisor, 1) for k in base)


def run_case(official, cldm, diffusion, name, height, width, seed, options):
    record = {}
    original_decode, original_decode_tiled = cldm.vae_decode, cldm.vae_decode_tiled

    def vae_decode(z):  # also called per tile by vae_decode_tiled: keep the first (whole) latent
        record.setdefault("latent", z.detach().clone())
        return original_decode(z)

    def vae_decode_tiled(z, tile, stride):
        record.setdefault("latent", z.detach().clone())
        return original_decode_tiled(z, tile, stride)

    def cldm_hook(module, args):
        if "x_T" not in record:
            record["x_T"], record["first_t"] = args[0].detach().clone(), int(args[1][0])
            record["c_txt"] = args[2]["c_txt"].detach().clone()
            record["c_img"] = args[2]["c_img"].detach().clone()

    def kpn_hook(module, args, output):
        record.setdefault("first_lkpn", output.detach().clone())

    cldm.vae_decode, cldm.vae_decode_tiled = vae_decode, vae_decode_tiled
    hooks = [cldm.register_forward_pre_hook(cldm_hook), cldm.kpn.register_forward_hook(kpn_hook)]
    set_window_divisor(cldm, WINDOW_DIVISOR.get(name))
    try:
        pipeline = official.Pipeline(cldm, diffusion, None, "cpu")
        image = make_image(height, width, seed + 1000)
        torch.manual_seed(seed)
        output = pipeline.run(image[None], options["steps"], options["strength"], options["tiled"],
                              options["tile_size"], options["tile_stride"], options["pos_prompt"],
                              options["neg_prompt"], options["cfg_scale"], options["better_start"])[0]
    finally:
        for hook in hooks:
            hook.remove()
        del cldm.vae_decode, cldm.vae_decode_tiled
        set_window_divisor(cldm, None)
    return {
        "name": name, "seed": seed, "options": dict(options), "window_divisor": WINDOW_DIVISOR.get(name, 0),
        "input": torch.from_numpy(image.copy()), "output": torch.from_numpy(np.ascontiguousarray(output)),
        "latent": record["latent"].float().contiguous(),
        "x_T": record["x_T"].float().contiguous(), "first_t": record["first_t"],
        "c_txt": record["c_txt"].float().contiguous(), "c_img": record["c_img"].float().contiguous(),
        "first_lkpn": record["first_lkpn"].float().contiguous(),
    }


TOKEN_TEXTS = ["", "a sharp photo of a red car", NEGATIVE, "Hello,   World!  It's 2024: 3.5 kg &amp; naïve café #1",
               "   UPPER lower\tMiXeD\n", "word " * 80]
WINDOW_SIZES = [(8, 8, 8), (24, 16, 8), (12, 8, 8), (80, 80, 64), (128, 96, 64), (10, 33, 4), (7, 5, 8)]
TIMESTEP_COUNTS = [1, 2, 3, 4, 7, 50, 200, 999, 1000]


def reference_tables(official) -> dict:
    """Small official results for unit tests: tokens, respaced timesteps, attention window offsets."""
    from model.attention import SpatialTransformer
    from model.open_clip import tokenize
    from utils.sampler import space_timesteps

    windows = {}
    for h, w, k in WINDOW_SIZES:
        holder = types.SimpleNamespace(kernel_size=(k, k))
        SpatialTransformer.grids(holder, torch.zeros(1, 1, h, w))
        windows[f"{h}x{w}/{k}"] = [[d["i"], d["j"]] for d in holder.idxes]
    return {
        "tokens": {"texts": TOKEN_TEXTS, "ids": tokenize(TOKEN_TEXTS)},
        "timesteps": {str(n): sorted(space_timesteps(1000, str(n))) for n in TIMESTEP_COUNTS},
        "windows": windows,
    }


def shapes_of(module) -> dict:
    return {k: [int(s) for s in v.shape] for k, v in module.state_dict().items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="path to a DeblurDiff checkout")
    parser.add_argument("--out", default=str(REPO_ROOT / "tests" / "data"), help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    official = import_official(args.official)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with torch.device("meta"):
        full_shapes = shapes_of(build_cldm(official, FULL, None))
    torch.manual_seed(0)
    cldm = build_cldm(official, TINY, TINY_LKPN)
    tiny_shapes = shapes_of(cldm)
    weights = random_weights.random_state_dict(tiny_shapes, seed=WEIGHT_SEED)
    cldm.load_state_dict(weights, strict=True)
    cldm.eval()
    diffusion = official.Diffusion(linear_start=0.00085, linear_end=0.0120, timesteps=1000)

    cases = []
    with torch.no_grad():
        for name, height, width, seed, options in CASES:
            case = run_case(official, cldm, diffusion, name, height, width, seed, options)
            cases.append(case)
            print(f"{name:18s} in={tuple(case['input'].shape)} latent={tuple(case['latent'].shape)} "
                  f"[{case['latent'].min():.3f}, {case['latent'].max():.3f}] out mean={case['output'].float().mean():.1f}")

    golden = {
        "cases": cases,
        "tables": reference_tables(official),
        "meta": {
            "script": SCRIPT_REL, "torch": str(torch.__version__), "official_commit": official_commit(official.root),
            "weight_seed": WEIGHT_SEED, "config": copy.deepcopy(TINY), "lkpn_sizes": dict(TINY_LKPN),
            "weights": "random_state_dict(deblurdiff_shapes.json['tiny'], seed=weight_seed), official ControlLDM keys",
            "eac": "model.lkpn._idynamic_cuda replaced by eac_following_cuda_kernel (the cupy kernel's formula)",
        },
    }
    torch.save(golden, out / "deblurdiff_golden.pt")
    with open(out / "deblurdiff_shapes.json", "w") as handle:
        json.dump({"tiny": tiny_shapes, "full": full_shapes}, handle, separators=(",", ":"))
        handle.write("\n")
    torch.load(out / "deblurdiff_golden.pt", weights_only=True)


if __name__ == "__main__":
    main()
