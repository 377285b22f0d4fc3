"""Train FideDiff in its three stages on blur trajectories synthesised from sharp images.

    # 1. the base: LoRA + text embedding by consistency training (L1 + EA-LPIPS + latent GAN)
    accelerate launch tools/train_fidediff.py --stage base --base v2-1_512-ema-pruned.safetensors \\
        --sharp photos/ --run runs/base --steps 100000 --mixed-precision bf16 --gradient-checkpointing
    # 2. the kernel estimator M (reblur loss) and T: the estimator's trainer (64 px crops, 8 per step)
    python tools/train_fidediff.py --stage kernel --sharp photos/ --run runs/kernel --steps 8000 --crop 64 --scenes 4
    # 3. Kernel ControlNet + T with the base frozen, plus the time loss; writes the final adapter
    accelerate launch tools/train_fidediff.py --stage control --base v2-1_512-ema-pruned.safetensors \\
        --adapter runs/base/adapter.safetensors --estimator runs/kernel/model.safetensors \\
        --sharp photos/ --run runs/control --steps 20000

Real video instead of synthetic trajectories: --frames GoPro_Large_all/train (a folder of frames per
clip; n frames around a middle one are averaged, t = 20(n − 1)). Every stage resumes with --resume (bit-identical continuation), logs RUN/loss_log.csv and writes its
output (--output, default RUN/adapter.safetensors; stage kernel RUN/model.safetensors). Put the final
adapter in ComfyUI's models/deblur/FideDiff/. Several GPUs: `accelerate launch --multi_gpu` (DDP).
Downloads: nothing, except `--perceptual lpips` (the default), whose package fetches its VGG weights
(ImageNet, via torchvision) on first use; `--perceptual features` needs no download.
"""
from __future__ import annotations

import os
import sys

import torch

from _cli import parse_training_args, run_trainer, training_parser
from _pack import pack_module


def parse_args(argv=None):
    p = training_parser(__doc__, lr=5e-5, seed=0, checkpoint_every=500)
    p.add_argument("--stage", required=True, choices=("base", "kernel", "control"))
    p.add_argument("--sharp", required=True, help="folder of sharp images (blur is synthesised, seeded)")
    p.add_argument("--frames", help="stages base/control: folder of video clips instead (one sub-folder of consecutive "
                                    "frames per clip, GoPro_Large_all style); frames are averaged around a middle one")
    p.add_argument("--run", required=True, help="run folder (checkpoint, loss_log.csv)")
    p.add_argument("--base", help="SD 2.1 checkpoint (.safetensors/.ckpt), diffusers folder or DeblurDiff model.pth")
    p.add_argument("--adapter", help="stage control: the stage-base adapter")
    p.add_argument("--estimator", help="stage control: M and T from stage kernel")
    p.add_argument("--output", help="output file (default RUN/adapter.safetensors, or RUN/model.safetensors for kernel)")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--scenes", type=int, default=2, help="scenes per step (each gives --points trajectory points)")
    p.add_argument("--points", type=int, default=3)
    p.add_argument("--crop", type=int, default=256, help="training crop in pixels")
    p.add_argument("--latent-downsample", type=int, default=4, choices=(4, 8))
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (= alpha)")
    p.add_argument("--perceptual", default="lpips", choices=("lpips", "features"))
    p.add_argument("--gan-weight", type=float, default=0.1)
    p.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    return parse_training_args(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.stage == "kernel":
        estimator = pack_module("models.fidediff.estimator_training")
        output = args.output or os.path.join(args.run, "model.safetensors")
        data = estimator.DataConfig(patch=args.crop, batch=args.scenes * args.points)  # M trains on small crops
        estimator.train_estimator(args.sharp, args.run, (args.steps, max(args.steps // 5, 1)), resume=args.resume, data=data,
                                  device="cpu" if args.cpu or not torch.cuda.is_available() else "cuda", output=output)
        print(f"wrote {output}", flush=True)
        return 0
    if not args.base:
        raise SystemExit("--base is required for the stages base and control")
    if args.stage == "control" and not (args.adapter and args.estimator):
        raise SystemExit("--stage control needs --adapter (stage base) and --estimator (stage kernel)")
    training = pack_module("models.fidediff.training")
    datasets = pack_module("models.blur.datasets")
    config = training.TrainConfig(stage=args.stage, steps=args.steps, lr=args.lr, scenes=args.scenes, points=args.points,
                                  crop=args.crop, latent_downsample=args.latent_downsample, lora_rank=args.rank,
                                  perceptual=args.perceptual, gan_weight=args.gan_weight if args.stage == "base" else 0.0,
                                  mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
                                  seed=args.seed, checkpoint_every=args.checkpoint_every)
    if args.frames:
        sampler = training.FrameFolderSampler(args.frames, config.crop, config.scenes, config.seed, config.points)
    else:
        sampler = training.TrajectorySampler(datasets.SharpFolder(args.sharp), config.crop, config.scenes, config.seed, config.points)
    trainer = training.FideDiffTrainer(config, args.base, sampler, args.run, args.adapter, args.estimator, cpu=args.cpu)
    run_trainer(trainer, args.resume, lambda t: f"step {t.step_index}", 10,
                lambda step, losses: f"{args.stage} step {step}: loss {losses['loss']:.4f}", args.stop_after)
    if not trainer.finished or not trainer.is_main:
        return 0
    output = args.output or os.path.join(args.run, "adapter.safetensors")
    trainer.export(output)
    print(f"wrote {output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
