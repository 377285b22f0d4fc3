"""Training OSDD (training only: accelerate is imported here, never at inference).

Stages, each continuing the run's OSDD file (``osdd.safetensors``) of the stages before it:

* ``evae`` — OSDD's stage 1 (Fig. 3): the skip blocks and the encoder LoRA ("Encoder 1", on the blurry
  image) learn to decode the SHARP image's latent from the frozen SD encoder ("Encoder 2": the same
  encoder with its LoRA switched off) into the sharp image: L1 + λp·perceptual.
* ``real`` / ``synthetic`` — one UNet adapter each, the eVAE frozen, on its own data: one step at
  t = 999 from the eVAE's latent of the blurry image, decoded with the skips; MSE + λp·edge-aware
  perceptual + λg·latent GAN (discriminator from the UNet encoder). ``real`` also learns the prompt
  embedding (the run's first stage seeds it with the base's text encoding of the default prompt when
  the base file has a text encoder, else zeros).
* ``gate`` — the γ gate with both adapters frozen, on both data sets in turn, the same loss without GAN.

The pack's own LoRA layers are trained directly (not peft): the gate stage needs per-image adapter
scales, and the trained tensors are already in the file's layout.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common.checkpoint import CheckpointError
from ..common.training_loop import TrainingLoop
from ..sd21 import default_tokenizer, load_base
from ..sd21.lora import lora_layers, set_scale
from ..sd21.one_step import one_step
from ..sd21.training import LatentDiscriminator, discriminator_loss, edge_aware, generator_loss
from ..sd21.training.perceptual import perceptual_distance
from .dda import ADAPTERS, set_gamma
from .model import DEFAULT_PROMPT, OSDD, VAE_ADAPTER, OSDDConfig
from .weights import osdd_state, read_osdd, save_osdd

STAGES = ("evae",) + ADAPTERS + ("gate",)


@dataclass
class TrainConfig:
    stage: str = "evae"
    steps: int = 20_000
    lr: float = 5e-5
    unet_rank: int = 4
    vae_rank: int = 4
    perceptual_weight: float = 1.0  # λp: stage evae (plain), UNet stages (edge-aware)
    gan_weight: float = 0.1  # λg, adapter stages (0 turns the discriminator off)
    perceptual: str = "lpips"  # 'lpips' (pip install lpips) or 'features' (a seeded random conv net)
    mixed_precision: str = "no"  # accelerate: no | fp16 | bf16
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")


class MixedSampler:
    """Batches from two samplers in turn (the gate sees real and synthetic data alike)."""

    def __init__(self, first, second):
        self.samplers, self.turn = (first, second), 0
        self.generator = first.generator

    def next_batch(self):
        batch = self.samplers[self.turn].next_batch()
        self.turn = 1 - self.turn
        return batch

    def state(self) -> dict:
        return {"first": self.samplers[0].state(), "second": self.samplers[1].state(), "turn": torch.tensor(self.turn)}

    def set_state(self, state: dict) -> None:
        self.samplers[0].set_state(state["first"])
        self.samplers[1].set_state(state["second"])
        self.turn = int(state["turn"])

    @property
    def batch(self) -> int:
        return self.samplers[0].batch

    @batch.setter
    def batch(self, size: int) -> None:  # several processes: both samplers draw the global batch
        for sampler in self.samplers:
            sampler.batch = size


def assign_parts(model: OSDD, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy an OSDD file's tensors into a fresh (unmerged) model of the same ranks."""
    own = osdd_state(model)
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith(".alpha"):
                continue
            if key not in own or own[key].shape != value.shape:
                found = tuple(own[key].shape) if key in own else "no such tensor"
                raise CheckpointError(source, f"{key} {tuple(value.shape)} does not fit this run ({found}); same --unet-rank/--vae-rank?")
            own[key].copy_(value)


def _prompt_embedding(base) -> torch.Tensor | None:
    if base.text_encoder is None:
        return None
    with torch.no_grad():
        return base.text_encoder(default_tokenizer()([DEFAULT_PROMPT])).float()


class _Generator(nn.Module):
    """The trained forward pass of every stage, one module for accelerate to wrap."""

    def __init__(self, model: OSDD, stage: str):
        super().__init__()
        self.model, self.stage = model, stage

    def sd_latent(self, image: torch.Tensor) -> torch.Tensor:
        """Encoder 2: the plain SD encoder (the LoRA off), posterior mean."""
        encoder = self.model.evae.vae.encoder
        set_scale(encoder, VAE_ADAPTER, 0.0)
        try:
            return self.model.evae.vae.encode(image)
        finally:
            set_scale(encoder, VAE_ADAPTER, 1.0)

    def forward(self, blurry: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.model
        if self.stage == "evae":
            with torch.no_grad():
                latent = self.sd_latent(sharp)
            _, skips = m.evae.encode_with_skips(blurry)
            return m.evae.decode(latent, skips), None
        with torch.no_grad():
            latent, skips = m.evae.encode_with_skips(blurry)
        gamma = {"real": 1.0, "synthetic": 0.0}.get(self.stage)
        set_gamma(m.unet, m.gamma_from(skips) if gamma is None else gamma)
        z0 = one_step(m.unet, m.schedule, latent * m.latent_scale, m.config.timestep, m.text(latent.shape[0]))
        return m.evae.decode(z0.float() / m.latent_scale, skips), z0


class OSDDTrainer(TrainingLoop):
    log_fields = ("stage", "step", "loss", "l1", "mse", "perceptual", "gan_g", "gan_d", "gamma", "seconds")

    def __init__(self, config: TrainConfig, base_path: str, sampler, run_dir: str, previous: str | None = None,
                 cpu: bool = False):
        super().__init__(run_dir, sampler, config.mixed_precision, "cpu" if cpu else "auto")
        c = self.config = config
        self.stage, self.steps = c.stage, c.steps
        self.checkpoint_every, self.log_every = c.checkpoint_every, c.log_every
        torch.manual_seed(c.seed)
        base = load_base(base_path, with_text=previous is None)  # the first stage seeds the prompt embedding
        model = OSDD.fresh(base, OSDDConfig(), c.unet_rank, c.vae_rank, _prompt_embedding(base))
        base.text_encoder = None
        if previous:
            _, state, _ = read_osdd(previous)
            assign_parts(model, state, previous)
        model.requires_grad_(False)
        trainable = self._trainable(model)
        for p in trainable:
            p.requires_grad_(True)
        self.model, self.trainable = model, trainable
        self.perceptual = perceptual_distance(c.perceptual).requires_grad_(False)
        self.discriminator = None
        if c.stage in ADAPTERS and c.gan_weight > 0:
            self.discriminator = LatentDiscriminator(model.unet)
        device = self.accelerator.device
        for module in (model, self.perceptual, self.discriminator):
            if module is not None:
                module.to(device)
        self.optimizers["g"] = torch.optim.AdamW(trainable, lr=c.lr, weight_decay=1e-2)
        self.forward, self.optimizers["g"] = self.accelerator.prepare(_Generator(model, c.stage).train(), self.optimizers["g"])
        self.discriminator_forward = None
        if self.discriminator is not None:
            self.optimizers["d"] = torch.optim.AdamW(self.discriminator.parameters(), lr=c.lr, weight_decay=1e-2)
            self.discriminator_forward, self.optimizers["d"] = self.accelerator.prepare(self.discriminator.train(), self.optimizers["d"])

    def _trainable(self, model: OSDD) -> list[nn.Parameter]:
        stage = self.config.stage
        if stage == "evae":
            lora = [p for layer in lora_layers(model.evae.vae).values() for p in layer.adapters.parameters()]
            return list(model.evae.skips.parameters()) + lora
        if stage == "gate":
            return list(model.gate.parameters())
        params = [p for layer in lora_layers(model.unet).values() if stage in layer.adapters
                  for p in layer.adapters[stage].parameters()]
        return params + (list(model.text.parameters()) if stage == "real" else [])

    def step(self) -> dict[str, float]:
        c = self.config
        blurry, sharp = (x.to(self.accelerator.device) * 2 - 1 for x in self.sampler.next_batch())
        with self.accelerator.autocast():
            image, z0 = self.forward(blurry, sharp)
        image = image.float()
        record = {}
        if c.stage == "evae":
            parts = {"l1": F.l1_loss(image, sharp), "perceptual": self.perceptual(image, sharp).mean()}
            loss = parts["l1"] + c.perceptual_weight * parts["perceptual"]
        else:
            parts = {"mse": F.mse_loss(image, sharp), "perceptual": edge_aware(self.perceptual)(image, sharp).mean()}
            loss = parts["mse"] + c.perceptual_weight * parts["perceptual"]
            if self.discriminator is not None:
                context = self.model.text(z0.shape[0]).detach()
                parts["gan_g"] = generator_loss(self.discriminator_forward(z0.float(), 0, context))
                loss = loss + c.gan_weight * parts["gan_g"]
        optimizer = self.optimizers["g"]
        optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.trainable, c.grad_clip)
        optimizer.step()
        record |= {k: float(v.detach()) for k, v in parts.items()} | {"loss": float(loss.detach())}
        if c.stage == "gate":
            with torch.no_grad():
                record["gamma"] = float(self.model.gamma_from(self.model.evae.encode_with_skips(blurry)[1]).mean())
        if self.discriminator is not None:
            with torch.no_grad():
                real = self.accelerator.unwrap_model(self.forward).sd_latent(sharp) * self.model.latent_scale
            context = self.model.text(real.shape[0]).detach()
            d_loss = discriminator_loss(self.discriminator_forward(real, 0, context),
                                        self.discriminator_forward(z0.detach().float(), 0, context))
            self.optimizers["d"].zero_grad(set_to_none=True)
            self.accelerator.backward(d_loss)
            self.optimizers["d"].step()
            record["gan_d"] = float(d_loss.detach())
        return record

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = {f"osdd.{k}": v for k, v in osdd_state(self.model).items() if not k.endswith(".alpha")}
        if self.discriminator is not None:
            state |= {f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()}
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        assign_parts(self.model, {k[5:]: v for k, v in state.items() if k.startswith("osdd.")}, self.checkpoint_path)
        if self.discriminator is not None:
            self.discriminator.load_state_dict({k[14:]: v for k, v in state.items() if k.startswith("discriminator.")})

    def export(self, path: str) -> None:
        """The OSDD file with every part trained so far (this stage's included)."""
        save_osdd(self.model, path, source=f"tools/train_osdd.py, stage {self.stage}, {self.step_index} steps, "
                                           f"config {asdict(self.config)}")
