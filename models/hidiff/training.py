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

The loop is the shared :class:`~..common.training_loop.TrainingLoop` on accelerate: mixed precision,
several GPUs or machines (``accelerate launch tools/train_hidiff.py ...``; W processes of batch B draw
the samples one process of batch W·B would). A run is resumable bit for bit: ``checkpoint.safetensors``
(the pack's model format, ``net_le`` included) plus ``training_state.pt`` (stage, iteration, optimiser,
random generators; the same keys as before accelerate, so older run folders resume) are written together.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..common.checkpoint import CheckpointError
from ..common.training_loop import TrainingLoop, append_log_row, read_training_state, save_run_files
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
AMP = {"off": "no", "fp16": "fp16", "bf16": "bf16"}  # --amp → accelerate's mixed precision


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
    amp: str = "off"  # 'off', 'fp16' (CUDA, accelerate's loss scaling) or 'bf16' (accelerate's autocast)
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


class StageLoss(torch.nn.Module):
    """One stage's losses as one module, so accelerate's DDP wrapper averages the gradients of exactly
    that stage's trainable parts (a new wrapper per stage) and its autocast covers the forward pass."""

    def __init__(self, model: HIDiff, stage: int):
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, blurry: torch.Tensor, sharp: torch.Tensor, noise: torch.Tensor | None = None):
        if self.stage == 1:
            return stage_one_loss(self.model, blurry, sharp)
        return stage_two_loss(self.model, blurry, sharp, noise)


class Trainer(TrainingLoop):
    """Runs both stages on ``sampler`` (``next_batch() -> (blurry, sharp)``, ``state``/``set_state``,
    ``batch``) through the shared :class:`TrainingLoop` (accelerate: ``device``, ``config.amp``, several
    processes); ``run_dir`` holds the checkpoint pair and the log."""

    def __init__(self, model: HIDiff, sampler, config: TrainConfig, run_dir: str, device: torch.device | str = "cpu",
                 validate: Callable[[HIDiff, int], float] | None = None, metadata: dict | None = None):
        if model.net_le is None:
            raise ValueError("training needs the stage-one encoder net_le (build the model with build_model)")
        if config.amp not in AMP:
            raise ValueError(f"amp must be one of {tuple(AMP)}, got {config.amp!r}")
        super().__init__(run_dir, sampler, AMP[config.amp], str(device))
        self.model = model.to(self.accelerator.device)
        self.config = config
        self.checkpoint_every, self.log_every = config.checkpoint_every, config.log_every
        self.validate = validate
        self.metadata = metadata or {}
        self.noise = torch.Generator().manual_seed(config.seed + 2)
        self.enter_stage(1)
        os.makedirs(run_dir, exist_ok=True)

    # -- set-up ---------------------------------------------------------------------------------
    def enter_stage(self, stage: int, iteration: int = 0) -> None:
        """Freeze all but the stage's modules, a fresh AdamW, a DDP/autocast wrapper for the stage."""
        self.stage, self.step_index, self.steps = stage, iteration, self.config.iterations[stage - 1]
        for part in (self.model.net_g, self.model.net_le, self.model.net_le_dm, self.model.net_d):
            part.requires_grad_(False)
        params = []
        for module in stage_modules(self.model, stage):
            module.requires_grad_(True)
            params += list(module.parameters())
        c = self.config
        self.params = params
        optimizer = torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
        self.losses, self.optimizer = self.prepare(StageLoss(self.model, stage), optimizer)
        self.optimizers = {"g": self.optimizer}

    def next_stage(self) -> bool:
        if self.stage == 2:
            return False
        self.enter_stage(2)
        self.checkpoint()
        return True

    def is_last_stage(self) -> bool:
        return self.stage == 2

    @property
    def iteration(self) -> int:
        return self.step_index

    @property
    def done(self) -> bool:
        return self.finished

    # -- one step -------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        c = self.config
        lr = c.learning_rate(self.stage, self.step_index)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        device = self.accelerator.device
        blurry, sharp = (x.to(device, non_blocking=True) for x in self.sampler.next_batch())
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        noise = None
        if self.stage == 2:  # drawn for the global batch, so W processes match one (see TrainingLoop)
            shape = (blurry.shape[0] * self.accelerator.num_processes, *self.model.prior_shape)
            noise = self.local_part(torch.randn(shape, generator=self.noise)).to(device)
        losses = self.losses(blurry, sharp, noise)
        self.accelerator.backward(losses["l_total"])
        self.accelerator.clip_grad_norm_(self.params, c.grad_clip)
        self.optimizer.step()
        return {"lr": lr, **{k: float(v.detach()) for k, v in losses.items()}}

    def validation(self) -> dict | None:
        c = self.config
        if not (self.validate and c.val_every and self.step_index % c.val_every == 0):
            return None
        return {"val_psnr": f"{self.validate(self.model, self.stage):.3f}"}

    def log(self, means: dict[str, float], seconds: float, extra: dict) -> None:
        row = {"stage": self.stage, "iteration": self.step_index, "seconds": f"{self.elapsed:.1f}",
               "val_psnr": extra.get("val_psnr", "")}
        for key in ("lr", "l_pix", "l_prior", "l_total"):
            row[key] = f"{means[key]:.6g}" if key in means else ""
        append_log_row(os.path.join(self.run_dir, LOG), LOG_FIELDS, row)

    # -- checkpoints ----------------------------------------------------------------------------
    def _info(self) -> dict[str, str]:
        return {"training": json.dumps({"stage": self.stage, "iteration": self.step_index, "seconds": round(self.elapsed, 1),
                                        "config": asdict(self.config), "processes": self.accelerator.num_processes,
                                        **self.metadata}, default=str)}

    def save(self) -> None:
        """Write the model (pack format) and the training state; the pair is replaced atomically. The
        state keeps the keys of the runs before accelerate (old run folders resume)."""
        model_path, state_path = os.path.join(self.run_dir, CHECKPOINT), os.path.join(self.run_dir, STATE)
        loop = self.loop_state()
        state = {"stage": self.stage, "iteration": self.step_index, "elapsed": self.elapsed,
                 "optimizer": loop["optimizers"]["g"], "noise": self.noise.get_state(), "torch_rng": loop["torch_rng"],
                 "data": loop["sampler"], "config": json.dumps(asdict(self.config))}
        if "scaler" in loop:
            state["scaler"] = loop["scaler"]
        info = self._info()
        save_run_files(model_path, lambda path: save_hidiff(self.model, path, source="trained with tools/train_hidiff.py",
                                                            extra=info), state_path, state)

    def load(self) -> None:
        """Continue from the run folder's checkpoint (model weights, stage, optimiser, generators)."""
        model_path, state_path = os.path.join(self.run_dir, CHECKPOINT), os.path.join(self.run_dir, STATE)
        state = read_training_state(state_path)
        loaded = load_hidiff(model_path)
        if loaded.net_le is None:
            raise CheckpointError(model_path, "has no net_le; it is not a training checkpoint")
        with torch.no_grad():
            for part in ("net_g", "net_le_dm", "net_d", "net_le"):
                getattr(self.model, part).load_state_dict(getattr(loaded, part).state_dict())
        self.enter_stage(int(state["stage"]), int(state["iteration"]))
        self.noise.set_state(state["noise"])
        self.load_loop_state({"optimizers": {"g": state["optimizer"]}, "sampler": state["data"], "torch_rng": state["torch_rng"],
                              "elapsed": state["elapsed"], **({"scaler": state["scaler"]} if "scaler" in state else {})})

    def export(self, path: str, extra: dict | None = None) -> None:
        """Write the trained model in the pack's format (with ``net_le``, so training can continue)."""
        if self.is_main:
            save_hidiff(self.model, path, source="trained with tools/train_hidiff.py", extra={**self._info(), **(extra or {})})
        self.accelerator.wait_for_everyone()
