"""Train FideDiff's kernel estimator M and blur-level regressor T on synthetic blur of sharp images.

Blur is synthesised on the fly (seeded): GoPro-style frame averaging with a known number of frames n
(level t = 20·(n − 1)) and the blur lab's camera shake. Stage 1 trains M with the reblur loss (and T on
its output), stage 2 T alone with M frozen.

    python tools/train_kernel_estimator.py --sharp photos/ --run runs/estimator --iters 8000 1500
    python tools/train_kernel_estimator.py --sharp photos/ --run runs/estimator --iters 8000 1500 --resume
    python tools/train_kernel_estimator.py --sharp photos/ --run runs/tuned --init model.safetensors --iters 2000 300 --lr 2e-4

    accelerate launch --num_processes 2 tools/train_kernel_estimator.py --sharp photos/ --run runs/estimator --batch 4

The loop runs on accelerate: --amp picks its mixed precision, ``accelerate launch`` (or torchrun) trains
on several GPUs or machines, --batch being per process (W processes of batch B see the samples one
process of batch W·B would).
The run folder gets checkpoint.safetensors + training_state.pt (resumable bit for bit) and loss_log.csv; at the end
the model (``--output``, default RUN/model.safetensors), loadable by the Blur Kernel Estimate node from
models/deblur/FideDiff/.
"""
from __future__ import annotations

import os
import sys

import torch

from _cli import parse_training_args, pick_device, run_trainer, training_parser
from _pack import pack_module


def parse_args(argv=None):
    p = training_parser(__doc__, lr=5e-4, seed=19, checkpoint_every=200)
    p.add_argument("--sharp", required=True, help="folder of sharp images")
    p.add_argument("--run", required=True, help="run folder (checkpoints, loss_log.csv)")
    p.add_argument("--output", help="final model file (default RUN/model.safetensors)")
    p.add_argument("--init", help="start from this estimator file's weights (a new run: fine-tuning); sizes from the file")
    p.add_argument("--iters", type=int, nargs=2, default=(8000, 1500), metavar=("KERNEL", "LEVEL"))
    p.add_argument("--kernel-size", type=int, default=19, help="m: side of the estimated kernels (odd)")
    p.add_argument("--basis", type=int, default=8, help="basis kernels per image")
    p.add_argument("--widths", type=int, nargs="+", default=(16, 32, 64, 96), help="M's UNet widths")
    p.add_argument("--regressor-width", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="per process (accelerate launch: the global batch is processes x this)")
    p.add_argument("--patch", type=int, default=64, help="training crop (multiple of 8)")
    p.add_argument("--frames", type=int, nargs=2, default=(1, 21), metavar=("MIN", "MAX"),
                   help="frames averaged (odd counts in the range; level 20 (n - 1))")
    p.add_argument("--speed", type=float, nargs=2, default=(0.4, 0.9), metavar=("MIN", "MAX"),
                   help="motion per frame in px; (MAX frames - 1) / 2 x MAX speed must fit in half the kernel")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (under accelerate launch: auto or cpu)")
    p.add_argument("--amp", default="off", choices=("off", "fp16", "bf16"), help="accelerate's mixed precision (fp16: CUDA only)")
    return parse_training_args(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    training = pack_module("models.fidediff.estimator_training")
    estimator = pack_module("models.fidediff.estimator")
    device = pick_device(args.device)
    data = training.DataConfig(kernel_size=args.kernel_size, patch=args.patch, batch=args.batch,
                                 frames=tuple(args.frames), speed=tuple(args.speed))
    config = training.EstimatorTrainConfig(iterations=tuple(args.iters), lr=args.lr, seed=args.seed,
                                           checkpoint_every=args.checkpoint_every)
    torch.manual_seed(args.seed)  # the initial weights follow --seed (every process builds the same model)
    if args.init:
        model = pack_module("models.fidediff.estimator_model").load_blur_estimator(args.init).train()
        data.kernel_size = model.kernel_size
    else:
        model = training.build_estimator(
            estimator.EstimatorConfig(kernel_size=args.kernel_size, basis=args.basis, widths=tuple(args.widths)),
            estimator.RegressorConfig(kernel_size=args.kernel_size, width=args.regressor_width))
    sampler = training.EstimatorSampler(pack_module("models.blur.datasets").SharpFolder(args.sharp), data, args.seed)
    if args.amp == "fp16" and device.type != "cuda":
        raise SystemExit("error: --amp fp16 needs CUDA; use --amp bf16 or off")
    trainer = training.EstimatorTrainer(model, sampler, config, args.run, "auto" if args.device == "auto" else str(device),
                                        mixed_precision={"off": "no"}.get(args.amp, args.amp), metadata={"data": vars(data), "source": os.path.basename(os.path.normpath(args.sharp)),
                                                  "init": os.path.basename(args.init) if args.init else None})
    run_trainer(trainer, args.resume, lambda t: f"stage {t.stage}, iteration {t.iteration}", 50,
                lambda iteration, losses: f"stage {trainer.stage} it {iteration}: reblur {losses['l_reblur']:.5f}  "
                                                 f"level MAE {losses['level_mae']:.1f} ", args.stop_after)
    if not trainer.finished:
        return 0
    output = args.output or os.path.join(args.run, "model.safetensors")
    trainer.export(output)
    if trainer.is_main:
        print(f"wrote {output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
