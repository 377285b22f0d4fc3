"""Train HI-Diff (both stages, as the paper) and write the pack's .safetensors.

Data: ``--paired DIR`` (GoPro/RealBlur layout: DIR/input, DIR/target) or ``--sharp DIR`` (sharp images;
blurry versions are synthesised on the fly with seeded camera-shake kernels).

    python tools/train_hidiff.py --sharp photos/ --run runs/mine --preset compact --iters 2000 1000
    python tools/train_hidiff.py --paired GoPro/train --run runs/gopro --preset gopro --device cuda --amp bf16
    python tools/train_hidiff.py --run runs/mine --resume ...   # continue after an interruption
    accelerate launch --num_processes 2 tools/train_hidiff.py --paired GoPro/train --run runs/gopro --batch 4 ...

The loop runs on accelerate: --amp picks its mixed precision, ``accelerate launch`` (or torchrun) trains
on several GPUs or machines, --batch being per process (W processes of batch B see the samples one
process of batch W·B would). The run folder gets checkpoint.safetensors + training_state.pt (resumable
bit for bit), loss_log.csv, and at the end the model (``--output``, default RUN/model.safetensors) for
models/deblur/.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time

import torch

from _cli import parse_training_args, pick_device, training_parser
from _pack import pack_module


def parse_args(argv=None):
    p = training_parser(__doc__, lr=2e-4, seed=100, checkpoint_every=250)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--paired", help="folder with input/ and target/ (GoPro, RealBlur)")
    data.add_argument("--sharp", help="folder of sharp images; blur is synthesised on the fly")
    p.add_argument("--run", required=True, help="run folder (checkpoints, loss_log.csv)")
    p.add_argument("--output", help="final model file (default RUN/model.safetensors)")
    p.add_argument("--init", help="start from this model's weights (pack format with net_le), e.g. to fine-tune; "
                                  "stage-one iterations 0 trains stage two only")
    p.add_argument("--preset", default="compact", help="model size: compact (default), tiny, gopro")
    p.add_argument("--size-json", help="model size as JSON (fields of models.hidiff.training.ModelSize), overrides --preset")
    p.add_argument("--iters", type=int, nargs=2, default=(2000, 1000), metavar=("STAGE1", "STAGE2"))
    p.add_argument("--batch", type=int, default=8, help="per process (accelerate launch: the global batch is processes x this)")
    p.add_argument("--patch", type=int, default=64, help="training crop size (multiple of 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (under accelerate launch: auto or cpu)")
    p.add_argument("--amp", default="off", choices=("off", "fp16", "bf16"), help="accelerate's mixed precision (fp16: CUDA only)")
    p.add_argument("--log-every", type=int, default=10)
    blur = p.add_argument_group("synthetic blur (--sharp)")
    blur.add_argument("--kind", default="camera_shake", choices=("camera_shake", "linear"))
    blur.add_argument("--kernel-size", type=int, default=21)
    blur.add_argument("--intensity", type=float, nargs=2, default=(0.2, 1.0), metavar=("MIN", "MAX"))
    blur.add_argument("--noise", type=float, nargs=2, default=(0.0, 0.01), metavar=("MIN", "MAX"))
    blur.add_argument("--gamma", type=float, default=2.2, help="camera response: blur in linear light")
    blur.add_argument("--jpeg", type=int, default=0, help="JPEG quality after blurring (0: off)")
    blur.add_argument("--regions", type=int, default=1, help="spatially varying blur grid")
    blur.add_argument("--mix", action="store_true",
                      help="draw the blur per sample (BlurMix): camera shake or linear, in linear light or in stored "
                           "values, random noise and JPEG, some sharp pairs; --kernel-size/--intensity/--noise/--gamma "
                           "bound it")
    blur.add_argument("--linear-share", type=float, default=0.3, help="--mix: share of straight-line motion")
    blur.add_argument("--srgb-share", type=float, default=0.5, help="--mix: share blurred in stored (sRGB) values")
    blur.add_argument("--sharp-share", type=float, default=0.1, help="--mix: share of sharp pairs (input = target)")
    blur.add_argument("--jpeg-share", type=float, default=0.3, help="--mix: share JPEG-compressed")
    blur.add_argument("--jpeg-quality", type=int, nargs=2, default=(60, 95), metavar=("MIN", "MAX"), help="--mix: JPEG quality range")
    blur.add_argument("--scale", type=float, nargs=2, default=(0.5, 1.0), metavar=("MIN", "MAX"),
                      help="random zoom of the source images per patch")
    val = p.add_argument_group("validation")
    val.add_argument("--val", help="held-out folder: sharp images (synthetic, fixed seed) or input/+target/")
    val.add_argument("--val-every", type=int, default=0)
    val.add_argument("--val-count", type=int, default=6, help="images used for validation")
    val.add_argument("--val-crop", type=int, default=128)
    p.add_argument("--colour-fix", type=float, default=0.0, metavar="PX",
                   help="store colour anchoring at this scale in the written model (models/common/colour.py; 0: off). "
                        "Training is unaffected; rerun a finished run with --resume to re-export with it")
    p.add_argument("--notes", default="", help="free text stored in the model's metadata")
    return parse_training_args(p, argv)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def make_validation(args, blur, metrics, hidiff):
    """A function (model, stage) → mean PSNR on fixed held-out crops; stage one uses the sharp-aware
    prior (as the official stage-one validation), stage two the full inference."""
    if args.val is None:
        return None
    datasets = blur.datasets
    padding = pack_module("models.common.padding")
    if os.path.isdir(os.path.join(args.val, "input")) or os.path.isdir(os.path.join(args.val, "blur")):
        folder = datasets.PairedFolder(args.val)
        pairs = [folder[i] for i in range(min(len(folder), args.val_count))]
        pairs = [datasets.Pair(p.name, *[x[:, :args.val_crop, :args.val_crop] for x in (p.blurry, p.sharp)]) for p in pairs]
    else:
        pairs = list(datasets.synthetic_pairs(datasets.SharpFolder(args.val), settings_from(args, blur), seed=12345, crop=args.val_crop))
        pairs = pairs[:args.val_count]

    @torch.no_grad()
    def validate(model, stage):
        model.eval()
        scores = []
        for index, pair in enumerate(pairs):
            device = next(model.parameters()).device
            blurry, sharp = pair.blurry[None].to(device), pair.sharp[None].to(device)
            if stage == 1:
                restored = model.restore(blurry, model.net_le(*(padding.pad_to_multiple(x, 8)[0] for x in (blurry, sharp))))
            else:
                restored = model(blurry, model.initial_noise(1, index).to(device))
            scores.append(float(metrics.psnr(metrics.to_8bit(restored.cpu()), metrics.to_8bit(sharp.cpu()))[0]))
        model.train()
        return sum(scores) / len(scores)

    return validate


def settings_from(args, blur):
    return blur.BlurSettings(kind=args.kind, kernel_size=args.kernel_size, intensity=tuple(args.intensity),
                             noise=tuple(args.noise), gamma=args.gamma, jpeg_quality=args.jpeg, grid=args.regions)


def mix_from(args, blur):
    return blur.BlurMix(kernel_size=args.kernel_size, intensity=tuple(args.intensity), linear_share=args.linear_share,
                        srgb_share=args.srgb_share, gamma=args.gamma, sharp_share=args.sharp_share, noise=tuple(args.noise),
                        jpeg_share=args.jpeg_share, jpeg_quality=tuple(args.jpeg_quality))


def main(argv=None) -> int:
    args = parse_args(argv)
    hidiff = pack_module("models.hidiff")
    training = pack_module("models.hidiff.training")
    blur = pack_module("models.blur")
    pack_module("models.blur.datasets")
    metrics = pack_module("models.common.metrics")
    if args.patch % 8:
        print("error: --patch must be a multiple of 8", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    if args.amp == "fp16" and device.type != "cuda":
        print("error: --amp fp16 needs CUDA; use --amp bf16 or off", file=sys.stderr)
        return 2
    datasets = blur.datasets
    if args.sharp:
        settings = mix_from(args, blur) if args.mix else settings_from(args, blur)
        source = datasets.SharpFolder(args.sharp)
        sampler = datasets.PatchSampler(source, args.patch, args.batch, args.seed + 1, settings, tuple(args.scale))
        data = f"{len(source)} sharp images from {args.sharp}, synthetic blur {json.dumps(settings.to_dict())}, zoom {args.scale}"
    else:
        source = datasets.PairedFolder(args.paired)
        sampler = datasets.PatchSampler(source, args.patch, args.batch, args.seed + 1)
        data = f"{len(source)} pairs from {args.paired}"
    checkpoint = os.path.join(args.run, training.CHECKPOINT)
    model = None
    if args.resume and os.path.exists(checkpoint):
        model = hidiff.load_hidiff(checkpoint)
    elif args.resume:
        print(f"note: nothing to resume in {args.run}; starting a new run", file=sys.stderr)
    if model is None and args.init:
        model = hidiff.load_hidiff(args.init)
        if model.net_le is None:
            print(f"error: {args.init} has no stage-one encoder net_le; it cannot be trained further", file=sys.stderr)
            return 2
    elif model is None:
        size = training.ModelSize(**json.loads(args.size_json)) if args.size_json else training.PRESETS[args.preset]
        model = training.build_model(size)
    if not 0.0 <= args.colour_fix <= 256:
        print("error: --colour-fix must be 0..256 px", file=sys.stderr)
        return 2
    config = training.TrainConfig(iterations=tuple(args.iters), lr=args.lr, amp=args.amp, seed=args.seed,
                                  checkpoint_every=args.checkpoint_every, log_every=args.log_every, val_every=args.val_every)
    metadata = {"data": data, "patch": args.patch, "batch": args.batch, "device": str(device), "hardware": hardware(device),
                "torch": torch.__version__, "notes": args.notes}
    trainer = training.Trainer(model, sampler, config, args.run, "auto" if args.device == "auto" else str(device),
                               make_validation(args, blur, metrics, hidiff), metadata)
    if args.resume and os.path.exists(checkpoint):
        trainer.load()
        print(f"resumed at stage {trainer.stage}, iteration {trainer.iteration}", file=sys.stderr)
    from tqdm.auto import tqdm

    total = sum(config.iterations)
    done = (config.iterations[0] if trainer.stage == 2 else 0) + trainer.iteration
    bar = tqdm(total=total, initial=min(done, total), desc="HI-Diff training",
               disable=os.environ.get("DEBLUR_NO_PROGRESS") == "1" or not trainer.is_main)

    def progress(iteration, losses):
        bar.update(1)
        bar.set_postfix(stage=trainer.stage, l_pix=f"{losses['l_pix']:.4f}", **({"l_prior": f"{losses['l_prior']:.4f}"} if "l_prior" in losses else {}))

    started = time.time()
    try:
        trainer.run(stop_after=args.stop_after or None, progress=progress)
    except KeyboardInterrupt:
        if trainer.is_main:
            trainer.save()
        print(f"\ninterrupted; checkpoint saved in {args.run} (continue with --resume)", file=sys.stderr)
        return 130
    finally:
        bar.close()
    if not trainer.finished:
        if trainer.is_main:
            print(f"stopped at stage {trainer.stage}, iteration {trainer.iteration} after --stop-after {args.stop_after}; "
                  f"continue with --resume", file=sys.stderr)
        return 0
    output = args.output or os.path.join(args.run, "model.safetensors")
    trainer.model.colour_fix = args.colour_fix  # only in the exported file: checkpoints keep training plain
    trainer.export(output)
    if not trainer.is_main:
        return 0
    print(f"wrote {output} ({os.path.getsize(output) / 1e6:.2f} MB) after {time.time() - started:.0f} s "
          f"({trainer.elapsed:.0f} s of training steps in total); log: {os.path.join(args.run, training.LOG)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
