"""The OpenCLIP ViT-H/14 text tower that Stable Diffusion 2.x conditions on, read at its penultimate
layer (``FrozenOpenCLIPEmbedder(layer="penultimate")``): all blocks but the last, then ``ln_final``.

Parameter names are OpenCLIP's text half (``token_embedding``, ``positional_embedding``,
``transformer.resblocks.N.{ln_1,attn.in_proj_*,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}``,
``ln_final``, ``text_projection``, ``logit_scale``), so OpenCLIP / LDM checkpoints load without
renaming. The unused last block, projection and logit scale are kept so loading stays strict.
Attention is causal, through ``scaled_dot_product_attention``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common.state_dict import count_indexed, shape_of
from .unet import HEAD_CHANNELS


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 1024
    layers: int = 24
    mlp_width: int = 4096
    embed_dim: int = 1024
    skip_last: int = 1  # 1 = penultimate layer (SD 2.x), 0 = last

    @property
    def heads(self) -> int:
        return self.width // HEAD_CHANNELS if self.width % HEAD_CHANNELS == 0 else 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TextEncoderConfig":
        return cls(**data)

    @classmethod
    def from_state_dict(cls, state: dict, source: str, skip_last: int = 1) -> "TextEncoderConfig":
        vocab, width = shape_of(state, "token_embedding.weight", source)
        return cls(vocab, shape_of(state, "positional_embedding", source)[0], width,
                   count_indexed(state, "transformer.resblocks."),
                   shape_of(state, "transformer.resblocks.0.mlp.c_fc.weight", source)[0],
                   shape_of(state, "text_projection", source)[1], skip_last)


class _Attention(nn.Module):
    """``nn.MultiheadAttention``'s parameters (packed q/k/v), computed with SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, mlp_width))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(mlp_width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(_Block(config.width, config.heads, config.mlp_width) for _ in range(config.layers))


class OpenCLIPTextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.transformer = _Transformer(config)
        self.ln_final = nn.LayerNorm(config.width)
        self.text_projection = nn.Parameter(torch.empty(config.width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """OpenCLIP's initialisation (only matters for models made from scratch, e.g. in tests)."""
        width = self.config.width
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.zeros_(block.attn.in_proj_bias)
        nn.init.normal_(self.text_projection, std=width ** -0.5)
        self.logit_scale.fill_(math.log(1 / 0.07))

    @property
    def dtype(self) -> torch.dtype:
        return self.positional_embedding.dtype

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, context_length]`` token ids → ``[B, context_length, width]`` hidden states."""
        x = self.token_embedding(tokens) + self.positional_embedding
        blocks = self.transformer.resblocks
        for block in blocks[:len(blocks) - self.config.skip_last]:
            x = block(x)
        return self.ln_final(x)
