"""The MLP-Mixer block shared by HI-Diff's latent encoder and denoiser (official ``MLP``)."""
from torch import nn


class TokenMixer(nn.Module):
    """Mixes across the prior's tokens, then across channels, each with a pre-norm residual."""

    def __init__(self, tokens: int, dims: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.patch_mixer = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.channel_mixer = nn.Sequential(nn.Linear(dims, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dims))
        self.norm1 = nn.LayerNorm(dims)
        self.norm2 = nn.LayerNorm(dims)

    def forward(self, x):
        x = x + self.patch_mixer(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mixer(self.norm2(x))

    @staticmethod
    def sizes(state: dict, prefix: str) -> tuple[int, int, int, int]:
        """(tokens, dims, token_hidden, channel_hidden) of the mixer stored under ``prefix``."""
        token_hidden, tokens = state[prefix + "patch_mixer.0.weight"].shape
        channel_hidden, dims = state[prefix + "channel_mixer.0.weight"].shape
        return tokens, dims, token_hidden, channel_hidden
