"""Do FideDiff's two claims hold at our scale? (1) the Kernel ControlNet (KCN) helps because of the
kernels it is fed, (2) stepping at the blur level t̂ beats a fixed timestep. Everything is trained from
scratch on the CPU on the blur lab's frame-averaged trajectories, then evaluated on held-out images.

    OMP_NUM_THREADS=1 python bench/kcn_claim.py --train /work/data/default/train \
        --eval /work/data/default/eval --state /work/data/kcn_claim

Phases (resumable from STATE/state.pt, checkpointed every ``--checkpoint-every`` steps):
  AE    the autoencoder: bench/evae_claim.py's phase A, by import (SD's KL-f8 layout at reduced width);
  base  a small SD-shaped UNet (models/sd21) trained fully (no pretrained prior, so no LoRA) as FideDiff's
        stage base: frame-averaged trajectory points (TrajectorySampler), one step at the true level t,
        ẑ0 = predict_x0, decoded, L1 to the middle frame;
  then, each from the base UNet for the SAME number of steps, same data stream, same t mix (half the
  steps at the true t, half at the bundled T's t̂, as training.py's control stage):
  a     no KCN: the base UNet itself trained on;
  b     KCN (KernelControlNet.from_unet, base frozen) fed the bundled estimator M's kernel map;
  c     KCN fed the true kernels of the trajectory (the ceiling);
  d     KCN fed zeros (the capacity control: same parameters and steps, no kernel information);
  e     no KCN, the base UNet trained on at the fixed t = 200 (DEFAULT_TIMESTEP), evaluated at 200;
        (f) is variant a evaluated at the bundled T's t̂ (also reported at the true t).
Minimal adaptations of models/fidediff/training.py (its FideDiffTrainer needs an SD 2.1 file, peft
LoRA and LPIPS): L1 only (no EA-LPIPS, no GAN), d = 8 (no ×2 upsampling), T frozen (no time loss),
the sampler subclassed only to also return the true kernel. Prints a Markdown table; writes
STATE/results.json. A measurement, not a tool, hence bench/.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools")]
from _pack import pack_module  # noqa: E402

sd21 = pack_module("models.sd21")
fd_training = pack_module("models.fidediff.training")
fd_model = pack_module("models.fidediff.model")
fd_kcn = pack_module("models.fidediff.kcn")
estimator_model = pack_module("models.fidediff.estimator_model")
datasets = pack_module("models.blur.datasets")
frames = pack_module("models.blur.frames")
trajectory = pack_module("models.blur.trajectory")
metrics = pack_module("models.common.metrics")

_spec = importlib.util.spec_from_file_location("evae_claim", os.path.join(ROOT, "bench", "evae_claim.py"))
evae_claim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evae_claim)

ESTIMATOR = os.path.join(ROOT, "models", "fidediff", "default", "fidediff_estimator_synthetic.safetensors")
VARIANTS = ("a", "b", "c", "d", "e")
KCN_FEED = {"b": "estimated", "c": "true", "d": "zeros"}
FIXED_T = fd_model.DEFAULT_TIMESTEP


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--steps", type=int, nargs=3, default=(600, 600, 300), metavar=("AE", "BASE", "VARIANT"))
    p.add_argument("--ae-channels", type=int, default=32)
    p.add_argument("--unet-channels", type=int, default=32)
    p.add_argument("--scenes", type=int, default=2, help="trajectories per step (3 points each)")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--crop", type=int, default=128, help="evaluation patch (multiple of 16)")
    p.add_argument("--eval-levels", type=int, nargs="+", default=(7, 11, 15), help="frame counts evaluated")
    p.add_argument("--max-eval", type=int, default=0, help="only the first N eval images (0: all)")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--smoke", action="store_true", help="2 steps of every phase, 2 eval images (a check, no figures)")
    return p.parse_args(argv)


class KernelTrajectorySampler(fd_training.TrajectorySampler):
    """TrajectorySampler's batches plus each point's true kernel ``[m²]`` (the histogram of the averaged
    frames' shifts, convolution orientation, clamped to the m×m support). ``counts`` fixes the frame
    counts (evaluation)."""

    def __init__(self, *args, kernel_size: int = 19, counts: tuple[int, ...] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.kernel_size, self.counts = kernel_size, counts

    def scene(self):
        image = self.images[self._randint(len(self.images))]
        big = datasets.augment([self._crop(image, self.crop + 2 * self.margin)[0]], self._randint(8))[0]
        order = torch.randperm(len(self.frames), generator=self.generator)[:self.points]
        counts = list(self.counts) if self.counts else sorted(self.frames[int(i)] for i in order)
        longest = max(counts)
        path, params = trajectory.shake_trajectory(self.generator)
        index = torch.linspace(0, len(path) - 1, longest).round().long()
        points = path[index] * ((longest - 1) * self._uniform(*self.speed) / max(params["length"], 1e-6))
        offsets = (points - points[longest // 2]).round().long().flip(-1).clamp(-self.margin, self.margin)
        m, p, middle = self.margin, self.crop, longest // 2
        stack = torch.stack([big[:, m + dy:m + dy + p, m + dx:m + dx + p] for dy, dx in offsets.tolist()])
        blurry, kernels = [], []
        r = self.kernel_size // 2
        for n in counts:
            blurry.append(frames.average_frames(stack[middle - n // 2:middle + n // 2 + 1], gamma=1.0).blurry)
            kernel = torch.zeros(self.kernel_size, self.kernel_size)
            for dy, dx in offsets[middle - n // 2:middle + n // 2 + 1].tolist():
                kernel[r - max(-r, min(r, dy)), r - max(-r, min(r, dx))] += 1.0 / n
            kernels.append(kernel.flatten())
        sharp = stack[middle][None].expand(len(counts), -1, -1, -1)
        t = torch.tensor([float(frames.blur_level(n)) for n in counts])
        return torch.stack(blurry), sharp, t, torch.stack(kernels)

    def next_batch(self):
        blurry, sharp, t, k = zip(*(self.scene() for _ in range(self.batch)))
        return torch.cat(blurry), torch.cat(sharp), torch.cat(t), torch.cat(k)


def unet_config(channels: int, context: int = 32) -> "sd21.UNetConfig":
    return sd21.UNetConfig(in_channels=4, out_channels=4, model_channels=channels, channel_mult=(1, 2),
                           num_res_blocks=1, attention=(False, True), transformer_depth=(1, 1),
                           context_dim=context, linear_projection=True)


class Run:
    """Autoencoder, base UNet, the variants, their optimisers and data streams, saved together."""

    def __init__(self, args):
        self.args = args
        self.path = os.path.join(args.state, "state.pt")
        ae_args = evae_claim.parse_args(["--train", args.train, "--eval", args.eval,
                                         "--state", os.path.join(args.state, "ae"), "--steps", str(args.steps[0]), "0", "0",
                                         "--channels", str(args.ae_channels), "--mult", "1", "1", "1", "1",
                                         "--checkpoint-every", str(args.checkpoint_every), "--seed", str(args.seed)])
        os.makedirs(ae_args.state, exist_ok=True)
        self.ae = evae_claim.Run(ae_args)
        self.estimator = estimator_model.load_blur_estimator(ESTIMATOR).eval().requires_grad_(False)
        torch.manual_seed(args.seed)
        self.config = unet_config(args.unet_channels)
        self.schedule = sd21.OneStepSchedule("epsilon")
        self.context = torch.zeros(1, 77, self.config.context_dim)  # the learnable embedding, frozen at zero
        self.unets = {"base": sd21.build_unet(self.config)}
        self.kcns = {}
        self.steps = {"base": 0, **{v: 0 for v in VARIANTS}}
        self.samplers = {name: self._sampler() for name in ("base", *VARIANTS)}
        self.optimisers = {"base": torch.optim.AdamW(self.unets["base"].parameters(), args.lr, weight_decay=0.0)}

    def _sampler(self):
        return KernelTrajectorySampler(datasets.SharpFolder(self.args.train), self.args.patch, self.args.scenes,
                                       self.args.seed + 1, kernel_size=self.estimator.kernel_size)

    def branch(self):
        """The variants, each from the trained base UNet; every variant sees the same data stream."""
        base = self.unets["base"]
        for v in VARIANTS:
            if v in self.unets:
                continue
            unet = copy.deepcopy(base)
            if v in KCN_FEED:
                unet.requires_grad_(False)
                self.kcns[v] = fd_kcn.KernelControlNet.from_unet(unet, self.config, self.estimator.kernel_size ** 2)
                params = self.kcns[v].parameters()
            else:
                params = unet.parameters()
            self.unets[v] = unet
            self.optimisers[v] = torch.optim.AdamW(params, self.args.lr, weight_decay=0.0)
            self.samplers[v].set_state(self.samplers["base"].state())

    def save(self):
        state = {"unets": {k: m.state_dict() for k, m in self.unets.items()},
                 "kcns": {k: m.state_dict() for k, m in self.kcns.items()},
                 "optimisers": {k: o.state_dict() for k, o in self.optimisers.items()},
                 "samplers": {k: s.state() for k, s in self.samplers.items()}, "steps": dict(self.steps)}
        torch.save(state, self.path + ".tmp")
        os.replace(self.path + ".tmp", self.path)

    def load(self) -> bool:
        self.ae.load()
        if not os.path.isfile(self.path):
            return False
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        self.unets["base"].load_state_dict(state["unets"]["base"])
        self.optimisers["base"].load_state_dict(state["optimisers"]["base"])
        if any(v in state["unets"] for v in VARIANTS):
            self.branch()
            for k in VARIANTS:
                self.unets[k].load_state_dict(state["unets"][k])
                if k in self.kcns:
                    self.kcns[k].load_state_dict(state["kcns"][k])
                self.optimisers[k].load_state_dict(state["optimisers"][k])
        for k, s in self.samplers.items():
            s.set_state(state["samplers"][k])
        self.steps = state["steps"]
        return True

    # the one step
    @property
    def vae(self):
        return self.ae.evae.vae

    def encode(self, image):
        return self.vae.encode(image * 2 - 1)

    def decode(self, latent):
        return self.vae.decode(latent)

    def kernel_feed(self, name: str, blurry, true_kernels, latent_size):
        """``k_in`` for a KCN variant: the estimator's map, the true kernel everywhere, or zeros."""
        feed = KCN_FEED[name]
        if feed == "estimated":
            kmap = self.estimator.kernel_grid(blurry)
            return fd_model.kernel_input(kmap, blurry.shape[-2:], latent_size, 8)
        kmap = true_kernels[:, :, None, None].expand(-1, -1, *latent_size)
        return torch.zeros_like(kmap) if feed == "zeros" else kmap.contiguous()

    def estimated_level(self, blurry):
        return self.estimator.regressor(self.estimator.kernel_grid(blurry)).mean((1, 2, 3)).clamp(0, fd_model.MAX_TIMESTEP)

    def predict(self, name: str, blurry, t, true_kernels):
        with torch.no_grad():
            z_t = self.encode(blurry)
            k_in = self.kernel_feed(name, blurry, true_kernels, z_t.shape[-2:]) if name in KCN_FEED else None
        context = self.context.expand(z_t.shape[0], -1, -1)
        control = self.kcns[name](z_t, k_in, t, context) if k_in is not None else None
        down, middle = control if control is not None else (None, None)
        output = self.unets[name](z_t, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                                  mid_block_additional_residual=middle, return_dict=False)[0]
        return self.decode(self.schedule.predict_x0(z_t, output, t))

    def step(self, name: str) -> float:
        sampler = self.samplers[name]
        blurry, sharp, t, kernels = sampler.next_batch()
        if name == "e":
            t = torch.full_like(t, FIXED_T)
        elif name != "base":  # training.py's control stage: half the points at T's estimate
            use_estimate = torch.rand(t.shape[0], generator=sampler.generator) < 0.5
            with torch.no_grad():
                t = torch.where(use_estimate, self.estimated_level(blurry), t)
        loss = F.l1_loss(self.predict(name, blurry, t, kernels), sharp * 2 - 1)
        optimiser = self.optimisers[name]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimiser.param_groups for p in g["params"]], 1.0)
        optimiser.step()
        self.steps[name] += 1
        return float(loss.detach())

    def train(self, log=print):
        self.ae.train(log=lambda line: log("AE " + line))
        self.vae.requires_grad_(False).eval()
        phases = [("base", self.args.steps[1])] + [(v, self.args.steps[2]) for v in VARIANTS]
        for name, total in phases:
            if name != "base":
                self.branch()
            started, losses = time.time(), []
            while self.steps[name] < total:
                losses.append(self.step(name))
                if self.steps[name] % self.args.checkpoint_every == 0 or self.steps[name] == total:
                    self.save()
                    log(f"{name} {self.steps[name]}/{total} L1 {sum(losses) / len(losses):.4f} "
                        f"({(time.time() - started) / len(losses):.2f} s/step)")
                    started, losses = time.time(), []
        if not any(v in self.unets for v in VARIANTS):
            self.branch()


def trainable_count(run: Run, name: str) -> int:
    module = run.kcns[name] if name in run.kcns else run.unets[name]
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def evaluate(run: Run, args) -> dict:
    """Each held-out image, one seeded trajectory per image through ``--eval-levels`` frame counts."""
    source = datasets.SharpFolder(args.eval)
    sampler = KernelTrajectorySampler(source, args.crop, 1, 0, points=len(args.eval_levels),
                                      kernel_size=run.estimator.kernel_size, counts=tuple(args.eval_levels))
    images = sampler.images[:args.max_eval] if args.max_eval else sampler.images
    names = [os.path.splitext(os.path.basename(p))[0] for p in source.paths][:len(images)] \
        if hasattr(source, "paths") else [f"image{i}" for i in range(len(images))]
    rows = {}
    estimated_t = []
    for i, image in enumerate(images):
        sampler.images = [image]
        blurry, sharp, t, kernels = sampler.scene()
        t_hat = run.estimated_level(blurry)
        estimated_t += list(zip(t.tolist(), t_hat.tolist()))
        target = metrics.to_8bit(sharp)
        outputs = {"blurry input": blurry * 2 - 1,
                   "autoencoder of the SHARP image (ceiling of any variant)": run.decode(run.encode(sharp)),
                   "(a)=(f) no KCN, t̂ from T": run.predict("a", blurry, t_hat, kernels),
                   "(a) no KCN, true t": run.predict("a", blurry, t, kernels),
                   "(b) KCN ← estimator M's kernels, t̂": run.predict("b", blurry, t_hat, kernels),
                   "(c) KCN ← true kernels, t̂": run.predict("c", blurry, t_hat, kernels),
                   "(d) KCN ← zeros (capacity control), t̂": run.predict("d", blurry, t_hat, kernels),
                   "(e) no KCN, fixed t = 200": run.predict("e", blurry, torch.full_like(t, FIXED_T), kernels)}
        for name, out in outputs.items():
            image8 = metrics.to_8bit(((out + 1) / 2).clamp(0, 1))
            # identical images (a trajectory that rounds to no shift) would make the mean infinite: cap at 60 dB
            p, s = metrics.psnr(image8, target).clamp(max=60.0), metrics.ssim(image8, target)
            rows.setdefault(name, []).extend(
                {"image": names[i], "frames": n, "psnr": float(p[j]), "ssim": float(s[j])}
                for j, n in enumerate(args.eval_levels))
    keys = list(rows)
    ref = {label: next(k for k in keys if k.startswith(prefix))  # (a) as deployed: at T's t̂
           for label, prefix in (("(a)", "(a)=(f)"), ("(d)", "(d)"), ("(e)", "(e)"))}
    summary = {}
    for name, values in rows.items():
        entry = {"psnr": sum(v["psnr"] for v in values) / len(values),
                 "ssim": sum(v["ssim"] for v in values) / len(values), "samples": len(values), "per_sample": values}
        for label, other in ref.items():
            entry[f"wins_vs_{label}"] = sum(v["psnr"] > o["psnr"] for v, o in zip(values, rows[other]))
        summary[name] = entry
    return {"variants": summary, "images": len(images), "levels": list(args.eval_levels),
            "t_true_vs_estimated": estimated_t}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.steps, args.max_eval, args.checkpoint_every, args.crop = (2, 2, 2), 2, 2, 64
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.makedirs(args.state, exist_ok=True)
    started = time.time()
    run = Run(args)
    if run.load():
        print(f"resumed at {run.steps}", flush=True)
    run.train(lambda line: print(line, flush=True))
    results = evaluate(run, args)
    results |= {"steps": {"AE": run.ae.steps["A"], **run.steps}, "patch": args.patch, "scenes": args.scenes,
                "unet": run.config.to_dict(), "ae_channels": args.ae_channels,
                "trainable": {v: trainable_count(run, v) for v in VARIANTS}, "seconds_this_call": time.time() - started}
    with open(os.path.join(args.state, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    n = results["variants"]["blurry input"]["samples"]
    print(f"\nheld-out {args.eval}: {results['images']} images × frame counts {args.eval_levels} = {n} samples, "
          f"{args.crop}² crops, seed 0; PSNR dB / SSIM (8-bit); wins = samples with higher PSNR\n")
    print("| variant | PSNR / SSIM | wins vs (a) | wins vs (d) | wins vs (e) |\n|---|---|---|---|---|")
    for name, r in results["variants"].items():
        print(f"| {name} | {r['psnr']:.2f} / {r['ssim']:.4f} | {r['wins_vs_(a)']}/{n} | {r['wins_vs_(d)']}/{n} "
              f"| {r['wins_vs_(e)']}/{n} |")
    print(f"\ntrainable parameters per variant: {results['trainable']}; steps {results['steps']}")
    err = [abs(a - b) for a, b in results["t_true_vs_estimated"]]
    print(f"T's level error on the eval samples: mean |t̂ − t| = {sum(err) / len(err):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
