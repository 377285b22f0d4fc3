"""OSDD's eVAE: an untrained one is the plain autoencoder bit for bit; trained skip blocks carry the
blurry image's features into the decoder; size mismatches fail clearly; tiling cuts the skips of every
level on the latent's grid."""
import pytest
import torch
import torch.nn.functional as F

from conftest import pack_module
from tiny_deblurdiff import single_thread  # noqa: F401  (autouse fixture)

sd21 = pack_module("models.sd21")
osdd = pack_module("models.osdd")


def tiny_evae(seed: int = 0, trained: bool = False):
    torch.manual_seed(seed)
    evae = osdd.EVAE(sd21.AutoencoderKL(sd21.VAEConfig(channels=32, channel_mult=(1, 1, 2, 2), num_res_blocks=1))).eval()
    if trained:  # what stage 1 would leave: non-zero last norms
        for block in evae.skips:
            torch.nn.init.normal_(block.norm2.weight, std=0.5)
            torch.nn.init.normal_(block.norm2.bias, std=0.1)
    return evae


def image(seed: int, h: int = 48, w: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_untrained_evae_is_the_plain_autoencoder_bit_for_bit():
    evae = tiny_evae()
    x = image(1)
    latent, skips = evae.encode_with_skips(x)
    assert torch.equal(latent, evae.vae.encode(x))
    sampled, _ = evae.encode_with_skips(x, torch.Generator().manual_seed(3))
    assert torch.equal(sampled, evae.vae.encode(x, torch.Generator().manual_seed(3)))
    assert [tuple(f.shape[1:]) for f in skips.features] == [(32, 48, 64), (32, 24, 32), (64, 12, 16), (64, 6, 8)]
    other = osdd.Skips([torch.randn_like(f) for f in skips.features], skips.latent_size)  # any content
    plain = evae.vae.decode(latent)
    assert torch.equal(evae.decode(latent, skips), plain)
    assert torch.equal(evae.decode(latent, other), plain)
    assert torch.equal(evae.decode(latent), plain)


@torch.no_grad()
def test_trained_skips_bring_the_blurry_features_into_the_decoder():
    evae = tiny_evae(trained=True)
    blurry, sharp = image(1), image(2)
    latent = evae.vae.encode(sharp)
    _, from_blurry = evae.encode_with_skips(blurry)
    _, from_sharp = evae.encode_with_skips(sharp)
    a, b = evae.decode(latent, from_blurry), evae.decode(latent, from_sharp)
    assert not torch.allclose(a, evae.vae.decode(latent), atol=1e-3)
    assert not torch.allclose(a, b, atol=1e-3)
    # one skip set serves a whole batch of latents (same image, several latents)
    single = from_blurry.select(slice(0, 1))
    both = evae.decode(latent, single)
    assert torch.allclose(both[0], a[0], atol=1e-5)


def test_skip_blocks_learn_from_the_blurry_features():
    evae = tiny_evae()
    evae.vae.requires_grad_(False)
    blurry, sharp = image(1, 32, 32, 4), image(2, 32, 32, 4)
    with torch.no_grad():
        latent = evae.vae.encode(sharp)
        _, skips = evae.encode_with_skips(blurry)
    optimiser = torch.optim.Adam(evae.skips.parameters(), 3e-3)
    losses = []
    for _ in range(12):
        loss = F.l1_loss(evae.decode(latent, skips), sharp)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 1e-3
    assert all(p.grad is None for p in evae.vae.parameters())


@torch.no_grad()
def test_mismatched_skips_are_named():
    evae = tiny_evae()
    latent = evae.vae.encode(image(1, 32, 32))
    _, skips = evae.encode_with_skips(image(1, 48, 64))
    with pytest.raises(osdd.SkipMismatch, match=r"64x48 image.*decode is 4x4 \(32x32\)"):
        evae.decode(latent, skips)
    with pytest.raises(osdd.SkipMismatch, match="3 levels"):
        evae.decode(latent, osdd.Skips(skips.features[:3], (4, 4)))
    other = osdd.EVAE(sd21.AutoencoderKL(sd21.VAEConfig(channels=32, channel_mult=(1, 1, 1, 1), num_res_blocks=1)))
    _, foreign = other.encode_with_skips(image(1, 32, 32))
    with pytest.raises(osdd.SkipMismatch, match="level 2 .*another eVAE"):
        evae.decode(latent, foreign)
    _, three = evae.encode_with_skips(image(1, 32, 32, batch=3))
    with pytest.raises(osdd.SkipMismatch, match="3 images but the latent batch is 2"):
        evae.decode(latent, three)
    with pytest.raises(osdd.SkipMismatch):
        evae.decode_tiled(latent, skips, 2, 1)


@torch.no_grad()
def test_tiling_cuts_every_skip_level_on_the_latent_grid():
    evae = tiny_evae(trained=True)
    x = image(4, 48, 64)
    whole_latent, whole_skips = evae.encode_with_skips(x)
    latent, skips = evae.encode_tiled(x, 512, 256)  # one tile: the whole image
    assert torch.equal(latent, whole_latent)
    assert all(torch.equal(a, b) for a, b in zip(skips.features, whole_skips.features))
    assert (evae.decode_tiled(latent, skips, 64, 32) - evae.decode(latent, skips)).abs().max() < 1e-5

    # with a position-exact stand-in for the networks, tiles must reproduce the whole result
    def local_encode(image, generator=None):
        pooled = [F.avg_pool2d(image[:, :1].expand(-1, c, -1, -1), 2 ** k)
                  for k, c in enumerate((32, 32, 64, 64))]
        return F.avg_pool2d(torch.cat([image, image[:, :1]], 1), 8), osdd.Skips(pooled, pooled[-1].shape[-2:])

    def local_decode(z, skips=None):
        up = lambda t, s: F.interpolate(t[:, :3], scale_factor=s, mode="nearest")
        return up(z, 8) + skips.features[0][:, :3] + up(skips.features[2], 4) + up(skips.features[3], 8)

    evae.encode_with_skips, evae.decode = local_encode, local_decode
    z, s = evae.encode_with_skips(x)
    tiled_z, tiled_s = evae.encode_tiled(x, 32, 16)
    assert torch.equal(tiled_z, z)
    assert all(torch.equal(a, b) for a, b in zip(tiled_s.features, s.features))
    assert torch.allclose(evae.decode_tiled(z, s, 2, 1), local_decode(z, s), atol=1e-6)


@torch.no_grad()
def test_half_precision_decoding_stays_close():
    evae = tiny_evae(trained=True)
    x = image(5, 32, 32, 1)
    latent, skips = evae.encode_with_skips(x)
    reference = evae.decode(latent, skips)
    evae.to(torch.bfloat16)
    latent16, skips16 = evae.encode_with_skips(x)
    assert skips16.features[0].dtype == torch.bfloat16
    assert (evae.decode(latent16, skips16) - reference).abs().mean() < 0.05
