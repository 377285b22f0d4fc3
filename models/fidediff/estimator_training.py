"""Training M (reblur loss) and T (time loss) on synthetic blur, resumable, in the pack's style.

Data (:class:`EstimatorSampler`, one seeded generator, so a restored state reproduces the stream):

* **frame averaging with known n** (GoPro's construction): a sharp crop moves along a random camera-shake
  path at ``speed`` px per frame; the ``n`` frames (integer offsets, odd ``n``) are averaged by
  :func:`..blur.frames.average_frames`, the middle frame is the sharp target and the level is
  ``t = 20·(n − 1)``;
* **camera shake** from the blur lab (:func:`..blur.synthesis.draw_kernels`), whose level is unknown, so it
  trains M only.

Blur is made on the stored values (``gamma = 1``), where reblurring with the true kernel reproduces the
blurry image exactly. Each sharp crop keeps a margin of ``m // 2`` so the reblur loss never sees padding.

Stage 1 trains M on ``L1(reblur(sharp, M(blurry)), blurry)`` plus, since the synthetic kernel is known, a
small kernel term (:func:`kernel_loss`, ``kernel_weight``; 0 gives the paper's reblur-only loss), and alongside T on M's detached output
(``L1(T(kernel grid), t)`` on every cell, for the samples with a known level); stage 2 trains T alone with
M frozen, so T ends fitted to the final M. AdamW, cosine learning rate, gradient clipping. The loop is the
shared :class:`~..common.training_loop.TrainingLoop` on accelerate (mixed precision, ``accelerate launch``
for several processes, resumable bit for bit from ``checkpoint.safetensors`` + ``training_state.pt``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..blur.datasets import PatchSampler, SharpFolder, augment
from ..blur.frames import average_frames, blur_level
from ..blur.synthesis import BlurSettings, degrade, draw_kernels
from ..blur.convolve import grid_weights
from ..blur.trajectory import shake_trajectory
from ..common.training_loop import TrainingLoop, append_log_row, read_training_state, save_run_files
from .estimator import LEVEL_MAX, BlurLevelRegressor, EstimatorConfig, KernelEstimate, KernelEstimator, RegressorConfig, level_grid
from .estimator_model import BlurEstimator, load_blur_estimator, save_blur_estimator

CHECKPOINT = "checkpoint.safetensors"
STATE = "training_state.pt"
LOG = "loss_log.csv"
LOG_FIELDS = ("stage", "iteration", "lr", "l_reblur", "l_kernel", "level_mae", "seconds")


# -- data -------------------------------------------------------------------------------------------

@dataclass
class DataConfig:
    kernel_size: int = 19
    patch: int = 64  # multiple of 8 (T's grid)
    batch: int = 8
    frames: tuple[int, int] = (1, 21)  # odd n drawn uniformly in the range: levels 0..400
    speed: tuple[float, float] = (0.4, 0.9)  # px per frame; (n - 1) / 2 · speed must stay within m // 2
    frame_share: float = 0.6  # the rest is blur-lab camera shake
    intensity: tuple[float, float] = (0.0, 1.0)  # camera shake extent (fraction of the kernel)
    varying_share: float = 0.3  # camera shake samples with a 2 x 2 grid of kernels (spatially varying)
    noise: tuple[float, float] = (0.0, 0.01)
    scale: tuple[float, float] = (0.5, 1.0)  # random zoom of the source images


class EstimatorSampler(PatchSampler):
    """Batches ``(blurry [B,3,P,P], sharp [B,3,P+2c,P+2c], level [B], known [B])`` (c = m // 2)."""

    def __init__(self, source: SharpFolder, config: DataConfig, seed: int):
        c = config
        if c.patch % 8:
            raise ValueError(f"patch must be a multiple of 8, got {c.patch}")
        if (c.frames[1] - 1) / 2 * c.speed[1] > c.kernel_size // 2:
            raise ValueError(f"{c.frames[1]} frames at {c.speed[1]} px/frame leave a {c.kernel_size}-pixel kernel")
        self.config = c
        self.shake = BlurSettings(kind="camera_shake", kernel_size=c.kernel_size, intensity=c.intensity, gamma=1.0)
        self.varying = BlurSettings(kind="camera_shake", kernel_size=c.kernel_size, intensity=c.intensity, gamma=1.0, grid=2)
        super().__init__(source, c.patch + 4 * (c.kernel_size // 2), c.batch, seed, scale=c.scale, settings=self.shake)

    def _noisy(self, blurry: torch.Tensor) -> torch.Tensor:
        sigma = self._uniform(*self.config.noise)
        return (blurry + sigma * torch.randn(blurry.shape, generator=self.generator)).clamp(0, 1)

    def frame_offsets(self, frames: int, speed: float) -> torch.Tensor:
        """``[n, 2]`` integer ``(dy, dx)`` of each frame relative to the middle one, along a shake path
        scaled so the farthest frame is ``(n − 1) / 2 · speed`` px from the middle one: the extent grows
        with n, as for a camera moving through the exposure (scaling the path's length instead lets a
        jittery path that retraces itself collapse to a dot at any n, and n could not be read off the blur)."""
        path, _ = shake_trajectory(self.generator)
        if frames == 1:
            return torch.zeros(1, 2, dtype=torch.long)
        index = torch.linspace(0, len(path) - 1, frames).round().long()
        points = path[index] - path[index[frames // 2]]
        reach = float(points.norm(dim=1).max())
        offsets = (points * ((frames - 1) / 2 * speed / max(reach, 1e-9))).round().long()
        limit = self.config.kernel_size // 2
        return offsets.flip(-1).clamp(-limit, limit)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
        c = self.config
        m = c.kernel_size // 2
        image = self.images[self._randint(len(self.images))]
        big = augment([self._crop(image, c.patch + 4 * m)[0]], self._randint(8))[0]  # margin for motion + reblur
        sharp = big[:, m:m + c.patch + 2 * m, m:m + c.patch + 2 * m]
        inner = (slice(None), slice(2 * m, 2 * m + c.patch), slice(2 * m, 2 * m + c.patch))
        if float(torch.rand((), generator=self.generator)) < c.frame_share:
            low, high = (c.frames[0] + 1) // 2, (c.frames[1] + 1) // 2
            n = 2 * (low + self._randint(high - low + 1)) - 1
            offsets = self.frame_offsets(n, self._uniform(*c.speed))
            frames = torch.stack([big[:, 2 * m + dy:2 * m + dy + c.patch, 2 * m + dx:2 * m + dx + c.patch]
                                  for dy, dx in offsets.tolist()])
            blurry = average_frames(frames, gamma=1.0).blurry
            truth = frames_kernel(offsets, c.kernel_size).flatten()[:, None, None].expand(-1, *level_grid(c.patch, c.patch))
            return self._noisy(blurry), sharp, float(blur_level(n)), True, truth
        settings = self.varying if float(torch.rand((), generator=self.generator)) < c.varying_share else self.shake
        kernel = draw_kernels(1, settings, self.generator)
        blurry = degrade(big[None], kernel, settings, self.generator)[0][inner]
        return self._noisy(blurry), sharp, float("nan"), False, self._true_grid(kernel["kernels"][0], big.shape[-1])

    def _true_grid(self, kernels: torch.Tensor, size: int) -> torch.Tensor:
        """The blur lab's ``[gh, gw, m, m]`` kernels as the patch's stride-8 kernel grid ``[m², h, w]``."""
        c = self.config
        gh, gw, m = kernels.shape[0], kernels.shape[1], kernels.shape[-1]
        margin = 2 * (m // 2)
        weights = grid_weights((gh, gw), size, size)[:, margin:margin + c.patch, margin:margin + c.patch]
        pooled = F.adaptive_avg_pool2d(weights[None], level_grid(c.patch, c.patch))[0]  # [gh·gw, h, w]
        return torch.einsum("rk,rhw->khw", kernels.reshape(gh * gw, m * m), pooled)

    def next_batch(self):
        """``(blurry, sharp with margin, level [B], known [B], true kernel grid [B, m², P/8, P/8])``."""
        samples = [self.sample() for _ in range(self.batch)]
        blurry, sharp, level, known, truth = zip(*samples)
        return (torch.stack(blurry), torch.stack(sharp), torch.tensor(level, dtype=torch.float32),
                torch.tensor(known, dtype=torch.bool), torch.stack(truth))


def frames_kernel(offsets: torch.Tensor, size: int) -> torch.Tensor:
    """The ``[m, m]`` kernel (convolution orientation) of averaging frames displaced by ``offsets [n, 2]``:
    frame ``i`` shows ``sharp(p + d_i)``, i.e. tap ``c − d_i``."""
    kernel = torch.zeros(size, size)
    c = size // 2
    for dy, dx in offsets.tolist():
        kernel[c - dy, c - dx] += 1.0 / len(offsets)
    return kernel


# -- losses -----------------------------------------------------------------------------------------

def reblur_loss(estimate: KernelEstimate, blurry: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    """``L1(reblur(sharp, M(blurry)), blurry)``; ``sharp`` may carry an ``m // 2`` margin."""
    return F.l1_loss(estimate.reblur(sharp.float()), blurry.float())


def kernel_loss(estimate: KernelEstimate, truth: torch.Tensor) -> torch.Tensor:
    """Where the synthetic kernel is known: the squared distance between the estimated and the true
    kernel grid (stride 8), summed over the taps, averaged over the cells. Squared, not absolute: the
    best guess of an undecided M is then the mean kernel, not the identity (see docs/fidediff_estimator.md)."""
    return (estimate.kernel_map(tuple(truth.shape[-2:])) - truth.to(estimate.weights)).square().sum(1).mean()


def time_loss(level_map: torch.Tensor, level: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of every cell of T's map against the true level, in level units, over the
    samples whose level is known (zero when none is)."""
    if not bool(known.any()):
        return level_map.sum() * 0
    errors = (level_map[known].float() - level[known].to(level_map)[:, None, None, None]).abs()
    return errors.mean()


# -- the trainer ------------------------------------------------------------------------------------

@dataclass
class EstimatorTrainConfig:
    iterations: tuple[int, int] = (6000, 1000)  # stage 1 (M, and T alongside), stage 2 (T alone)
    lr: float = 5e-4
    level_lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    kernel_weight: float = 1.0  # weight of kernel_loss next to the reblur loss (0: reblur only, as the paper)
    seed: int = 19
    checkpoint_every: int = 200
    log_every: int = 20
    extra: dict = field(default_factory=dict)

    def learning_rate(self, base: float, stage: int, iteration: int) -> float:
        """Cosine from ``base`` to ``min_lr`` over the stage."""
        total = max(self.iterations[stage - 1], 1)
        return self.min_lr + 0.5 * (base - self.min_lr) * (1 + math.cos(math.pi * min(iteration / total, 1.0)))


def build_estimator(estimator: EstimatorConfig | None = None, regressor: RegressorConfig | None = None) -> BlurEstimator:
    estimator = estimator or EstimatorConfig()
    regressor = regressor or RegressorConfig(kernel_size=estimator.kernel_size)
    return BlurEstimator(KernelEstimator(estimator), BlurLevelRegressor(regressor))


class StageLoss(torch.nn.Module):
    """One stage's losses as one module (accelerate's DDP wrapper per stage averages the gradients of
    the parts that stage trains; stage 2 runs M without gradients)."""

    def __init__(self, model: BlurEstimator, stage: int):
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, blurry, sharp, level, known, truth) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(self.stage == 1 and torch.is_grad_enabled()):
            estimate = self.model.estimator(blurry)
            l_reblur = reblur_loss(estimate, blurry, sharp)
            l_kernel = kernel_loss(estimate, truth)
        grid = estimate.detach().kernel_map(level_grid(*blurry.shape[-2:]))
        return {"l_reblur": l_reblur, "l_kernel": l_kernel, "level_mae": time_loss(self.model.regressor(grid), level, known)}


class EstimatorTrainer(TrainingLoop):
    """Runs both stages on ``sampler`` through the shared :class:`TrainingLoop` (accelerate: ``device``,
    ``mixed_precision``, several processes); ``run_dir`` holds the checkpoint pair and the loss log.

    With several processes each process's time loss (a mean over its known-level samples) is weighted
    by its share of the global batch's known levels, so DDP's average of them is the global batch's mean."""

    def __init__(self, model: BlurEstimator, sampler: EstimatorSampler, config: EstimatorTrainConfig, run_dir: str,
                 device: torch.device | str = "cpu", metadata: dict | None = None, mixed_precision: str = "no"):
        super().__init__(run_dir, sampler, mixed_precision, str(device))
        self.model = model.to(self.accelerator.device)
        self.config = config
        self.checkpoint_every, self.log_every = config.checkpoint_every, config.log_every
        self.metadata = metadata or {}
        torch.manual_seed(config.seed)
        self.enter_stage(1)
        os.makedirs(run_dir, exist_ok=True)

    def enter_stage(self, stage: int, iteration: int = 0) -> None:
        c = self.config
        self.stage, self.step_index, self.steps = stage, iteration, c.iterations[stage - 1]
        self.model.estimator.requires_grad_(stage == 1)
        self.model.regressor.requires_grad_(True)
        groups = [{"params": list(self.model.regressor.parameters()), "base_lr": c.level_lr}]
        if stage == 1:
            groups.insert(0, {"params": list(self.model.estimator.parameters()), "base_lr": c.lr})
        self.params = [p for group in groups for p in group["params"]]
        optimizer = torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
        self.losses, self.optimizer = self.prepare(StageLoss(self.model, stage), optimizer)
        self.optimizers = {"g": self.optimizer}

    def next_stage(self) -> bool:
        if self.stage == 2:
            return False
        self.enter_stage(2)
        return True

    def is_last_stage(self) -> bool:
        return self.stage == 2

    @property
    def iteration(self) -> int:
        return self.step_index

    @property
    def done(self) -> bool:
        return self.finished

    def step(self) -> dict[str, float]:
        c = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = c.learning_rate(group["base_lr"], self.stage, self.step_index)
        device = self.accelerator.device
        blurry, sharp, level, known, truth = (x.to(device) for x in self.sampler.next_batch())
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.losses(blurry, sharp, level, known, truth)
        world = self.accelerator.num_processes
        if world > 1:  # weight each process's mean by its share of the known levels: DDP's average is then the global mean
            local = known.sum().float()
            losses["level_mae"] = losses["level_mae"] * (local * world / self.accelerator.reduce(local.clone(), "sum").clamp(min=1))
        total = losses["level_mae"] / LEVEL_MAX
        if self.stage == 1:
            total = total + losses["l_reblur"] + c.kernel_weight * losses["l_kernel"]
        self.accelerator.backward(total)
        self.accelerator.clip_grad_norm_(self.params, c.grad_clip)
        self.optimizer.step()
        return {"lr": self.optimizer.param_groups[0]["lr"], **{k: float(v.detach()) for k, v in losses.items()}}

    def log(self, means: dict[str, float], seconds: float, extra: dict) -> None:
        append_log_row(os.path.join(self.run_dir, LOG), LOG_FIELDS, {"stage": self.stage, "iteration": self.step_index, "lr": f"{means['lr']:.6g}",
                             "l_reblur": f"{means['l_reblur']:.6g}", "l_kernel": f"{means['l_kernel']:.4g}", "level_mae": f"{means['level_mae']:.4g}",
                             "seconds": f"{self.elapsed:.1f}"})

    def _info(self) -> dict[str, str]:
        return {"training": json.dumps({"stage": self.stage, "iteration": self.step_index, "seconds": round(self.elapsed, 1),
                                        "config": asdict(self.config), "processes": self.accelerator.num_processes,
                                        **self.metadata}, default=str)}

    def save(self) -> None:
        """Write the model and the training state; the pair is replaced atomically (the state keeps
        the keys of the runs before accelerate, so older run folders resume)."""
        model_path, state_path = os.path.join(self.run_dir, CHECKPOINT), os.path.join(self.run_dir, STATE)
        loop = self.loop_state()
        state = {"stage": self.stage, "iteration": self.step_index, "elapsed": self.elapsed,
                 "optimizer": loop["optimizers"]["g"], "data": loop["sampler"],
                 "torch_rng": loop["torch_rng"], "config": json.dumps(asdict(self.config))}
        if "scaler" in loop:
            state["scaler"] = loop["scaler"]
        info = self._info()
        save_run_files(model_path, lambda path: save_blur_estimator(self.model, path, info), state_path, state)

    def load(self) -> None:
        """Continue from the run folder's checkpoint (weights, stage, optimiser, data stream)."""
        model_path, state_path = os.path.join(self.run_dir, CHECKPOINT), os.path.join(self.run_dir, STATE)
        state = read_training_state(state_path)
        loaded = load_blur_estimator(model_path)
        with torch.no_grad():
            self.model.estimator.load_state_dict(loaded.estimator.state_dict())
            self.model.regressor.load_state_dict(loaded.regressor.state_dict())
        self.enter_stage(int(state["stage"]), int(state["iteration"]))
        self.load_loop_state({"optimizers": {"g": state["optimizer"]}, "sampler": state["data"], "torch_rng": state["torch_rng"],
                              "elapsed": state["elapsed"], **({"scaler": state["scaler"]} if "scaler" in state else {})})

    def export(self, path: str, extra: dict[str, str] | None = None) -> None:
        if self.is_main:
            save_blur_estimator(self.model, path, {**self._info(), **(extra or {})})
        self.accelerator.wait_for_everyone()


def train_estimator(sharp_dir: str, run_dir: str, iterations: tuple[int, int], resume: bool = False,
                    data: DataConfig | None = None, config: EstimatorTrainConfig | None = None,
                    estimator: EstimatorConfig | None = None, regressor: RegressorConfig | None = None,
                    device: str = "cpu", output: str | None = None) -> BlurEstimator:
    """The simple entry point (FideDiff's ``--stage kernel``): train on sharp images, write ``output``."""
    config = config or EstimatorTrainConfig()
    config.iterations = tuple(iterations)
    data = data or DataConfig()
    if estimator is not None:
        data.kernel_size = estimator.kernel_size
    model = build_estimator(estimator or EstimatorConfig(kernel_size=data.kernel_size), regressor)
    sampler = EstimatorSampler(SharpFolder(sharp_dir), data, config.seed)
    trainer = EstimatorTrainer(model, sampler, config, run_dir, device, metadata={"data": asdict(data), "source": sharp_dir})
    if resume:
        trainer.load()
    trainer.run()
    trainer.export(output or os.path.join(run_dir, "model.safetensors"))
    return trainer.model
