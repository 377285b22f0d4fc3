"""The Stable Diffusion 2.x denoising UNet and a DiffBIR-style ControlNet, on diffusers' classes.

Sizes come from an original (LDM / DiffBIR layout) state dict: levels, widths, residual blocks per
level, where the cross-attention transformers sit and how deep they are, the text width, linear or
convolutional projections. Only the attention head count cannot be seen in shapes: SD 2.x uses
64-channel heads, and a width that is not a multiple of 64 (reduced test models) gets one head.

DiffBIR's ControlNet differs from diffusers' ``ControlNetModel`` in one place: the hint is
concatenated to the noisy latent before the first convolution instead of going through a separate
conditioning embedding. :class:`HintControlNet` keeps every diffusers module of a ControlNetModel
except that embedding and runs them with the concatenated input.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..common.checkpoint import CheckpointError
from ..common.state_dict import count_indexed, shape_of

HEAD_CHANNELS = 64
GROUPS = 32  # GroupNorm groups of every SD block


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int
    out_channels: int  # 0 for a ControlNet, which has no decoder half
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention: tuple[bool, ...]  # a transformer after each residual block of the level
    transformer_depth: tuple[int, ...]  # per level; the last entry is also the middle block's
    context_dim: int
    linear_projection: bool
    head_channels: int = HEAD_CHANNELS

    def __post_init__(self):
        levels = len(self.channel_mult)
        if len(self.attention) != levels or len(self.transformer_depth) != levels:
            raise ValueError(f"UNetConfig: {levels} levels but attention {self.attention} and depth {self.transformer_depth}")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def heads(self) -> tuple[int, ...]:
        return tuple(w // self.head_channels if w % self.head_channels == 0 else 1 for w in self.widths)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UNetConfig":
        data = dict(data)
        for key in ("channel_mult", "attention", "transformer_depth"):
            data[key] = tuple(data[key])
        return cls(**data)

    @classmethod
    def from_ldm(cls, state: dict, source: str, control: bool = False) -> "UNetConfig":
        """Read the sizes of an LDM ``UNetModel`` (``control=False``) or DiffBIR ``ControlNet``."""
        first = shape_of(state, "input_blocks.0.0.weight", source)
        model_channels, in_channels = first[0], first[1]
        levels: list[list[tuple[int, bool, int]]] = [[]]
        index = 1
        while any(k.startswith(f"input_blocks.{index}.") for k in state):
            if f"input_blocks.{index}.0.op.weight" in state:
                levels.append([])
            else:
                width = shape_of(state, f"input_blocks.{index}.0.out_layers.3.weight", source)[0]
                attention = f"input_blocks.{index}.1.norm.weight" in state
                depth = count_indexed(state, f"input_blocks.{index}.1.transformer_blocks.") if attention else 0
                levels[-1].append((width, attention, depth))
            index += 1
        blocks = {len(level) for level in levels}
        if len(blocks) != 1 or 0 in blocks:
            raise CheckpointError(source, f"unsupported UNet: levels hold {[len(l) for l in levels]} residual blocks (must be equal)")
        for number, level in enumerate(levels):
            if len(set(level)) != 1:
                raise CheckpointError(source, f"unsupported UNet: level {number} mixes block widths or attention ({level})")
        widths = [level[0][0] for level in levels]
        if any(w % model_channels for w in widths) or any(w % GROUPS for w in widths):
            raise CheckpointError(source, f"unsupported UNet widths {widths} (multiples of {model_channels} and {GROUPS} expected)")
        if "middle_block.1.norm.weight" not in state:
            raise CheckpointError(source, "unsupported UNet: the middle block has no cross-attention transformer")
        attention = tuple(level[0][1] for level in levels)
        depth = [level[0][2] for level in levels]
        depth[-1] = count_indexed(state, "middle_block.1.transformer_blocks.")
        context_dim = shape_of(state, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", source)[1]
        linear = len(shape_of(state, "middle_block.1.proj_in.weight", source)) == 2
        out_channels = 0 if control else shape_of(state, "out.2.weight", source)[0]
        return cls(in_channels, out_channels, model_channels, tuple(w // model_channels for w in widths),
                   len(levels[0]), attention, tuple(depth), context_dim, linear)

    def diffusers_kwargs(self) -> dict:
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in self.attention)
        kwargs = dict(
            in_channels=self.in_channels, down_block_types=down, block_out_channels=self.widths,
            layers_per_block=self.num_res_blocks, cross_attention_dim=self.context_dim,
            attention_head_dim=self.heads,  # diffusers' historical name for the head count
            use_linear_projection=self.linear_projection, transformer_layers_per_block=self.transformer_depth,
            norm_num_groups=GROUPS, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0,
        )
        if self.out_channels:
            up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(self.attention))
            kwargs.update(out_channels=self.out_channels, up_block_types=up)
        return kwargs


def build_unet(config: UNetConfig) -> nn.Module:
    """A diffusers ``UNet2DConditionModel`` of these sizes (build under ``torch.device('meta')`` to
    skip the random initialisation before loading weights)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config.diffusers_kwargs())


class HintControlNet(nn.Module):
    """DiffBIR's ControlNet: ``cat(noisy latent, hint)`` enters ``conv_in``; the zero convolutions
    give one residual per encoder feature map plus one for the middle block. Parameter names are
    those of diffusers' ``ControlNetModel`` (without ``controlnet_cond_embedding``)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        from diffusers import ControlNetModel

        kwargs = config.diffusers_kwargs()
        net = ControlNetModel(**kwargs, conditioning_channels=1, conditioning_embedding_out_channels=(16,))
        for name, child in net.named_children():
            if name != "controlnet_cond_embedding":
                self.add_module(name, child)
        self.config = config

    def forward(self, sample: torch.Tensor, hint: torch.Tensor, timestep: torch.Tensor,
                context: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        emb = self.time_embedding(self.time_proj(timestep.expand(sample.shape[0])).to(sample.dtype))
        return self.residuals(self.conv_in(torch.cat([sample, hint], dim=1)), emb, context)

    def residuals(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The encoder from the first feature map ``h`` on, each map through its zero convolution."""
        features = [h]
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, outputs = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
            else:
                h, outputs = block(hidden_states=h, temb=emb)
            features.extend(outputs)
        h = self.mid_block(h, emb, encoder_hidden_states=context)
        down = [conv(f) for f, conv in zip(features, self.controlnet_down_blocks)]
        return down, self.controlnet_mid_block(h)


def controlled_unet(unet: nn.Module, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                    control: tuple[list[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The UNet's prediction with ControlNet residuals added to its skip connections and middle."""
    down, middle = control if control is not None else (None, None)
    return unet(sample, timestep.expand(sample.shape[0]), encoder_hidden_states=context,
                down_block_additional_residuals=tuple(down) if down is not None else None,
                mid_block_additional_residual=middle, return_dict=False)[0]


# --- windowed attention ------------------------------------------------------------------------

def window_starts(size: int, window: int) -> list[int]:
    """Window offsets along one axis as DeblurDiff's ``SpatialTransformer.grids`` places them: as few
    windows as cover the axis, spread evenly (rounded up), the last one flush with the end."""
    window = min(size, window)
    count = (size - 1) // window + 1
    step = window if count == 1 else math.ceil((size - window) / (count - 1) - 1e-8)
    starts, start = [], 0
    while start < size:
        if start + window >= size:
            starts.append(size - window)
            break
        starts.append(start)
        start += step
    return starts


def _windowed_class():
    from diffusers import Transformer2DModel

    class WindowedTransformer2DModel(Transformer2DModel):
        """A ``Transformer2DModel`` that, on maps larger than ``window``, runs on overlapping square
        windows separately (group norm and attention included) and averages the overlaps."""

        window: int | None = None

        def forward(self, hidden_states, encoder_hidden_states=None, *args, return_dict=True, **kwargs):
            window = self.window
            _, _, height, width = hidden_states.shape
            if not window or (height <= window and width <= window):
                return super().forward(hidden_states, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
            rows, cols = window_starts(height, window), window_starts(width, window)
            wh, ww = min(height, window), min(width, window)
            total = torch.zeros(hidden_states.shape, dtype=torch.float32, device=hidden_states.device)
            count = torch.zeros((1, 1, height, width), dtype=torch.float32, device=hidden_states.device)
            for top in rows:
                for left in cols:
                    part = hidden_states[:, :, top:top + wh, left:left + ww]
                    out = super().forward(part, encoder_hidden_states, *args, return_dict=False, **kwargs)[0]
                    total[:, :, top:top + wh, left:left + ww] += out.float()
                    count[:, :, top:top + wh, left:left + ww] += 1
            result = (total / count).to(hidden_states.dtype)
            if not return_dict:
                return (result,)
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=result)
    return WindowedTransformer2DModel


_WINDOWED = None


def set_attention_windows(model: nn.Module, base: int | None, halve_per_level: bool = True) -> None:
    """Restrict every transformer of a UNet or ControlNet to windows of ``base`` latent pixels at the
    first level (halved at each deeper level with ``halve_per_level``); ``None`` = whole maps."""
    global _WINDOWED
    if _WINDOWED is None:
        _WINDOWED = _windowed_class()
    from diffusers import Transformer2DModel

    levels = len(model.down_blocks)

    def size(level: int) -> int | None:
        if not base:
            return None
        return max(base >> level, 1) if halve_per_level else base

    def assign(blocks, level_of):
        for index, block in enumerate(blocks):
            for transformer in getattr(block, "attentions", None) or []:
                if isinstance(transformer, Transformer2DModel):
                    transformer.__class__ = _WINDOWED
                    transformer.window = size(level_of(index))

    assign(model.down_blocks, lambda i: i)
    assign([model.mid_block], lambda _i: levels - 1)
    if hasattr(model, "up_blocks"):
        assign(model.up_blocks, lambda i: levels - 1 - i)
