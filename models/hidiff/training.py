"""Training HI-Diff as the paper and the official code do, in two stages.

Stage one: the latent encoder ``net_le`` sees the sharp and the blurry image (6 channels) and its
prior guides the transformer ``net_g``; both learn from the pixel L1 loss.

Stage two: ``net_le`` is frozen and provides the target prior ``z``. The blurry-only encoder
``net_le_dm`` conditions the denoiser ``net_d``, which runs the whole reverse chain from ``z`` noised
to the last step (:meth:`PriorSampler.q_sample`, with the official schedules' quirks) with gradients;
``net_le_dm``, ``net_d`` and ``net_g`` learn jointly from ``L1(ẑ, z) + L1(net_g(blurry, ẑ), sharp)``.

Optimiser and schedule follow the official configs: AdamW (2e-4, weight decay 1e-4, betas 0.9/0.999),
the gradient norm clipped to 0.01, the learning rate constant for the first third of a stage and
cosine-annealed to 1e-6 over the rest (their 100k + 200k of 300k). Progressive patch sizes are not
reproduced; one patch size is used throughout.

A run is resumable: ``checkpoint.safetensors`` (the pack's model format, ``net_le`` included) plus
``training_state.pt`` (stage, iteration, optimiser, random generators) are written together.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..common.checkpoint import CheckpointError
from ..common.training_loop import append_log_row, read_training_state, save_run_files
from .denoiser import MixerDenoiser, SimpleDenoiser
from .diffusion import SamplerConfig
from .latent_encoder import LatentEncoder, LatentEncoderConfig
from .loader import load_hidiff, save_hidiff
from .model import HIDiff
from .transformer import Transformer, TransformerConfig

CHECKPOINT = "checkpoint.safetensors"
STATE = "training_state.pt"
LOG = "loss_log.csv"
LOG_FIELDS = ("stage", "iteration", "lr", "l_pix", "l_prior", "l_total", "val_psnr", "seconds")


@dataclass
class ModelSize:
    """Constructor arguments of the official networks (defaults: the GoPro release)."""
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (3, 5, 6, 6)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    embed_dim: int = 64
    group: int = 4
    le_blocks: int = 6
    denoiser: str = "mixer"  # 'mixer' + local sampler (GoPro) or 'simple' + ldm sampler (RealBlur)
    denoiser_inner: int = 512  # mixer only
    denoiser_blocks: int = 4  # mixer: block_num; simple: n_denoise_res
    timesteps: int = 8
    le_activation: str = ""  # 'gelu' or 'lrelu'; empty: the official pairing (mixer + gelu, simple + lrelu)


PRESETS = {
    "gopro": ModelSize(),
    # the shipped default (2.0 M parameters + 0.09 M net_le, 8.4 MB), trainable on a CPU in about an hour.
    # The RealBlur-style denoiser (x0 prediction, no clipping) learns in far fewer steps than the GoPro
    # one, whose eps prediction is clipped to ±1 at nearly every element early in training.
    "compact": ModelSize(dim=16, num_blocks=(2, 2, 3, 3), num_refinement_blocks=2, heads=(1, 2, 4, 8),
                         embed_dim=32, le_blocks=2, denoiser="simple", denoiser_blocks=4, timesteps=8,
                         le_activation="gelu"),
    "tiny": ModelSize(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4),
                      embed_dim=8, le_blocks=1, denoiser_inner=16),
}


def build_model(size: ModelSize) -> HIDiff:
    """A freshly initialised HI-Diff with its stage-one encoder (PyTorch default initialisation)."""
    net_g = Transformer(TransformerConfig.standard(
        dim=size.dim, num_blocks=tuple(size.num_blocks), num_refinement_blocks=size.num_refinement_blocks,
        heads=tuple(size.heads), ffn_expansion_factor=size.ffn_expansion_factor, embed_dim=size.embed_dim,
        group=size.group))
    activation = size.le_activation or ("gelu" if size.denoiser == "mixer" else "lrelu")
    le = lambda channels: LatentEncoder(LatentEncoderConfig.standard(
        in_channels=channels, embed_dim=size.embed_dim, block_num=size.le_blocks, group=size.group, activation=activation))
    prior = 4 * size.embed_dim
    if size.denoiser == "mixer":
        net_d = MixerDenoiser.standard(channels=prior, inner=size.denoiser_inner, block_num=size.denoiser_blocks, group=size.group)
        sampler = SamplerConfig.local(size.timesteps)
    elif size.denoiser == "simple":
        net_d, sampler = SimpleDenoiser(prior, size.denoiser_blocks), SamplerConfig.ldm(size.timesteps)
    else:
        raise ValueError(f"unknown denoiser {size.denoiser!r}; use 'mixer' or 'simple'")
    return HIDiff(net_g, le(3), net_d, sampler, net_le=le(6))


@dataclass
class TrainConfig:
    iterations: tuple[int, int] = (300_000, 300_000)  # stage one, stage two
    lr: float = 2e-4
    min_lr: float = 1e-6
    constant_fraction: float = 1 / 3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.01
    amp: str = "off"  # 'off', 'fp16' (CUDA, with loss scaling) or 'bf16'
    seed: int = 100
    checkpoint_every: int = 500
    log_every: int = 10
    val_every: int = 0  # 0 = no validation during training
    extra: dict = field(default_factory=dict)

    def learning_rate(self, stage: int, iteration: int) -> float:
        """Constant, then cosine to ``min_lr`` (the official cyclic schedule, scaled to the length)."""
        total = self.iterations[stage - 1]
        flat = int(total * self.constant_fraction)
        if iteration < flat or total <= flat:
            return self.lr
        progress = (iteration - flat) / max(total - flat, 1)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def stage_modules(model: HIDiff, stage: int) -> list[torch.nn.Module]:
    return [model.net_le, model.net_g] if stage == 1 else [model.net_g, model.net_le_dm, model.net_d]


def stage_one_loss(model: HIDiff, blurry: torch.Tensor, sharp: torch.Tensor) -> dict[str, torch.Tensor]:
    prior = model.net_le(blurry, sharp)
    output = model.net_g(blurry.contiguous(memory_format=torch.channels_last), prior)
    l_pix = F.l1_loss(output.float(), sharp)
    return {"l_pix": l_pix, "l_total": l_pix}


def stage_two_loss(model: HIDiff, blurry: torch.Tensor, sharp: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        target = model.net_le(blurry, sharp)
    condition = model.net_le_dm(blurry)
    sampler = model.sampler
    prior = sampler.q_sample(target, noise.to(target))
    for t in reversed(range(sampler.config.timesteps)):
        prior = sampler.step(model.net_d, prior, condition, t)
    output = model.net_g(blurry.contiguous(memory_format=torch.channels_last), prior)
    l_pix = F.l1_loss(output.float(), sharp)
    l_prior = F.l1_loss(prior.float(), target.float())
    return {"l_pix": l_pix, "l_prior": l_prior, "l_total": l_pix + l_prior}


class Trainer:
    """Runs both stages on batches from ``next_batch()``; ``run_dir`` holds checkpoints and the log."""

    def __init__(self, model: HIDiff, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]], config: TrainConfig,
                 run_dir: str, device: torch.device | str = "cpu", data_state: tuple[Callable, Callable] | None = None,
                 validate: Callable[[HIDiff, int], float] | None = None, metadata: dict | None = None):
        if model.net_le is None:
            raise ValueError("training needs the stage-one encoder net_le (build the model with build_model)")
        self.model = model.to(device)
        self.next_batch = next_batch
        self.config = config
        self.run_dir = run_dir
        self.device = torch.device(device)
        self.data_state = data_state  # (get_state, set_state) of the data stream, saved with checkpoints
        self.validate = validate
        self.metadata = metadata or {}
        self.stage, self.iteration, self.elapsed = 1, 0, 0.0
        self.noise = torch.Generator().manual_seed(config.seed + 2)
        self.optimizer = self._optimizer()
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 mixed precision needs CUDA; use --amp bf16 or off on the CPU")
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        os.makedirs(run_dir, exist_ok=True)

    # -- set-up ---------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        for part in (self.model.net_g, self.model.net_le, self.model.net_le_dm, self.model.net_d):
            part.requires_grad_(False)
        params = []
        for module in stage_modules(self.model, self.stage):
            module.requires_grad_(True)
            params += list(module.parameters())
        c = self.config
        return torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)

    @property
    def done(self) -> bool:
        return self.stage > 2 or (self.stage == 2 and self.iteration >= self.config.iterations[1])

    # -- one step -------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        c = self.config
        lr = c.learning_rate(self.stage, self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        blurry, sharp = (x.to(self.device, non_blocking=True) for x in self.next_batch())
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(self.device.type, dtype=torch.float16 if c.amp == "fp16" else torch.bfloat16,
                                  enabled=c.amp != "off")
        with autocast:
            if self.stage == 1:
                losses = stage_one_loss(self.model, blurry, sharp)
            else:
                shape = (blurry.shape[0], *self.model.prior_shape)
                losses = stage_two_loss(self.model, blurry, sharp, torch.randn(shape, generator=self.noise))
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.scaler:
            self.scaler.scale(losses["l_total"]).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            losses["l_total"].backward()
            torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
            self.optimizer.step()
        self.iteration += 1
        return {"lr": lr, **{k: float(v.detach()) for k, v in losses.items()}}

    # -- the loop -------------------------------------------------------------------------------
    def run(self, progress: Callable[[int, dict], None] | None = None, stop_after: int | None = None) -> None:
        """Train until both stages are done (or ``stop_after`` more steps), checkpointing as configured."""
        c = self.config
        steps = 0
        sums, count = {}, 0
        while not self.done and (stop_after is None or steps < stop_after):
            if self.iteration >= c.iterations[self.stage - 1]:
                self._next_stage()
                continue
            started = time.perf_counter()
            losses = self.step()
            self.elapsed += time.perf_counter() - started
            steps += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            val = None
            if self.validate and c.val_every and self.iteration % c.val_every == 0:
                val = self.validate(self.model, self.stage)
            if self.iteration % c.log_every == 0 or val is not None or self.iteration == c.iterations[self.stage - 1]:
                self._log({k: v / count for k, v in sums.items()}, val)
                sums, count = {}, 0
            if progress:
                progress(self.stage, losses)
            if self.iteration % c.checkpoint_every == 0 or self.iteration == c.iterations[self.stage - 1]:
                self.save()
        if self.done:
            self.stage, self.iteration = 2, c.iterations[1]

    def _next_stage(self) -> None:
        if self.stage == 2:
            self.stage = 3
            return
        self.stage, self.iteration = 2, 0
        self.optimizer = self._optimizer()
        self.save()

    def _log(self, means: dict[str, float], val: float | None) -> None:
        row = {"stage": self.stage, "iteration": self.iteration, "seconds": f"{self.elapsed:.1f}",
               "val_psnr": "" if val is None else f"{val:.3f}"}
        for key in ("lr", "l_pix", "l_prior", "l_total"):
            row[key] = f"{means[key]:.6g}" if key in means else ""
        append_log_row(os.path.join(self.run_dir, LOG), LOG_FIELDS, row)

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self) -> None:
        """Write the model (pack format) and the training state; the pair is replaced atomically."""
        model_path, state_path = os.path.join(self.run_dir, CHECKPOINT), os.path.join(self.run_dir, STATE)
        info = {"training": json.dumps({"stage": self.stage, "iteration": self.iteration, "seconds": round(self.elapsed, 1),
                                        "config": asdict(self.config), **self.metadata}, default=str)}
        state = {"stage": self.stage, "iteration": self.iteration, "elapsed": self.elapsed,
                 "optimizer": self.optimizer.state_dict(), "noise": self.noise.get_state(),
                 "torch_rng": torch.get_rng_state(), "config": json.dumps(asdict(self.config))}
        if self.data_state:
            state["data"] = self.data_state[0]()
        if self.scaler:
            state["scaler"] = self.scaler.state_dict()
        save_run_files(model_path, lambda path: save_hidiff(self.model, path, source="trained with tools/train_hidiff.py",
                                                            extra=info), state_path, state)

    def load(self) -> None:
        """Continue from the run folder's checkpoint (model weights, stage, optimiser, generators)."""
        model_path, state_path = os.path.join(self.run_dir, CHECKPOINT), os.path.join(self.run_dir, STATE)
        state = read_training_state(state_path)
        loaded = load_hidiff(model_path)
        if loaded.net_le is None:
            raise CheckpointError(model_path, "has no net_le; it is not a training checkpoint")
        for part in ("net_g", "net_le_dm", "net_d", "net_le"):
            getattr(self.model, part).load_state_dict(getattr(loaded, part).state_dict())
        self.stage, self.iteration, self.elapsed = int(state["stage"]), int(state["iteration"]), float(state["elapsed"])
        self.optimizer = self._optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.noise.set_state(state["noise"])
        torch.set_rng_state(state["torch_rng"])
        if self.data_state and "data" in state:
            self.data_state[1](state["data"])
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def export(self, path: str, extra: dict | None = None) -> None:
        """Write the trained model in the pack's format (with ``net_le``, so training can continue)."""
        info = {"training": json.dumps({"stage": self.stage, "iteration": self.iteration, "seconds": round(self.elapsed, 1),
                                        "config": asdict(self.config), **self.metadata}, default=str), **(extra or {})}
        save_hidiff(self.model, path, source="trained with tools/train_hidiff.py", extra=info)
