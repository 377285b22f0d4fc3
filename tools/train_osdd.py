"""Train OSDD in its four stages; each continues the run's RUN/osdd.safetensors.

    # 1. eVAE: skip blocks + encoder LoRA (skips from the blurry image, latent of the sharp one)
    accelerate launch tools/train_osdd.py --stage evae --base v2-1_512-ema-pruned.safetensors \\
        --paired GoPro/train --sharp photos/ --run runs/osdd --steps 20000 --mixed-precision bf16
    # 2. the dual adapter, each on its own data (eVAE frozen): MSE + EA-LPIPS + latent GAN
    accelerate launch tools/train_osdd.py --stage real --base ... --paired GoPro/train --run runs/osdd
    accelerate launch tools/train_osdd.py --stage synthetic --base ... --sharp photos/ --run runs/osdd
    # 3. the γ gate on both (adapters frozen)
    accelerate launch tools/train_osdd.py --stage gate --base ... --paired GoPro/train --sharp photos/ --run runs/osdd

--paired: GoPro/RealBlur layout (input/ + target/); --sharp: sharp images blurred on the fly with the blur
lab's seeded camera-shake kernels. Every stage resumes with --resume (bit-identical continuation; its
checkpoint is RUN/<stage>/checkpoint.pt), logs RUN/<stage>/loss_log.csv and rewrites RUN/osdd.safetensors
(and --output if given) with all parts trained so far. Put the final file in ComfyUI's models/deblur/OSDD/.
Downloads: nothing, except `--perceptual lpips` (the default), whose package fetches its VGG weights
(ImageNet, via torchvision) on first use; `--perceptual features` needs no download.
"""
from __future__ import annotations

import os
import shutil
import sys

from _cli import parse_training_args, run_trainer, training_parser
from _pack import pack_module


def parse_args(argv=None):
    p = training_parser(__doc__, lr=5e-5, seed=0, checkpoint_every=500)
    p.add_argument("--stage", required=True, choices=("evae", "real", "synthetic", "gate"))
    p.add_argument("--base", required=True, help="SD 2.1 checkpoint (.safetensors/.ckpt), diffusers folder or DeblurDiff model.pth")
    p.add_argument("--paired", help="real pairs: folder with input/ and target/ (GoPro, RealBlur)")
    p.add_argument("--sharp", help="sharp images; blur is synthesised on the fly (seeded)")
    p.add_argument("--run", required=True, help="run folder (osdd.safetensors, one sub-folder per stage)")
    p.add_argument("--output", help="also copy the OSDD file here at the end")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=512, help="training crop in pixels (multiple of 64 for SD 2.1)")
    p.add_argument("--unet-rank", type=int, default=4)
    p.add_argument("--vae-rank", type=int, default=4)
    p.add_argument("--perceptual", default="lpips", choices=("lpips", "features"))
    p.add_argument("--perceptual-weight", type=float, default=1.0)
    p.add_argument("--gan-weight", type=float, default=0.1, help="latent GAN weight (stages real and synthetic)")
    p.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    p.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    blur = p.add_argument_group("synthetic blur (--sharp)")
    blur.add_argument("--kernel-size", type=int, default=31)
    blur.add_argument("--intensity", type=float, nargs=2, default=(0.2, 1.0), metavar=("MIN", "MAX"))
    blur.add_argument("--noise", type=float, nargs=2, default=(0.0, 0.01), metavar=("MIN", "MAX"))
    blur.add_argument("--gamma", type=float, default=2.2, help="camera response: blur in linear light")
    return parse_training_args(p, argv)


def data_for(args, datasets, blur, seed: int):
    """The stage's sampler: real pairs, synthetic pairs, or both in turn."""
    wanted = {"evae": ("paired", "sharp"), "real": ("paired",), "synthetic": ("sharp",), "gate": ("paired", "sharp")}[args.stage]
    given = [kind for kind in wanted if getattr(args, kind)]
    if not given:
        raise SystemExit(f"--stage {args.stage} trains on " + " and/or ".join(f"--{k}" for k in wanted))
    settings = blur.BlurSettings(kind="camera_shake", kernel_size=args.kernel_size, intensity=tuple(args.intensity),
                                 noise=tuple(args.noise), gamma=args.gamma)
    samplers = [datasets.PatchSampler(datasets.PairedFolder(args.paired), args.crop, args.batch, seed) if kind == "paired" else
                datasets.PatchSampler(datasets.SharpFolder(args.sharp), args.crop, args.batch, seed + 1, settings, (0.5, 1.0))
                for kind in given]
    if len(samplers) == 1:
        return samplers[0]
    return pack_module("models.osdd.training").MixedSampler(*samplers)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.crop % 8:
        raise SystemExit("--crop must be a multiple of 8 (64 for the full SD 2.1 UNet)")
    if args.output and os.path.exists(args.output):
        raise SystemExit(f"error: {args.output} exists; choose another --output (files are never overwritten)")
    training = pack_module("models.osdd.training")
    sampler = data_for(args, pack_module("models.blur.datasets"), pack_module("models.blur"), args.seed)
    config = training.TrainConfig(stage=args.stage, steps=args.steps, lr=args.lr, unet_rank=args.unet_rank,
                                  vae_rank=args.vae_rank, perceptual=args.perceptual, perceptual_weight=args.perceptual_weight,
                                  gan_weight=args.gan_weight, mixed_precision=args.mixed_precision, seed=args.seed,
                                  checkpoint_every=args.checkpoint_every)
    result = os.path.join(args.run, "osdd.safetensors")
    previous = result if os.path.isfile(result) else None
    if args.stage != "evae" and previous is None:
        print(f"note: no {result} yet; the eVAE skips start untrained (zero: the plain SD decoder)", flush=True)
    trainer = training.OSDDTrainer(config, args.base, sampler, os.path.join(args.run, args.stage), previous, cpu=args.cpu)
    run_trainer(trainer, args.resume, lambda t: f"step {t.step_index}", 10,
                lambda step, losses: f"{args.stage} step {step}: loss {losses['loss']:.4f}", args.stop_after)
    if not trainer.finished or not trainer.is_main:
        return 0
    trainer.export(result + ".partial")
    os.replace(result + ".partial", result)
    print(f"wrote {result}", flush=True)
    if args.output:
        shutil.copyfile(result, args.output)
        print(f"wrote {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
