"""Key conversion between the original Stable Diffusion layouts (LDM / DiffBIR UNet and ControlNet,
LDM ``AutoencoderKL``) and diffusers' module names, both ways.

Each converter builds a table of key prefixes for the given sizes and renames every key through it;
the inverse uses the same table backwards, so ``to_ldm(to_diffusers(s)) == s`` key for key. Tensors
are not copied, except the VAE attention weights, which are 1x1 convolutions in LDM and linear
layers in diffusers (a reshape, i.e. a view).
"""
from __future__ import annotations

from ..common.checkpoint import CheckpointError
from .unet import UNetConfig

# LDM ResBlock sub-modules -> diffusers ResnetBlock2D
RESNET = {"in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
          "out_layers.0.": "norm2.", "out_layers.3.": "conv2.", "skip_connection.": "conv_shortcut."}
# LDM VAE ResnetBlock -> diffusers (only the shortcut is named differently)
VAE_RESNET = {"nin_shortcut.": "conv_shortcut."}
# LDM VAE AttnBlock -> diffusers Attention
VAE_ATTENTION = {"norm.": "group_norm.", "q.": "to_q.", "k.": "to_k.", "v.": "to_v.", "proj_out.": "to_out.0."}


def _unet_table(config: UNetConfig, control: bool) -> dict[str, tuple[str, dict]]:
    """LDM prefix -> (diffusers prefix, sub-key renames)."""
    n, levels = config.num_res_blocks, len(config.channel_mult)
    table = {"time_embed.0.": ("time_embedding.linear_1.", {}), "time_embed.2.": ("time_embedding.linear_2.", {}),
             "input_blocks.0.0.": ("conv_in.", {}),
             "middle_block.0.": ("mid_block.resnets.0.", RESNET), "middle_block.1.": ("mid_block.attentions.0.", {}),
             "middle_block.2.": ("mid_block.resnets.1.", RESNET)}
    for level in range(levels):
        for j in range(n):
            index = 1 + level * (n + 1) + j
            table[f"input_blocks.{index}.0."] = (f"down_blocks.{level}.resnets.{j}.", RESNET)
            if config.attention[level]:
                table[f"input_blocks.{index}.1."] = (f"down_blocks.{level}.attentions.{j}.", {})
        if level < levels - 1:
            table[f"input_blocks.{(level + 1) * (n + 1)}.0.op."] = (f"down_blocks.{level}.downsamplers.0.conv.", {})
    if control:
        for k in range(1 + levels * (n + 1) - 1):
            table[f"zero_convs.{k}.0."] = (f"controlnet_down_blocks.{k}.", {})
        table["middle_block_out.0."] = ("controlnet_mid_block.", {})
        return table
    for up in range(levels):
        level = levels - 1 - up
        for j in range(n + 1):
            index = up * (n + 1) + j
            table[f"output_blocks.{index}.0."] = (f"up_blocks.{up}.resnets.{j}.", RESNET)
            if config.attention[level]:
                table[f"output_blocks.{index}.1."] = (f"up_blocks.{up}.attentions.{j}.", {})
            if level > 0 and j == n:
                slot = 2 if config.attention[level] else 1
                table[f"output_blocks.{index}.{slot}.conv."] = (f"up_blocks.{up}.upsamplers.0.conv.", {})
    table["out.0."] = ("conv_norm_out.", {})
    table["out.2."] = ("conv_out.", {})
    return table


def _vae_table(levels: int, res_blocks: int) -> dict[str, tuple[str, dict]]:
    table = {}
    for side in ("encoder", "decoder"):
        table[f"{side}.conv_in."] = (f"{side}.conv_in.", {})
        table[f"{side}.conv_out."] = (f"{side}.conv_out.", {})
        table[f"{side}.norm_out."] = (f"{side}.conv_norm_out.", {})
        table[f"{side}.mid.block_1."] = (f"{side}.mid_block.resnets.0.", VAE_RESNET)
        table[f"{side}.mid.block_2."] = (f"{side}.mid_block.resnets.1.", VAE_RESNET)
        table[f"{side}.mid.attn_1."] = (f"{side}.mid_block.attentions.0.", VAE_ATTENTION)
    for level in range(levels):
        for j in range(res_blocks):
            table[f"encoder.down.{level}.block.{j}."] = (f"encoder.down_blocks.{level}.resnets.{j}.", VAE_RESNET)
        if level < levels - 1:
            table[f"encoder.down.{level}.downsample.conv."] = (f"encoder.down_blocks.{level}.downsamplers.0.conv.", {})
        up = levels - 1 - level  # diffusers counts decoder levels from the deepest
        for j in range(res_blocks + 1):
            table[f"decoder.up.{level}.block.{j}."] = (f"decoder.up_blocks.{up}.resnets.{j}.", VAE_RESNET)
        if level > 0:
            table[f"decoder.up.{level}.upsample.conv."] = (f"decoder.up_blocks.{up}.upsamplers.0.conv.", {})
    table["quant_conv."] = ("quant_conv.", {})
    table["post_quant_conv."] = ("post_quant_conv.", {})
    return table


def _rename(state: dict, table: dict[str, tuple[str, dict]], source: str, reverse: bool) -> dict:
    if reverse:
        table = {new: (old, {v: k for k, v in subs.items()}) for old, (new, subs) in table.items()}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        for n in range(min(len(parts) - 1, 6), 0, -1):
            prefix = ".".join(parts[:n]) + "."
            if prefix in table:
                target, subs = table[prefix]
                rest = key[len(prefix):]
                for old, new in subs.items():
                    if rest.startswith(old):
                        rest = new + rest[len(old):]
                        break
                out[target + rest] = value
                break
        else:
            raise CheckpointError(source, f"unexpected entry {key!r} for this architecture")
    return out


def unet_to_diffusers(state: dict, config: UNetConfig, source: str = "unet", control: bool = False) -> dict:
    return _rename(state, _unet_table(config, control), source, reverse=False)


def unet_to_ldm(state: dict, config: UNetConfig, source: str = "unet", control: bool = False) -> dict:
    return _rename(state, _unet_table(config, control), source, reverse=True)


def _is_vae_attention_matrix(key: str) -> bool:
    return ".attentions.0.to_" in key and key.endswith(".weight") and "group_norm" not in key


def vae_to_diffusers(state: dict, levels: int, res_blocks: int, source: str = "vae") -> dict:
    out = _rename(state, _vae_table(levels, res_blocks), source, reverse=False)
    return {k: (v.reshape(v.shape[0], v.shape[1]) if _is_vae_attention_matrix(k) and v.ndim == 4 else v)
            for k, v in out.items()}


def vae_to_ldm(state: dict, levels: int, res_blocks: int, source: str = "vae") -> dict:
    state = {k: (v.reshape(*v.shape, 1, 1) if _is_vae_attention_matrix(k) and v.ndim == 2 else v)
             for k, v in state.items()}
    return _rename(state, _vae_table(levels, res_blocks), source, reverse=True)
