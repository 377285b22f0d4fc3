"""Training FideDiff (training only: peft and accelerate are imported here, never at inference).

Stages (notes §5):

* ``base`` — consistency training: each scene gives several points of ONE blur trajectory (the
  averages of n = 1…15 frames along one camera path, all centred on the same sharp frame, t = 20(n−1));
  every point is supervised to that frame: L1 + λ1·EA-X on the decoded image (X = LPIPS when
  installed, else a feature network) + λ2·latent GAN (discriminator from the UNet encoder). LoRA on
  the UNet via peft, plus the learnable text embedding.
* ``kernel`` — M with the reblur loss: the estimator's own trainer (``estimator_training``).
* ``control`` — the Kernel ControlNet (copied from the stage-1 UNet, LoRA merged) and T, base frozen,
  M frozen: the same image losses plus the time loss on T; the step uses the true t or, half the
  time, T's estimate (so the KCN tolerates T's errors).

Runs are seeded and resumable bit for bit and log losses to ``loss_log.csv`` through the shared
:class:`~..common.training_loop.TrainingLoop`; they end by writing the adapter file.
accelerate handles devices, mixed precision and several GPUs (``accelerate launch``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..blur.datasets import PatchSampler, SeededStream, SharpFolder, augment
from ..blur.frames import average_frames, blur_level
from ..blur.synthesis import BlurSettings
from ..blur.trajectory import shake_trajectory
from ..common.training_loop import TrainingLoop
from ..sd21 import UNET_TARGETS, OneStepSchedule, TextEmbedding, default_tokenizer, load_base, peft_to_pack
from ..sd21.lora import load_adapter, merge_adapters, unwrap_lora
from ..sd21.training import (FeatureDistance, LatentDiscriminator, RandomConvFeatures, discriminator_loss, edge_aware,
                             generator_loss, lpips_distance)
from .adapter import read_adapter, save_adapter
from .kcn import KernelControlNet
from .model import kernel_input

STAGES = ("base", "kernel", "control")


# -- data ---------------------------------------------------------------------------------------------

class TrajectorySampler(PatchSampler):
    """Batches of blur trajectories from sharp images: ``(blurry [S·L, 3, P, P], sharp [S·L, 3, P, P],
    t [S·L])``, S scenes of L points each. The points of one scene average the central n frames of
    the same shifted-frame stack (one camera path), so they lie on one trajectory towards its middle frame."""

    def __init__(self, source: SharpFolder, patch: int, scenes: int, seed: int, points: int = 3,
                 frames: tuple[int, ...] = (1, 7, 9, 11, 13, 15), speed: tuple[float, float] = (0.5, 1.5)):
        if points > len(frames):
            raise ValueError(f"{points} trajectory points need as many frame counts, got {frames}")
        self.points, self.frames, self.speed = points, tuple(sorted(frames)), speed
        self.margin = int(math.ceil((self.frames[-1] - 1) / 2 * speed[1])) + 1
        super().__init__(source, patch + 2 * self.margin, scenes, seed, settings=BlurSettings(kernel_size=1))
        self.crop = patch

    def scene(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = self.images[self._randint(len(self.images))]
        big = augment([self._crop(image, self.crop + 2 * self.margin)[0]], self._randint(8))[0]
        order = torch.randperm(len(self.frames), generator=self.generator)[:self.points]
        counts = sorted(self.frames[int(i)] for i in order)
        longest = max(counts)
        path, params = shake_trajectory(self.generator)
        index = torch.linspace(0, len(path) - 1, longest).round().long()
        points = path[index] * ((longest - 1) * self._uniform(*self.speed) / max(params["length"], 1e-6))
        offsets = (points - points[longest // 2]).round().long().flip(-1).clamp(-self.margin, self.margin)
        m, p = self.margin, self.crop
        stack = torch.stack([big[:, m + dy:m + dy + p, m + dx:m + dx + p] for dy, dx in offsets.tolist()])
        middle = longest // 2
        blurry = torch.stack([average_frames(stack[middle - n // 2:middle + n // 2 + 1], gamma=1.0).blurry for n in counts])
        sharp = stack[middle][None].expand(len(counts), -1, -1, -1)
        return blurry, sharp, torch.tensor([float(blur_level(n)) for n in counts])

    def next_batch(self):
        blurry, sharp, t = zip(*(self.scene() for _ in range(self.batch)))
        return torch.cat(blurry), torch.cat(sharp), torch.cat(t)


class FrameFolderSampler(SeededStream):
    """The same batches from real high-frame-rate video (GoPro_Large_all style: one folder of
    consecutive frames per clip): around a random middle frame, the averages of the central n frames
    (gamma 2.2, as GoPro) for ``points`` frame counts, each supervised to the middle frame."""

    def __init__(self, root: str, patch: int, scenes: int, seed: int, points: int = 3,
                 frames: tuple[int, ...] = (1, 7, 9, 11, 13, 15), gamma: float = 2.2):
        from ..common.image_io import list_images

        super().__init__(seed)
        self.patch, self.batch, self.points, self.frames, self.gamma = patch, scenes, points, tuple(sorted(frames)), gamma
        folders = sorted({os.path.dirname(p) for p in list_images(root, recursive=True)})
        self.clips = [c for c in (list_images(f) for f in folders) if len(c) >= self.frames[-1]]
        if not self.clips:
            raise FileNotFoundError(f"{root}: no folder holds {self.frames[-1]} consecutive frames")

    def scene(self):
        from ..common.image_io import read_image

        clip = self.clips[self._randint(len(self.clips))]
        order = torch.randperm(len(self.frames), generator=self.generator)[:self.points]
        counts = sorted(self.frames[int(i)] for i in order)
        half = max(counts) // 2
        middle = half + self._randint(len(clip) - 2 * half)
        first = read_image(clip[middle])
        h, w = first.shape[-2:]
        if min(h, w) < self.patch:
            raise ValueError(f"{clip[middle]}: smaller than the {self.patch} px crop")
        top, left = self._randint(h - self.patch + 1), self._randint(w - self.patch + 1)
        window = (slice(None), slice(top, top + self.patch), slice(left, left + self.patch))
        stack = torch.stack([read_image(clip[i])[window] for i in range(middle - half, middle + half + 1)])
        blurry = torch.stack([average_frames(stack[half - n // 2:half + n // 2 + 1], self.gamma).blurry for n in counts])
        return blurry, stack[half][None].expand(len(counts), -1, -1, -1), torch.tensor([float(blur_level(n)) for n in counts])

    next_batch = TrajectorySampler.next_batch


# -- configuration ------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    stage: str = "base"
    steps: int = 100_000
    lr: float = 5e-5
    scenes: int = 2  # per step; each gives `points` trajectory points
    points: int = 3
    crop: int = 256  # pixels (×2 for d = 4 inside the autoencoder)
    latent_downsample: int = 4
    lora_rank: int = 16
    kernel_size: int = 19  # m; the KCN takes m² channels (taken from the estimator when one is given)
    perceptual_weight: float = 1.0  # λ1
    gan_weight: float = 0.1  # λ2 (stage base; 0 turns the discriminator off)
    time_weight: float = 1e-3  # stage control: L1 in level units, scaled to the image losses
    estimate_share: float = 0.5  # stage control: share of steps that use T's t̂ instead of the true t
    perceptual: str = "lpips"  # 'lpips' (pip install lpips) or 'features' (a seeded random conv net)
    mixed_precision: str = "no"  # accelerate: no | fp16 | bf16
    gradient_checkpointing: bool = False
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    extra: dict = field(default_factory=dict)


def _perceptual(kind: str) -> nn.Module:
    if kind == "lpips":
        return lpips_distance("vgg")
    if kind == "features":
        return FeatureDistance(RandomConvFeatures())
    raise ValueError(f"perceptual must be 'lpips' or 'features', got {kind!r}")


def _empty_prompt(base) -> torch.Tensor | None:
    """CLIP("") from the base's text encoder when the file has one (the embedding's starting point)."""
    if base.text_encoder is None:
        return None
    tokens = default_tokenizer()([""])
    with torch.no_grad():
        return base.text_encoder(tokens).float()


class BaseStage(nn.Module):
    """The UNet (with its LoRA) and the learnable text embedding as one module, so one DDP wrapper
    averages both gradients (the embedding alone outside it would drift apart across processes)."""

    def __init__(self, unet: nn.Module, text: TextEmbedding):
        super().__init__()
        self.unet, self.text = unet, text

    def forward(self, z_t, t):
        context = self.text(z_t.shape[0])
        return context, self.unet(z_t, t, encoder_hidden_states=context, return_dict=False)[0]


class ControlStage(nn.Module):
    """The KCN and T as one module, so one DDP wrapper averages both gradients."""

    def __init__(self, kcn: KernelControlNet, regressor: nn.Module):
        super().__init__()
        self.kcn, self.regressor = kcn, regressor

    def forward(self, z_t, kernel_map, k_in, t, context):
        return self.regressor(kernel_map), self.kcn(z_t, k_in, t, context)


# -- the trainer --------------------------------------------------------------------------------------

class FideDiffTrainer(TrainingLoop):
    """Stages ``base`` and ``control``. ``base_path``: the SD 2.1 file; ``adapter_path`` (control):
    the stage-1 adapter; ``estimator_path`` (control): M and T from ``--stage kernel``."""
    log_fields = ("stage", "step", "loss", "l1", "perceptual", "gan_g", "gan_d", "time", "seconds")

    def __init__(self, config: TrainConfig, base_path: str, sampler: TrajectorySampler, run_dir: str,
                 adapter_path: str | None = None, estimator_path: str | None = None, cpu: bool = False):
        if config.stage not in ("base", "control"):
            raise ValueError(f"FideDiffTrainer runs the stages 'base' and 'control', not {config.stage!r}")
        super().__init__(run_dir, sampler, config.mixed_precision, "cpu" if cpu else "auto")
        self.config = config
        self.stage, self.steps = config.stage, config.steps
        self.checkpoint_every, self.log_every = config.checkpoint_every, config.log_every
        self.base_path, self.adapter_path, self.estimator_path = base_path, adapter_path, estimator_path
        torch.manual_seed(config.seed)
        self._build()

    # building
    def _build(self) -> None:
        c = self.config
        base = load_base(self.base_path, with_text=c.stage == "base")
        self.fingerprint, self.prediction = base.fingerprint, base.prediction
        self.schedule = OneStepSchedule(base.prediction)
        self.vae, self.scale = base.vae.requires_grad_(False), base.latent_scale
        self.unet = base.unet
        self.perceptual_net = _perceptual(c.perceptual)
        self.perceptual = edge_aware(self.perceptual_net)
        self.discriminator = self.kcn = self.estimator = None
        if c.stage == "base":
            self.text = TextEmbedding(base.unet_config.context_dim, init=_empty_prompt(base))
            if c.gan_weight > 0:
                self.discriminator = LatentDiscriminator(self.unet)
            from peft import LoraConfig

            self.unet.add_adapter(LoraConfig(r=c.lora_rank, lora_alpha=c.lora_rank, init_lora_weights="gaussian",
                                             target_modules=list(UNET_TARGETS)))
            trainable = [p for n, p in self.unet.named_parameters() if "lora_" in n] + list(self.text.parameters())
        else:
            state, metadata = read_adapter(self.adapter_path)
            self.lora_state = {k[len("lora."):]: v for k, v in state.items() if k.startswith("lora.")}
            load_adapter(self.unet, self.lora_state, "fidediff", self.adapter_path)
            merge_adapters(self.unet)
            unwrap_lora(self.unet)
            self.unet.requires_grad_(False)
            self.text = TextEmbedding(state["text_embedding"].shape[2], state["text_embedding"].shape[1], state["text_embedding"])
            self.text.requires_grad_(False)
            from .estimator_model import load_blur_estimator

            self.estimator = load_blur_estimator(self.estimator_path)
            self.estimator.estimator.requires_grad_(False)
            c.kernel_size = self.estimator.kernel_size
            self.kcn = KernelControlNet.from_unet(self.unet, base.unet_config, c.kernel_size ** 2)
            trainable = list(self.kcn.parameters()) + list(self.estimator.regressor.parameters())
        if c.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.optimizer = torch.optim.AdamW(trainable, lr=c.lr, weight_decay=1e-2)
        self.trainable = trainable
        self.d_optimizer = (torch.optim.AdamW(self.discriminator.parameters(), lr=c.lr, weight_decay=1e-2)
                            if self.discriminator is not None else None)
        modules = (self.unet, self.vae, self.text, self.kcn, self.estimator, self.discriminator, self.perceptual_net)
        for module in modules:
            if module is not None:
                module.to(self.accelerator.device)
        # Forward through the prepared (DDP / autocast) wrappers; read and write weights on the plain modules.
        prepare = self.accelerator.prepare
        trained = BaseStage(self.unet, self.text) if c.stage == "base" else ControlStage(self.kcn, self.estimator.regressor)
        self.trained_forward, self.optimizer = prepare(trained.train(), self.optimizer)
        self.discriminator_forward = None
        if self.d_optimizer is not None:
            self.discriminator_forward, self.d_optimizer = prepare(self.discriminator.train(), self.d_optimizer)
            self.optimizers["d"] = self.d_optimizer
        self.optimizers["g"] = self.optimizer

    # one step
    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        x = image * 2 - 1
        if self.config.latent_downsample == 4:
            x = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        return self.vae.encode(x) * self.scale

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(latent / self.scale)
        if self.config.latent_downsample == 4:
            x = F.interpolate(x, scale_factor=0.5, mode="bicubic", align_corners=False, antialias=True)
        return x

    def losses(self, blurry: torch.Tensor, sharp: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        with torch.no_grad():
            z_t = self._encode(blurry)
        out = {}
        if self.kcn is None:
            with self.accelerator.autocast():
                context, output = self.trained_forward(z_t, t)
        else:
            context = self.text(z_t.shape[0])
            from .estimator_training import time_loss

            with torch.no_grad():
                kernel_map = self.estimator.kernel_grid(blurry)
            k_in = kernel_input(kernel_map, blurry.shape[-2:], z_t.shape[-2:], c.latent_downsample)
            # drawn for the global batch, each process keeping its part (as the data)
            draw = torch.rand(t.shape[0] * self.accelerator.num_processes, generator=self.sampler.generator)
            use_estimate = self.local_part(draw) < c.estimate_share
            with torch.no_grad():
                estimated = self.estimator.regressor(kernel_map).mean((1, 2, 3)).clamp(0, 400)
            t_step = torch.where(use_estimate.to(t.device), estimated, t)
            level_map, control = self.trained_forward(z_t, kernel_map, k_in, t_step, context)
            out["time"] = time_loss(level_map, t, torch.ones_like(t, dtype=torch.bool))
            t = t_step
            with self.accelerator.autocast():
                down, middle = control
                output = self.unet(z_t, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                                   mid_block_additional_residual=middle, return_dict=False)[0]
        z0 = self.schedule.predict_x0(z_t, output.float(), t)
        image = self._decode(z0)
        target = sharp * 2 - 1
        out["l1"] = F.l1_loss(image, target)
        out["perceptual"] = self.perceptual(image, target).mean()
        out["z0"] = z0
        if self.discriminator is not None:
            out["gan_g"] = generator_loss(self.discriminator_forward(z0, 0, context))
        return out

    def step(self) -> dict[str, float]:
        c = self.config
        blurry, sharp, t = self.sampler.next_batch()
        device = self.accelerator.device
        blurry, sharp, t = blurry.to(device), sharp.to(device), t.to(device)
        parts = self.losses(blurry, sharp, t)
        loss = parts["l1"] + c.perceptual_weight * parts["perceptual"]
        if "gan_g" in parts:
            loss = loss + c.gan_weight * parts["gan_g"]
        if "time" in parts:
            loss = loss + c.time_weight * parts["time"]
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.trainable, c.grad_clip)
        self.optimizer.step()
        record = {k: float(v.detach()) for k, v in parts.items() if k != "z0"} | {"loss": float(loss.detach())}
        if self.discriminator is not None:
            with torch.no_grad():
                real = self._encode(sharp)
            context = self.text(real.shape[0]).detach()
            d_loss = discriminator_loss(self.discriminator_forward(real, 0, context),
                                        self.discriminator_forward(parts["z0"].detach(), 0, context))
            self.d_optimizer.zero_grad(set_to_none=True)
            self.accelerator.backward(d_loss)
            self.d_optimizer.step()
            record["gan_d"] = float(d_loss)
        return record

    # saving and resuming
    def trainable_state(self) -> dict[str, torch.Tensor]:
        if self.config.stage == "base":
            state = {f"lora.{n}": p.detach().cpu() for n, p in self.unet.named_parameters() if "lora_" in n}
        else:
            state = {f"kcn.{k}": v.detach().cpu() for k, v in self.kcn.state_dict().items()}
            state |= {f"regressor.{k}": v.detach().cpu() for k, v in self.estimator.regressor.state_dict().items()}
        state["text_embedding"] = self.text.embedding.detach().cpu()
        if self.discriminator is not None:
            state |= {f"discriminator.{k}": v.detach().cpu() for k, v in self.discriminator.state_dict().items()}
        return state

    def load_trainable_state(self, weights: dict[str, torch.Tensor]) -> None:
        if self.config.stage == "base":
            for name, param in self.unet.named_parameters():
                if "lora_" in name:
                    param.copy_(weights[f"lora.{name}"])
        else:
            self.kcn.load_state_dict({k[4:]: v for k, v in weights.items() if k.startswith("kcn.")})
            self.estimator.regressor.load_state_dict({k[10:]: v for k, v in weights.items() if k.startswith("regressor.")})
        self.text.embedding.copy_(weights["text_embedding"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict({k[14:]: v for k, v in weights.items() if k.startswith("discriminator.")})

    def export(self, path: str, base_name: str = "") -> None:
        """The adapter file: stage base → LoRA + text embedding; control → also KCN, M and the trained T."""
        c = self.config
        if c.stage == "base":
            from peft import get_peft_model_state_dict

            lora = peft_to_pack(get_peft_model_state_dict(self.unet), alpha=c.lora_rank, source=self.run_dir)
            kcn = estimator = None
        else:
            from .estimator_model import estimator_state

            lora, kcn, estimator = self.lora_state, self.kcn.state_dict(), estimator_state(self.estimator)
        save_adapter(path, lora, self.text.embedding, kcn, estimator, metadata={
            "latent_downsample": c.latent_downsample, "kernel_size": c.kernel_size, "base_fingerprint": self.fingerprint,
            "base_name": base_name or os.path.basename(self.base_path), "prediction": self.prediction,
            "training": f"stage {c.stage}, {self.step_index} steps"})
