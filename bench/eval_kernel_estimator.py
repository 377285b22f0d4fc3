"""Measure FideDiff's kernel estimator M and blur-level regressor T on held-out synthetic blur, and show
what they make of the real blurred photo in example_images/.

    python bench/eval_kernel_estimator.py                       # the bundled estimator
    python bench/eval_kernel_estimator.py --model run/model.safetensors --samples 48

Held-out set: crops of /work/data/default/eval (never seen in training; --eval to change), blurred by the
training generator with its own seed: half frame averaging with a known number of frames n (level
t = 20·(n − 1)), half blur-lab camera shake (a quarter of it spatially varying), noise up to 0.01.

Prints, as a Markdown table:
* reblur PSNR (the sharp crop filtered by the estimated kernels, against the blurry crop), next to the
  identity kernel (no blur), the classical blind estimate (models/classical, one kernel per crop) and the
  true kernels (the ceiling; only the added noise remains);
* kernel error: the squared distance of the stride-8 kernel grid to the true one;
* blur-level MAE on the frame-averaged crops, next to always predicting their mean level.
With --figure, writes the kernel picture of the real photo (default docs/images/fidediff_estimator_clock.png).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from _pack import ROOT, pack_module  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="estimator or FideDiff adapter file (default: the bundled estimator)")
    p.add_argument("--eval", default="/work/data/default/eval", help="folder of held-out sharp images")
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--seed", type=int, default=20260)
    p.add_argument("--photo", default=os.path.join(ROOT, "example_images", "deblur_example_clock_motion.png"))
    p.add_argument("--figure", nargs="?", const=os.path.join(ROOT, "docs", "images", "fidediff_estimator_clock.png"),
                   help="write the picture of the photo's kernels and level map here")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean().clamp_min(1e-12)))


def evaluate(model, args) -> dict:
    training = pack_module("models.fidediff.estimator_training")
    datasets = pack_module("models.blur.datasets")
    blur = pack_module("models.blur")
    classical = pack_module("models.classical.kernel_estimation")
    est = pack_module("models.fidediff.estimator")
    m = model.kernel_size
    c = m // 2
    config = training.DataConfig(kernel_size=m, patch=args.patch, batch=1, frame_share=0.5, scale=(1.0, 1.0))
    sampler = training.EstimatorSampler(datasets.SharpFolder(args.eval), config, args.seed)
    rows = {key: [] for key in ("estimator", "identity", "classical", "truth", "k_est", "k_id", "k_cls")}
    levels, truths = [], []
    grid = est.level_grid(args.patch, args.patch)
    identity = torch.zeros(m * m)
    identity[m * m // 2] = 1
    started = time.time()
    for _ in range(args.samples):
        blurry, sharp, level, known, truth = sampler.next_batch()
        inner = sharp[..., c:-c, c:-c]
        with torch.no_grad():
            estimate = model.estimator(blurry)
            rows["estimator"].append(psnr(estimate.reblur(sharp), blurry))
            rows["k_est"].append(float((estimate.kernel_map(grid) - truth).square().sum(1).mean()))
            if known[0]:
                levels.append(float(model.regressor.level(estimate.kernel_map(grid))))
                truths.append(float(level[0]))
        rows["identity"].append(psnr(inner, blurry))
        rows["k_id"].append(float((identity[:, None, None] - truth[0]).square().sum(0).mean()))
        kernel = classical.estimate_kernel(blurry[0].double(), m).float()
        rows["classical"].append(psnr(blur.convolve(sharp, kernel)[..., c:-c, c:-c], blurry))
        rows["k_cls"].append(float((kernel.flatten()[:, None, None] - truth[0]).square().sum(0).mean()))
        true_estimate = est.KernelEstimate(truth.view(1, m * m, -1).permute(0, 2, 1).reshape(1, -1, m, m),
                                           torch.nn.functional.interpolate(
                                               torch.eye(grid[0] * grid[1]).view(1, -1, *grid), size=blurry.shape[-2:], mode="nearest"))
        rows["truth"].append(psnr(true_estimate.reblur(sharp), blurry))
    mean = lambda v: sum(v) / len(v)
    level_t = torch.tensor(levels)
    truth_t = torch.tensor(truths)
    return {**{k: mean(v) for k, v in rows.items()}, "level_mae": float((level_t - truth_t).abs().mean()),
            "mean_mae": float((truth_t - truth_t.mean()).abs().mean()), "frames": len(levels),
            "seconds": time.time() - started}


def photo_figure(model, args) -> tuple[float, str | None]:
    image_io = pack_module("models.common.image_io")
    preview = pack_module("models.blur.preview")
    visual = pack_module("models.common.visual")
    view = pack_module("models.fidediff.level_view")
    blur_kernel = pack_module("models.blur.blur_kernel")
    photo = image_io.read_image(args.photo)
    if photo.shape[0] == 1:
        photo = photo.expand(3, -1, -1)
    out = model.estimate(photo[None])
    level = float(out.level[0])
    if not args.figure:
        return level, None
    m = model.kernel_size
    cells = torch.nn.functional.adaptive_avg_pool2d(out.kernel_map, (3, 4))  # a readable 3 x 4 grid
    kernels = cells[0].permute(1, 2, 0).reshape(3, 4, m, m)
    value = blur_kernel.make_blur_kernel(kernels[None], level=[round(level, 1)],
                                         info=[{"kind": "estimated", "grid": [3, 4]}])
    h = photo.shape[-2]
    drawn = preview.preview(value, size=max(24, h // 3), captions=False)[0]
    levels = view.level_picture(photo, out.level_map[0], level)
    sheet = visual.side_by_side([photo, drawn, levels], ["blurry photo", f"estimated kernels (3x4 cells of {m}x{m})", ""])
    os.makedirs(os.path.dirname(os.path.abspath(args.figure)), exist_ok=True)
    image_io.save_png(sheet, args.figure)
    return level, args.figure


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    em = pack_module("models.fidediff.estimator_model")
    path = args.model or em.DEFAULT_PATH
    model = em.load_blur_estimator(path)
    r = evaluate(model, args)
    print(f"held-out: {args.samples} crops of {args.patch}x{args.patch} from {args.eval}, seed {args.seed} "
          f"({r['frames']} frame-averaged with known level); model {os.path.basename(path)}; {r['seconds']:.0f} s\n")
    print("| kernels | reblur PSNR (dB) | kernel error (squared, per cell) |")
    print("|---|---|---|")
    print(f"| identity (no blur) | {r['identity']:.2f} | {r['k_id']:.3f} |")
    print(f"| classical blind estimate (one per crop) | {r['classical']:.2f} | {r['k_cls']:.3f} |")
    print(f"| **estimator M** | **{r['estimator']:.2f}** | **{r['k_est']:.3f}** |")
    print(f"| true kernels (ceiling: noise only) | {r['truth']:.2f} | 0 |")
    print()
    print("| blur level (0..400) | MAE |")
    print("|---|---|")
    print(f"| always the mean level | {r['mean_mae']:.1f} |")
    print(f"| **regressor T** | **{r['level_mae']:.1f}** |")
    level, figure = photo_figure(model, args)
    print(f"\nreal photo {os.path.basename(args.photo)}: blur level {level:.0f} (like {level / 20 + 1:.1f} frames)"
          + (f"; picture: {os.path.relpath(figure, ROOT)}" if figure else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
