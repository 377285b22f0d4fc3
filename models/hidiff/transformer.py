"""The HI-Diff restoration transformer: Restormer's U-shaped encoder/decoder with the prior fused
by HIM (cross-attention from image tokens to prior tokens) at the levels that have one, and by a
per-channel affine modulation at the bottleneck, as in the official ``Transformer`` module.
"""
from __future__ import annotations

from dataclasses import dataclass, field, asdict
from contextvars import ContextVar
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..common.state_dict import count_indexed, shape_of

# Layers of the U-Net in forward order, with the prior scale each one is guided by (1 = full token
# grid, 2 = pooled 4x fewer tokens, 3 = a single vector).
LAYERS = {
    "encoder_level1": 1, "encoder_level2": 2, "encoder_level3": 2, "latent": 3,
    "decoder_level3": 2, "decoder_level2": 2, "decoder_level1": 1, "refinement": 1,
}


# Elements of one GDFN hidden half per strip (16 MiB in fp32): below glibc's largest heap-served
# block, so strips reuse memory instead of mapping fresh pages for every call.
STRIP_ELEMENTS = 4 * 2**20


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map (``WithBias`` or ``BiasFree``, eps 1e-5).

    The official code rearranges to tokens and back; normalising a channels-last view is the same
    arithmetic without the two copies.
    """

    def __init__(self, dim: int, with_bias: bool):
        super().__init__()
        self.body = _TokenLayerNorm(dim, with_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _TokenLayerNorm(nn.Module):
    """LayerNorm over the last dimension; ``BiasFree`` divides by the std without centring."""

    def __init__(self, dim: int, with_bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, 1e-5)
        variance = x.var(-1, keepdim=True, unbiased=False)
        return x * torch.rsqrt(variance + 1e-5) * self.weight


class TokenLayerNorm(nn.Module):
    """Official ``LayerNorm_Without_Shape``: the same norm applied to ``[B, N, C]`` tokens."""

    def __init__(self, dim: int, with_bias: bool):
        super().__init__()
        self.body = _TokenLayerNorm(dim, with_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PriorModulated(nn.Module):
    """Base of the bottleneck's blocks: ``x * ln1(prior) + ln2(prior)`` per channel (official
    ``ln1``/``ln2``), present only where the prior arrives as a single vector instead of via HIM."""

    def add_modulation(self, prior_dim: int | None, dim: int) -> None:
        if prior_dim:
            self.ln1 = nn.Linear(prior_dim, dim)
            self.ln2 = nn.Linear(prior_dim, dim)

    def modulate(self, x: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        if prior is None or not hasattr(self, "ln1"):
            return x
        return x * self.ln1(prior)[..., None, None] + self.ln2(prior)[..., None, None]


# What Transformer.forward was given to call between strips and blocks (a context variable, so
# the layers need no extra argument and concurrent runs in other threads keep their own).
_check: ContextVar[Callable[[], None] | None] = ContextVar("hidiff_restore_check", default=None)


def run_check() -> None:
    check = _check.get()
    if check is not None:
        check()


def row_strips(height: int, rows: int):
    """``(top, bottom, low, high)`` for strips of ``rows`` rows, with the one-row halo
    (``low``/``high``) that a 3x3 convolution needs to compute rows ``top:bottom`` exactly."""
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        yield top, bottom, max(top - 1, 0), min(bottom + 1, height)


class FeedForward(PriorModulated):
    """Gated-Dconv feed-forward network (GDFN)."""

    def __init__(self, dim: int, hidden: int, bias: bool, prior_dim: int | None):
        super().__init__()
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)
        self.add_modulation(prior_dim, dim)

    def forward(self, x, prior=None):
        x = self.modulate(x, prior)
        b, _, h, w = x.shape
        rows = max(8, STRIP_ELEMENTS // (b * self.project_out.in_channels * w))
        if rows >= h:
            return self._gdfn(x)
        # The GDFN is local (1x1, 3x3 depthwise, 1x1), so it runs in horizontal strips with a one-row
        # halo: the wide hidden activations never exist for the whole image at once, which bounds
        # memory and keeps each temporary small enough to be reused by the allocator and the cache.
        out = torch.empty((b, self.project_out.out_channels, h, w), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        for top, bottom, low, high in row_strips(h, rows):
            out[:, :, top:bottom] = self._gdfn(x[:, :, low:high])[:, :, top - low:bottom - low]
            run_check()
        return out

    def _gdfn(self, x):
        # Gate and value are computed as two halves of the same convolutions: identical arithmetic,
        # but each half is contiguous, which channels-last GELU and project_out run much faster on.
        hidden = self.project_out.in_channels
        halves = []
        for part in (slice(0, hidden), slice(hidden, 2 * hidden)):
            bias_in = None if self.project_in.bias is None else self.project_in.bias[part]
            bias_dw = None if self.dwconv.bias is None else self.dwconv.bias[part]
            y = F.conv2d(x, self.project_in.weight[part], bias_in)
            halves.append(F.conv2d(y, self.dwconv.weight[part], bias_dw, padding=1, groups=hidden))
        gate, value = halves
        return self.project_out(F.gelu(gate).mul_(value))


class Attention(PriorModulated):
    """Multi-Dconv head transposed attention (MDTA): attention across channels, not pixels."""

    def __init__(self, dim: int, heads: int, bias: bool, prior_dim: int | None):
        super().__init__()
        self.num_heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)
        self.add_modulation(prior_dim, dim)

    def forward(self, x, prior=None):
        x = self.modulate(x, prior)
        b, c, h, w = x.shape
        heads = self.num_heads
        # Pixels-major tokens are a free view of a channels-last map. The official code normalises q
        # and k over all pixels and multiplies them; here the small c x c product q^T k and the squared
        # norms are accumulated strip by strip (with the depthwise conv's one-row halo) and the product
        # divided by the norms afterwards: the same quantity, without the full-size q, k and their
        # normalised copies. Only v is kept whole.
        rows = max(8, STRIP_ELEMENTS // (b * 3 * c * w))
        gram = x.new_zeros(b, heads, c // heads, c // heads)
        q_sq, k_sq = x.new_zeros(b, heads, c // heads), x.new_zeros(b, heads, c // heads)
        values = []
        for top, bottom, low, high in row_strips(h, rows):
            qkv = self.qkv_dwconv(self.qkv(x[:, :, low:high]))[:, :, top - low:bottom - low]
            tokens = qkv.permute(0, 2, 3, 1).reshape(b, -1, 3, heads, c // heads)
            q, k, v = (tokens[:, :, i].permute(0, 2, 1, 3) for i in range(3))  # [B, heads, pixels, c/heads]
            gram += q.transpose(-2, -1) @ k
            q_sq += q.square().sum(dim=2)
            k_sq += k.square().sum(dim=2)
            values.append(v.contiguous())
            run_check()
        norms = q_sq.sqrt().clamp_min(1e-12)[..., :, None] * k_sq.sqrt().clamp_min(1e-12)[..., None, :]
        attn = (gram / norms * self.temperature).softmax(dim=-1).transpose(-2, -1)
        out = torch.empty_like(x, memory_format=torch.channels_last)
        for top, v in zip(range(0, h, rows), values):
            strip = (v @ attn).permute(0, 2, 1, 3).reshape(b, -1, w, c).permute(0, 3, 1, 2)
            out[:, :, top:top + strip.shape[2]] = self.project_out(strip)
            run_check()
        return out


class HIM(nn.Module):
    """Hierarchical Integration Module: image tokens cross-attend to the prior tokens, residually."""

    def __init__(self, dim: int, heads: int, bias: bool, prior_dim: int, with_bias_norm: bool):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.norm1 = TokenLayerNorm(dim, with_bias_norm)
        self.norm2 = TokenLayerNorm(prior_dim, with_bias_norm)
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(prior_dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads = self.num_heads
        k, v = self.kv(self.norm2(prior)).chunk(2, dim=-1)
        k = k.reshape(b, -1, heads, c // heads).transpose(1, 2)
        v = v.reshape(b, -1, heads, c // heads).transpose(1, 2)
        # Each pixel attends to the prior tokens on its own, so rows are done in strips (bounded
        # temporaries, and a Cancel check between strips on large images).
        rows = max(8, STRIP_ELEMENTS // (b * max(c, heads * k.shape[2]) * w))
        out = torch.empty_like(x)
        for top in range(0, h, rows):
            strip = x[:, :, top:top + rows]
            tokens = strip.flatten(2).transpose(1, 2)  # [B, pixels, C]
            q = self.q(self.norm1(tokens)).reshape(b, -1, heads, c // heads).transpose(1, 2)
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
            mixed = self.proj((attn @ v).transpose(1, 2).reshape(b, -1, c))
            out[:, :, top:top + rows] = (tokens + mixed).transpose(1, 2).reshape(b, c, -1, w)
            run_check()
        return out


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads, hidden, bias, with_bias_norm, prior_dim):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, with_bias_norm)
        self.attn = Attention(dim, heads, bias, prior_dim)
        self.norm2 = ChannelLayerNorm(dim, with_bias_norm)
        self.ffn = FeedForward(dim, hidden, bias, prior_dim)

    def forward(self, x, prior=None):
        x = x + self.attn(self.norm1(x), prior)
        return x + self.ffn(self.norm2(x), prior)


@dataclass
class LayerSpec:
    dim: int
    heads: int
    blocks: int
    hidden: int  # GDFN hidden width, int(dim * ffn_expansion_factor) in the official code
    him: bool  # True: fused by HIM; False: blocks modulated by the pooled prior vector


class BasicLayer(nn.Module):
    """A level of the U-Net: an optional HIM followed by transformer blocks."""

    def __init__(self, spec: LayerSpec, bias: bool, with_bias_norm: bool, prior_dim: int):
        super().__init__()
        block_prior = None if spec.him else prior_dim
        self.blocks = nn.ModuleList(
            TransformerBlock(spec.dim, spec.heads, spec.hidden, bias, with_bias_norm, block_prior)
            for _ in range(spec.blocks)
        )
        if spec.him:
            self.him = HIM(spec.dim, spec.heads, bias, prior_dim, with_bias_norm)

    def forward(self, x, prior=None):
        if prior is not None and hasattr(self, "him"):
            x = self.him(x, prior)
            prior = None
        for block in self.blocks:
            x = block(x, prior)
            run_check()
        return x


class Resample(nn.Module):
    """A 3x3 conv then pixel (un)shuffle: ``Downsample`` halves the size, ``Upsample`` doubles it."""

    def __init__(self, dim_in: int, dim_out: int, shuffle: nn.Module):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False), shuffle)

    def forward(self, x):
        return self.body(x)


def Downsample(dim: int) -> Resample:
    return Resample(dim, dim // 2, nn.PixelUnshuffle(2))


def Upsample(dim: int) -> Resample:
    return Resample(dim, dim * 2, nn.PixelShuffle(2))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, bias: bool):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1, bias=bias)

    def forward(self, x):
        return self.proj(x)


class PriorPool(nn.Module):
    """Official ``down_1``/``down_2``: a linear map over the token axis, then over channels."""

    def __init__(self, tokens_in: int, tokens_out: int, prior_dim: int):
        super().__init__()
        # Indices 1 and 3 match the official nn.Sequential (0 and 2 were einops Rearrange layers).
        self.add_module("1", nn.Linear(tokens_in, tokens_out))
        self.add_module("3", nn.Linear(prior_dim, prior_dim))

    def forward(self, prior):
        prior = getattr(self, "1")(prior.transpose(1, 2)).transpose(1, 2)
        return getattr(self, "3")(prior)


@dataclass
class TransformerConfig:
    in_channels: int = 3
    out_channels: int = 3
    dim: int = 48
    prior_dim: int = 256  # 4 * embed_dim
    group: int = 4  # the prior is group*group tokens
    bias: bool = False
    with_bias_norm: bool = True  # LayerNorm_type 'WithBias' (else 'BiasFree')
    dual_pixel: bool = False
    layers: dict[str, LayerSpec] = field(default_factory=dict)

    @classmethod
    def standard(cls, dim=48, num_blocks=(3, 5, 6, 6), num_refinement_blocks=4, heads=(1, 2, 4, 8),
                 ffn_expansion_factor=2.66, embed_dim=64, group=4, bias=False, with_bias_norm=True,
                 in_channels=3, out_channels=3) -> "TransformerConfig":
        """The official constructor arguments (defaults: the GoPro release) as a config."""
        level = {"encoder_level1": 0, "encoder_level2": 1, "encoder_level3": 2, "latent": 3,
                 "decoder_level3": 2, "decoder_level2": 1, "decoder_level1": 0, "refinement": 0}
        width = {"encoder_level1": dim, "encoder_level2": 2 * dim, "encoder_level3": 4 * dim, "latent": 8 * dim,
                 "decoder_level3": 4 * dim, "decoder_level2": 2 * dim, "decoder_level1": 2 * dim, "refinement": 2 * dim}
        group_of = {1: group, 2: group // 2, 3: 1}
        layers = {
            name: LayerSpec(
                dim=width[name], heads=heads[level[name]],
                blocks=num_refinement_blocks if name == "refinement" else num_blocks[level[name]],
                hidden=int(width[name] * ffn_expansion_factor), him=group_of[scale] > 1)
            for name, scale in LAYERS.items()
        }
        return cls(in_channels, out_channels, dim, 4 * embed_dim, group, bias, with_bias_norm, False, layers)

    @classmethod
    def from_state_dict(cls, state: dict, source: str = "checkpoint") -> "TransformerConfig":
        dim, in_channels = shape_of(state, "patch_embed.proj.weight", source)[:2]
        out_channels = shape_of(state, "output.weight", source)[0]
        tokens, prior_dim = shape_of(state, "down_1.1.weight", source)[1], shape_of(state, "down_1.3.weight", source)[0]
        layers = {}
        for name in LAYERS:
            blocks = count_indexed(state, f"{name}.blocks.")
            first = f"{name}.blocks.0."
            layers[name] = LayerSpec(
                dim=shape_of(state, first + "attn.project_out.weight", source)[0],
                heads=shape_of(state, first + "attn.temperature", source)[0],
                blocks=blocks,
                hidden=shape_of(state, first + "ffn.project_out.weight", source)[1],
                him=f"{name}.him.q.weight" in state,
            )
        return cls(
            in_channels=in_channels, out_channels=out_channels, dim=dim, prior_dim=prior_dim,
            group=round(tokens ** 0.5), bias="encoder_level1.blocks.0.attn.qkv.bias" in state,
            with_bias_norm="encoder_level1.blocks.0.norm1.body.bias" in state,
            dual_pixel="skip_conv.weight" in state, layers=layers,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class Transformer(nn.Module):
    """The restoration network ``net_g``; ``forward(image, prior)`` with prior ``[B, group², prior_dim]``."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        c, tokens = config, config.group * config.group
        self.down_1 = PriorPool(tokens, tokens // 4, c.prior_dim)
        self.down_2 = PriorPool(tokens // 4, 1, c.prior_dim)
        self.patch_embed = PatchEmbed(c.in_channels, c.dim, c.bias)
        layer = lambda name: BasicLayer(c.layers[name], c.bias, c.with_bias_norm, c.prior_dim)
        self.encoder_level1 = layer("encoder_level1")
        self.down1_2 = Downsample(c.dim)
        self.encoder_level2 = layer("encoder_level2")
        self.down2_3 = Downsample(c.dim * 2)
        self.encoder_level3 = layer("encoder_level3")
        self.down3_4 = Downsample(c.dim * 4)
        self.latent = layer("latent")
        self.up4_3 = Upsample(c.dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(c.dim * 8, c.dim * 4, 1, bias=c.bias)
        self.decoder_level3 = layer("decoder_level3")
        self.up3_2 = Upsample(c.dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(c.dim * 4, c.dim * 2, 1, bias=c.bias)
        self.decoder_level2 = layer("decoder_level2")
        self.up2_1 = Upsample(c.dim * 2)
        self.decoder_level1 = layer("decoder_level1")
        self.refinement = layer("refinement")
        if c.dual_pixel:
            self.skip_conv = nn.Conv2d(c.dim, c.dim * 2, 1, bias=c.bias)
        self.output = nn.Conv2d(c.dim * 2, c.out_channels, 3, padding=1, bias=c.bias)

    def forward(self, image: torch.Tensor, prior: torch.Tensor, check: Callable[[], None] | None = None) -> torch.Tensor:
        """``check()`` runs after every strip and block (e.g. to raise on Cancel): on a whole large
        image one pass takes many seconds, a strip a small fraction of one."""
        token = _check.set(check)
        try:
            return self._forward(image, prior)
        finally:
            _check.reset(token)

    def _forward(self, image, prior):
        prior_1 = prior
        prior_2 = self.down_1(prior_1)
        prior_3 = self.down_2(prior_2).flatten(1)

        embedded = self.patch_embed(image)
        enc1 = self.encoder_level1(embedded, prior_1)
        enc2 = self.encoder_level2(self.down1_2(enc1), prior_2)
        enc3 = self.encoder_level3(self.down2_3(enc2), prior_2)
        latent = self.latent(self.down3_4(enc3), prior_3)

        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1))
        dec3 = self.decoder_level3(dec3, prior_2)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1))
        dec2 = self.decoder_level2(dec2, prior_2)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1), prior_1)
        dec1 = self.refinement(dec1, prior_1)

        if self.config.dual_pixel:
            return self.output(dec1 + self.skip_conv(embedded))
        return self.output(dec1) + image
