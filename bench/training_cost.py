"""What one training step costs at SD 2.1 size: peak memory, seconds and parameters per stage.

Each case runs in its own child process and drives the pack's real trainers (``FideDiffTrainer``,
``OSDDTrainer``, ``EstimatorTrainer``) through their ``step()``: SD 2.1-sized RANDOM weights (UNet
865 M, autoencoder 84 M, OpenCLIP-H text encoder; no download) are built in the child and handed to
the trainer in place of ``load_base`` (no multi-GB base file is written), batch 1, random batches
(data loading is not what is measured). Two steps run; the second is measured, because AdamW's
states exist only from the first ``optimizer.step()`` on, so step 2 is the steady state.
Memory is the child's peak RSS during step 2 (reset through ``/proc/self/clear_refs``) minus the
RSS after importing torch, accelerate, peft and the pack (the interpreter baseline), i.e. weights +
gradients + optimiser states + activations. Seconds are CPU seconds at the thread count given, not
GPU seconds. ``--perceptual features`` (a small random conv net) stands in for LPIPS (not installed
here; it would add VGG-16's 15 M frozen weights and its activations).

    OMP_NUM_THREADS=2 python bench/training_cost.py --cases osdd:gate:fp32:0 fidediff:base:bf16:1
    python bench/training_cost.py --estimate   # the table with computed rows only (no measurement)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools"))

GIB = 2 ** 30
GPU_SIZES_GB = (8, 12, 16, 24, 40, 48, 80)
CUDA_OVERHEAD_GB = 0.5  # CUDA context + cuDNN/cuBLAS workspaces
FRAGMENTATION = 1.10  # caching allocator headroom over the bytes alive at the peak
DEFAULT_CROP = {"fidediff": 256, "osdd": 512}  # both = a 512² autoencoder pass, 64² latent (FideDiff d = 4)
STAGES = {"fidediff": ("base", "kernel", "control"), "osdd": ("evae", "real", "synthetic", "gate")}
NAMES = {"fidediff": "FideDiff", "osdd": "OSDD"}
DATA_DIR = "/work/data/sd21_random"  # the control stage's stage-1 adapter and estimator files (outside the repo)


# -- arithmetic (tested) ------------------------------------------------------------------------------

def static_bytes(total: int, trained: int) -> int:
    """Weights of every parameter (fp32, also under autocast) + gradient + AdamW's two moments per trained one."""
    return 4 * total + 4 * trained + 2 * 4 * trained


def extrapolate(points: list[tuple[int, float]], pixels: int) -> float:
    """Activation bytes at ``pixels`` from measured ``(pixels, bytes)`` points: the line through the two
    largest (activations grow with the pixel count; SDPA keeps attention memory linear too)."""
    (p0, b0), (p1, b1) = sorted(points)[-2:]
    slope = (b1 - b0) / (p1 - p0)
    return b1 + slope * (pixels - p1)


def smallest_gpu(peak_bytes: float) -> str:
    """The smallest common card the step should fit: peak × allocator headroom + CUDA context."""
    need = peak_bytes * FRAGMENTATION / 1e9 + CUDA_OVERHEAD_GB
    return next((f"{g} GB" for g in GPU_SIZES_GB if need <= g * 0.97), f"> {GPU_SIZES_GB[-1]} GB")


def count(n: int) -> str:
    return f"{n / 1e6:.0f} M" if n >= 1e8 else f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n / 1e3:.0f} k"


def table(rows: list[dict]) -> str:
    lines = ["| method | stage | crop | precision | checkpointing | trained params | frozen params | peak memory | "
             "s/step (CPU) | smallest GPU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r and r["error"].startswith("exceeded"):  # stopped by the RSS watch: a lower bound
            limit = float(r["error"].split()[1]) - 0.35  # less the interpreter baseline
            lines.append(f"| {r['method']} | {r['stage']} | {r['crop']} | {r['precision']} | {r['ckpt']} | — | — | "
                         f"> {limit:.1f} GiB (stopped) | — | {smallest_gpu(limit * GIB)} or more |")
            continue
        if "error" in r:
            lines.append(f"| {r['method']} | {r['stage']} | {r.get('crop', '')} | {r['precision']} | {r['ckpt']} | — | — | "
                         f"failed: {r['error'][:80]} | — | — |")
            continue
        mark = " (estimated)" if r.get("estimated") else ""
        seconds = f"{r['seconds']:.0f}" if r.get("seconds") is not None else "—"
        lines.append(f"| {r['method']} | {r['stage']} | {r['crop']} | {r['precision']} | {r['ckpt']} | "
                     f"{count(r['trained'])} | {count(r['frozen'])} | {r['peak'] / GIB:.1f} GiB{mark} | "
                     f"{seconds} | {smallest_gpu(r['peak'])} |")
    return "\n".join(lines)


# -- the child: one case ------------------------------------------------------------------------------

def _rss(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def random_base(path="random", dtype=None, prediction="auto", with_text=False):
    """``load_base``'s stand-in: SD 2.1-sized random UNet + autoencoder (+ OpenCLIP-H text encoder)."""
    import torch
    from _pack import pack_module
    from bench_onestep import _random_sd21_base

    sd21 = pack_module("models.sd21")
    base = _random_sd21_base()
    if with_text:
        base.text_encoder = sd21.OpenCLIPTextEncoder(sd21.TextEncoderConfig())
        base.text_encoder.reset_parameters()
        base.text_encoder.eval().requires_grad_(False)
    base.unet.eval().requires_grad_(False)
    base.vae.eval().requires_grad_(False)
    return base


class RandomBatches:
    """A sampler of random batches with the trainers' interface (``generator``, ``next_batch``)."""

    def __init__(self, crop: int, levels: bool):
        import torch

        self.crop, self.levels = crop, levels
        self.generator = torch.Generator().manual_seed(0)

    def next_batch(self):
        import torch

        shape = (1, 3, self.crop, self.crop)
        blurry, sharp = torch.rand(shape, generator=self.generator), torch.rand(shape, generator=self.generator)
        return (blurry, sharp, torch.tensor([120.0])) if self.levels else (blurry, sharp)

    def state(self):
        return {"generator": self.generator.get_state()}


def control_files() -> tuple[str, str]:
    """A stage-1 adapter (random rank-16 LoRA on the SD 2.1 UNet) and a kernel estimator, in the files'
    own formats, written once under DATA_DIR."""
    import torch
    from _pack import pack_module

    adapter, estimator = os.path.join(DATA_DIR, "stage_base_adapter.safetensors"), os.path.join(DATA_DIR, "estimator.safetensors")
    if os.path.isfile(adapter) and os.path.isfile(estimator):
        return adapter, estimator
    from peft import LoraConfig, get_peft_model_state_dict

    sd21 = pack_module("models.sd21")
    fd = pack_module("models.fidediff")
    est_training = pack_module("models.fidediff.estimator_training")
    est_model = pack_module("models.fidediff.estimator_model")
    adapter_io = pack_module("models.fidediff.adapter")
    os.makedirs(DATA_DIR, exist_ok=True)
    est_model.save_blur_estimator(est_training.build_estimator(), estimator)
    unet = random_base().unet
    unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=list(sd21.UNET_TARGETS)))
    lora = sd21.peft_to_pack(get_peft_model_state_dict(unet), alpha=16, source="random")
    adapter_io.save_adapter(adapter, lora, torch.zeros(1, 77, 1024), metadata={"latent_downsample": 4, "base_fingerprint": "random"})
    return adapter, estimator


def build_trainer(method: str, stage: str, precision: str, checkpointing: bool, crop: int, run_dir: str):
    """The pack's own trainer for one stage, on random SD 2.1-sized weights. Returns (trainer, trained
    parameters, every parameter the step touches)."""
    import torch
    from _pack import pack_module

    mixed = {"fp32": "no", "bf16": "bf16"}[precision]
    if method == "fidediff" and stage == "kernel":
        est = pack_module("models.fidediff.estimator_training")

        batch = 12 if crop == 64 else 1  # the documented recipe: 64 px crops, --scenes 4 x 3 points

        class Sampler:  # the estimator's batch: blurry, sharp with margin, level, known, true kernel grid [B, m², P/8, P/8]
            def next_batch(self):
                c, grid = 19 // 2, crop // 8
                return (torch.rand(batch, 3, crop, crop), torch.rand(batch, 3, crop + 2 * c, crop + 2 * c),
                        torch.full((batch,), 120.0), torch.ones(batch, dtype=torch.bool),
                        torch.softmax(torch.randn(batch, 19 * 19, grid, grid), 1))

        trainer = est.EstimatorTrainer(est.build_estimator(), Sampler(), est.EstimatorTrainConfig(), run_dir)
        params = list(trainer.model.parameters())
        return trainer, [p for g in trainer.optimizer.param_groups for p in g["params"]], params, [trainer.model, trainer.optimizer]
    if method == "fidediff":
        training = pack_module("models.fidediff.training")
        training.load_base = random_base
        adapter, estimator = control_files() if stage == "control" else (None, None)
        config = training.TrainConfig(stage=stage, scenes=1, points=1, crop=crop, perceptual="features",
                                      gan_weight=0.1 if stage == "base" else 0.0, mixed_precision=mixed,
                                      gradient_checkpointing=checkpointing)
        trainer = training.FideDiffTrainer(config, "random", RandomBatches(crop, True), run_dir, adapter, estimator, cpu=True)
        modules = (trainer.unet, trainer.vae, trainer.text, trainer.kcn, trainer.estimator, trainer.discriminator, trainer.perceptual_net)
    else:
        training = pack_module("models.osdd.training")
        training.load_base = random_base
        config = training.TrainConfig(stage=stage, perceptual="features", mixed_precision=mixed)
        trainer = training.OSDDTrainer(config, "random", RandomBatches(crop, False), run_dir, None, cpu=True)
        if checkpointing:  # the OSDD trainer has no flag for it: switched on here, on the UNet and the autoencoder
            trainer.model.unet.enable_gradient_checkpointing()
        modules = (trainer.model, trainer.perceptual, trainer.discriminator)
    params = list({id(p): p for m in modules if m is not None for p in m.parameters()}.values())
    trained = [p for o in trainer.optimizers.values() for g in o.param_groups for p in g["params"]]
    return trainer, trained, params, [m for m in modules if m is not None] + list(trainer.optimizers.values())


def tracked_step(trainer, tracked) -> int | str:
    """One step under torch's MemTracker (tensor bytes, no allocator or context): its peak total, bytes."""
    from torch.distributed._tools.mem_tracker import MemTracker

    try:
        tracker = MemTracker()
        tracker.track_external(*tracked)
        with tracker:
            trainer.step()
    except Exception as error:  # its module hooks fail on some graphs (no-grad inputs); say so, keep the row
        return f"MemTracker failed: {type(error).__name__}: {error}"
    return max(snap["Total"] for snap in tracker.get_tracker_snapshot("peak").values())


def run_case(method: str, stage: str, precision: str, checkpointing: bool, crop: int, memtracker: bool = False) -> dict:
    import tempfile

    import accelerate  # noqa: F401  (imported before the baseline: every trainer needs it)
    import peft  # noqa: F401
    import torch
    from _pack import pack_module

    pack_module("models.sd21")
    baseline = _rss("VmRSS")
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.time()
        trainer, trained, params, tracked = build_trainer(method, stage, precision, checkpointing, crop, run_dir)
        build_s, build_peak = time.time() - started, _rss("VmHWM")
        trainer.step()  # AdamW's states appear here
        _reset_peak()
        started = time.time()
        trainer.step()
        seconds = time.time() - started
        peak = _rss("VmHWM")
        tracker_peak = tracked_step(trainer, tracked) if memtracker else None
    n_trained = sum(p.numel() for p in trained)
    n_total = sum(p.numel() for p in params)
    return {"method": NAMES[method], "stage": stage, "crop": crop, "precision": precision,
            "ckpt": "yes" if checkpointing else "no", "trained": n_trained, "frozen": n_total - n_trained,
            "peak": peak - baseline, "seconds": seconds, "build_s": build_s, "build_peak": build_peak - baseline,
            "baseline": baseline, "static": static_bytes(n_total, n_trained), "threads": torch.get_num_threads()} | ({"tracker_peak": tracker_peak} if memtracker else {})


# -- the parent ---------------------------------------------------------------------------------------

def parse_case(text: str) -> tuple[str, str, str, bool, int]:
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise argparse.ArgumentTypeError(f"case {text!r}: METHOD:STAGE:fp32|bf16:0|1[:CROP]")
    method, stage, precision, ckpt = parts[:4]
    if method not in STAGES or stage not in STAGES[method] or precision not in ("fp32", "bf16") or ckpt not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"case {text!r}: METHOD in {list(STAGES)}, STAGE of it, fp32|bf16, 0|1")
    crop = int(parts[4]) if len(parts) == 5 else (64 if stage == "kernel" else DEFAULT_CROP[method])
    if crop % 64 or not 64 <= crop <= 2048:
        raise argparse.ArgumentTypeError(f"case {text!r}: crop must be a multiple of 64 in 64..2048")
    return method, stage, precision, ckpt == "1", crop


def watch_rss(child: subprocess.Popen, max_gib: float) -> bool:
    """Poll the child's resident memory; stop it above ``max_gib`` (the machine is shared)."""
    while child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/status") as handle:
                rss = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            rss = 0
        if rss > max_gib * GIB:
            child.kill()
            return True
        time.sleep(0.2)
    return False


def measure(case, results: str | None, max_gib: float = 15.0, memtracker: bool = False) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", ":".join(map(str, case[:3])) + f":{int(case[3])}:{case[4]}"]
    command += ["--memtracker"] if memtracker else []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        killed = watch_rss(child, max_gib)
        stdout, stderr = child.communicate()
    result = subprocess.CompletedProcess(command, child.returncode, stdout, stderr)
    if killed:
        result.stderr += f"\nexceeded {max_gib:g} GiB: stopped"
    if result.returncode:
        print(result.stderr[-3000:], file=sys.stderr)
        row = {"method": NAMES[case[0]], "stage": case[1], "precision": case[2], "ckpt": "yes" if case[3] else "no", "crop": case[4],
               "error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    else:
        row = json.loads(result.stdout.strip().splitlines()[-1])
    if results:
        with open(results, "a") as handle:
            handle.write(json.dumps(row) + "\n")
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def estimated_rows(rows: list[dict], crop: int, precision: str, ckpt: str, method: str, stage: str) -> dict | None:
    """A row at ``crop`` from the same stage measured at smaller crops: static bytes from the parameter counts +
    activations on the line through the two largest measured points (with one, through it and zero)."""
    same = [r for r in rows if "error" not in r and (r["method"], r["stage"], r["precision"], r["ckpt"]) ==
            (method, stage, precision, ckpt) and not r.get("estimated") and r["crop"] < crop]
    if not same:
        return None
    points = {r["crop"] ** 2: r["peak"] - r["static"] for r in same}
    points.setdefault(0, 0.0)  # one measured crop: activations in proportion to the pixels
    activations = extrapolate(list(points.items()), crop ** 2)
    r = same[0]
    return {**r, "crop": crop, "peak": r["static"] + activations, "seconds": None, "estimated": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", type=parse_case, default=[], help="METHOD:STAGE:fp32|bf16:0|1[:CROP]")
    parser.add_argument("--results", help="append each row here (JSON lines) and read earlier rows from it")
    parser.add_argument("--estimate", nargs="*", type=parse_case, default=[],
                        help="cases to compute from the same stage measured at smaller crops")
    parser.add_argument("--max-gib", type=float, default=15.0, help="stop a case whose RSS passes this")
    parser.add_argument("--memtracker", action="store_true", help="also run a third step under torch's MemTracker")
    parser.add_argument("--child", type=parse_case, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(*args.child, memtracker=args.memtracker)))
        return 0
    rows = []
    if args.results and os.path.isfile(args.results):
        with open(args.results) as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        rows = [r | {"method": NAMES.get(r["method"], r["method"])} for r in rows]
    for case in args.cases:
        rows.append(measure(case, args.results, args.max_gib, args.memtracker))
    for method, stage, precision, ckpt, crop in args.estimate:
        row = estimated_rows(rows, crop, precision, "yes" if ckpt else "no", NAMES[method], stage)
        if row is None:
            print(f"cannot estimate {method}:{stage}:{precision} at {crop}: measure a smaller crop first", file=sys.stderr)
        else:
            rows.append(row)
    threads = {r.get("threads") for r in rows if "threads" in r}
    print(f"One optimiser step at batch 1, SD 2.1-sized random weights, on the CPU ({'/'.join(map(str, threads)) or '?'} "
          "threads). Peak memory: the case's peak RSS during its second step minus the interpreter+torch baseline. "
          "s/step: CPU seconds, not GPU seconds. Smallest GPU: peak × 1.1 (allocator) + 0.5 GB (CUDA context).\n")
    print(table(sorted(rows, key=lambda r: (r["method"], r["stage"], r.get("crop", 0), r["precision"], r["ckpt"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
