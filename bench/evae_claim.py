"""Does the eVAE do what OSDD says, at our scale? Train a small SD-shaped autoencoder from scratch on CPU,
then its eVAE skip blocks, and measure on held-out images how much of the sharp photo each decodes.

    OMP_NUM_THREADS=1 python bench/evae_claim.py --train /work/data/default/train \
        --eval /work/data/default/eval --state /work/data/osdd/evae_claim

Phases (each resumable from STATE/state.pt, checkpointed every ``--checkpoint-every`` steps):
  A  the autoencoder (KL-f8, 4 latent channels, SD's block layout at reduced width) on sharp patches,
     L1 + 1e-6 KL, as SD's first stage without its perceptual/GAN terms;
  B  the eVAE skip blocks, autoencoder frozen: latent of the SHARP patch, skips from the BLURRY patch
     (blur lab's camera-shake kernels), target the sharp patch (OSDD's stage 1, Fig. 3);
  C  control: the same skip blocks trained the same way but fed zeros instead of the blurry features,
     i.e. the extra decoder capacity alone, so B's gain can be told from "more trainable parameters".
Evaluation: held-out images, central 256² crops, blurred with seed 0; PSNR/SSIM (8-bit) of decoding the
sharp latent plainly, with the control blocks, with skips from the blurry image, and (out of training
distribution, an upper hint) with skips from the sharp image. Prints a Markdown table; writes
STATE/results.json. A measurement, not a tool, hence bench/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools")]
from _pack import pack_module  # noqa: E402

sd21 = pack_module("models.sd21")
osdd = pack_module("models.osdd")
blur = pack_module("models.blur")
datasets = pack_module("models.blur.datasets")
metrics = pack_module("models.common.metrics")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="sharp training images")
    p.add_argument("--eval", required=True, help="held-out sharp images")
    p.add_argument("--state", required=True, help="folder for state.pt and results.json")
    p.add_argument("--steps", type=int, nargs=3, default=(5000, 1500, 1500), metavar=("A", "B", "C"))
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--mult", type=int, nargs="+", default=(1, 2, 4, 4))
    p.add_argument("--res-blocks", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--lr", type=float, nargs=2, default=(5e-4, 5e-4), metavar=("AE", "SKIPS"))
    p.add_argument("--crop", type=int, default=256, help="evaluation crop (multiple of 8)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def blur_settings():
    """The bundled HI-Diff model's training/evaluation blur (bench/eval_default_model.py)."""
    return blur.BlurSettings(kind="camera_shake", kernel_size=21, intensity=(0.2, 1.0), noise=(0.0, 0.01), gamma=2.2)


class Run:
    """Models, optimisers and the data stream, saved and restored together."""

    def __init__(self, args):
        self.args = args
        torch.manual_seed(args.seed)
        config = sd21.VAEConfig(channels=args.channels, channel_mult=tuple(args.mult), num_res_blocks=args.res_blocks)
        self.evae = osdd.EVAE(sd21.AutoencoderKL(config))
        self.control = osdd.EVAE(self.evae.vae)  # shares the autoencoder, own skip blocks
        self.control.skips.load_state_dict(self.evae.skips.state_dict())
        self.sampler = datasets.PatchSampler(datasets.SharpFolder(args.train), args.patch, args.batch, args.seed,
                                             blur_settings(), (0.35, 1.0))
        self.optimisers = {"A": torch.optim.AdamW(self.evae.vae.parameters(), args.lr[0], weight_decay=0.0),
                           "B": torch.optim.AdamW(self.evae.skips.parameters(), args.lr[1], weight_decay=0.0),
                           "C": torch.optim.AdamW(self.control.skips.parameters(), args.lr[1], weight_decay=0.0)}
        self.steps = {"A": 0, "B": 0, "C": 0}
        self.path = os.path.join(args.state, "state.pt")

    def save(self):
        state = {"vae": self.evae.vae.state_dict(), "skips": self.evae.skips.state_dict(),
                 "control": self.control.skips.state_dict(), "sampler": self.sampler.state(),
                 "steps": dict(self.steps), "optimisers": {k: o.state_dict() for k, o in self.optimisers.items()}}
        torch.save(state, self.path + ".tmp")
        os.replace(self.path + ".tmp", self.path)

    def load(self) -> bool:
        if not os.path.isfile(self.path):
            return False
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        self.evae.vae.load_state_dict(state["vae"])
        self.evae.skips.load_state_dict(state["skips"])
        self.control.skips.load_state_dict(state["control"])
        self.sampler.set_state(state["sampler"])
        self.steps = state["steps"]
        for k, o in self.optimisers.items():
            o.load_state_dict(state["optimisers"][k])
        return True

    def step(self, phase: str) -> float:
        blurry, sharp = self.sampler.next_batch()
        blurry, sharp = blurry * 2 - 1, sharp * 2 - 1
        if phase == "A":
            mean, logvar = self.evae.vae.moments(sharp)
            latent = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum((1, 2, 3)).mean()
            loss = (self.evae.vae.decode(latent) - sharp).abs().mean()
            total = loss + 1e-6 * kl
        else:
            with torch.no_grad():
                latent = self.evae.vae.encode(sharp)
                _, skips = self.evae.encode_with_skips(blurry)
            model = self.evae if phase == "B" else self.control
            if phase == "C":
                skips = osdd.Skips([torch.zeros_like(f) for f in skips.features], skips.latent_size)
            loss = total = (model.decode(latent, skips) - sharp).abs().mean()
        optimiser = self.optimisers[phase]
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        params = [p for g in optimiser.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        self.steps[phase] += 1
        return float(loss.detach())

    def train(self, log=print):
        for phase, total in zip("ABC", self.args.steps):
            self.evae.vae.requires_grad_(phase == "A")
            started, losses = time.time(), []
            while self.steps[phase] < total:
                losses.append(self.step(phase))
                if self.steps[phase] % self.args.checkpoint_every == 0 or self.steps[phase] == total:
                    self.save()
                    log(f"{phase} {self.steps[phase]}/{total} L1 {sum(losses) / len(losses):.4f} "
                        f"({(time.time() - started) / len(losses):.2f} s/step)")
                    started, losses = time.time(), []


@torch.no_grad()
def evaluate(run: Run, folder: str, crop: int) -> dict:
    run.evae.eval()
    rows = {"blurry input": [], "plain decoder": [], "control (zeros into skip blocks)": [],
            "eVAE, skips from blurry": [], "eVAE, skips from sharp (hint)": []}
    pairs = list(datasets.synthetic_pairs(datasets.SharpFolder(folder), blur_settings(), seed=0, crop=crop))
    for pair in pairs:
        h, w = (s // 8 * 8 for s in pair.sharp.shape[-2:])
        sharp, blurry = pair.sharp[None, :, :h, :w], pair.blurry[None, :, :h, :w]
        latent = run.evae.vae.encode(sharp * 2 - 1)
        _, blurry_skips = run.evae.encode_with_skips(blurry * 2 - 1)
        _, sharp_skips = run.evae.encode_with_skips(sharp * 2 - 1)
        zeros = osdd.Skips([torch.zeros_like(f) for f in blurry_skips.features], blurry_skips.latent_size)
        outputs = {"blurry input": blurry * 2 - 1,
                   "plain decoder": run.evae.decode(latent),
                   "control (zeros into skip blocks)": run.control.decode(latent, zeros),
                   "eVAE, skips from blurry": run.evae.decode(latent, blurry_skips),
                   "eVAE, skips from sharp (hint)": run.evae.decode(latent, sharp_skips)}
        target = metrics.to_8bit(sharp)
        for name, out in outputs.items():
            image = metrics.to_8bit((out + 1) / 2)
            rows[name].append((float(metrics.psnr(image, target)[0]), float(metrics.ssim(image, target)[0])))
    names = [pair.name for pair in pairs]
    summary = {}
    for name, values in rows.items():
        groups = {"all": range(len(values)),
                  "photos": [i for i, n in enumerate(names) if not n.startswith("dead_leaves")],
                  "dead leaves": [i for i, n in enumerate(names) if n.startswith("dead_leaves")]}
        summary[name] = {group: {"psnr": sum(values[i][0] for i in idx) / len(idx),
                                 "ssim": sum(values[i][1] for i in idx) / len(idx), "images": len(idx)}
                         for group, idx in groups.items() if len(idx)}
        summary[name]["per_image"] = {n: {"psnr": v[0], "ssim": v[1]} for n, v in zip(names, values)}
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.state, exist_ok=True)
    run = Run(args)
    if run.load():
        print(f"resumed at {run.steps}", flush=True)
    run.train(lambda line: print(line, flush=True))
    results = evaluate(run, args.eval, args.crop)
    summary = {"steps": run.steps, "config": run.evae.config.to_dict(), "batch": args.batch, "patch": args.patch,
               "results": results}
    with open(os.path.join(args.state, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    groups = [g for g in ("all", "photos", "dead leaves") if g in results["plain decoder"]]
    counts = ", ".join(f"{results['plain decoder'][g]['images']} {g}" for g in groups)
    print(f"\nheld-out {args.eval} ({counts}), central {args.crop}² crops, seed 0; PSNR dB / SSIM\n")
    print("| decoding of the sharp latent | " + " | ".join(groups) + " |\n|---|" + "---|" * len(groups))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[g]['psnr']:.2f} / {r[g]['ssim']:.4f}" for g in groups) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
