"""The shared Stable Diffusion 2.x parts: tokenizer, sampler tables and attention windows against the
official DeblurDiff/DiffBIR code (tests/golden/make_deblurdiff_golden.py), key conversion round
trips, configurations read from shapes (tiny and full size), tiled autoencoder mechanics."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import pack_module
from random_weights import random_state_dict
from tiny_deblurdiff import single_thread, GOLDEN_FILE, manifest, micro_config, official_shapes  # noqa: F401  (single_thread: autouse fixture)

sd21 = pack_module("models.sd21")
dd = pack_module("models.deblurdiff")
TABLES = torch.load(GOLDEN_FILE, weights_only=True)["tables"]


def test_tokenizer_matches_openclip():
    tokenizer = sd21.CLIPTokenizer()
    assert torch.equal(tokenizer(TABLES["tokens"]["texts"]), TABLES["tokens"]["ids"])


def test_empty_prompt_needs_no_vocabulary(tmp_path):
    tokenizer = sd21.CLIPTokenizer(str(tmp_path / "absent.txt.gz"))
    tokens = tokenizer(["", "   "])
    assert tokens[:, :2].tolist() == [[49406, 49407]] * 2 and not tokens[:, 2:].any()
    with pytest.raises(FileNotFoundError):
        tokenizer("a word")


def test_spaced_timesteps_match_diffbir():
    for steps, expected in TABLES["timesteps"].items():
        assert sd21.spaced_timesteps(1000, int(steps)) == expected


def test_attention_windows_match_official_grids():
    for key, offsets in TABLES["windows"].items():
        size, k = key.split("/")
        h, w = map(int, size.split("x"))
        expected = [tuple(o) for o in offsets]
        assert [(i, j) for i in sd21.window_starts(h, int(k)) for j in sd21.window_starts(w, int(k))] == expected, key


def test_sampler_coefficients_and_noising():
    schedule = sd21.DDPMSchedule()
    assert schedule.betas[0] == pytest.approx(0.00085) and schedule.betas[-1] == pytest.approx(0.012)
    sampler = sd21.SpacedSampler(schedule, 4)
    assert [t for _, t in sampler.schedule()] == [999, 666, 333, 0]
    x0, noise = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    xt = schedule.q_sample(x0, 999, noise)
    a = schedule.alphas_cumprod[999]
    assert torch.allclose(xt, math.sqrt(a) * x0 + math.sqrt(1 - a) * noise, atol=1e-6)
    # eps equal to the true noise recovers x0 (up to float32) in the last step
    ac0 = schedule.alphas_cumprod[0]
    x = math.sqrt(ac0) * x0 + math.sqrt(1 - ac0) * noise
    assert torch.allclose(sampler.step(x, 0, noise, torch.randn_like(x)), x0, atol=1e-5)
    with pytest.raises(ValueError):
        sd21.SpacedSampler(schedule, 1001)


def _unet_ldm_state(config, seed=0):
    """An LDM-layout state for a UNet config, via our modules on the meta device and the inverse conversion."""
    with torch.device("meta"):
        module = sd21.build_unet(config) if config.out_channels else sd21.HintControlNet(config)
    shapes = {k: list(v.shape) for k, v in sd21.unet_to_ldm(module.state_dict(), config, control=not config.out_channels).items()}
    return random_state_dict(shapes, seed)


@pytest.mark.parametrize("part", ["unet", "controlnet", "lkpn"])
def test_unet_conversion_round_trip_and_config_from_shapes(part):
    config = getattr(micro_config(), part)
    control = part == "controlnet"
    ldm = _unet_ldm_state(config)
    assert sd21.UNetConfig.from_ldm(ldm, "test", control=control) == config
    diffusers_state = sd21.unet_to_diffusers(ldm, config, control=control)
    module = sd21.HintControlNet(config) if control else sd21.build_unet(config)
    module.load_state_dict(diffusers_state, strict=True)
    back = sd21.unet_to_ldm(diffusers_state, config, control=control)
    assert back.keys() == ldm.keys() and all(back[k] is ldm[k] for k in ldm)


def test_vae_conversion_round_trip():
    config = micro_config().vae
    vae = sd21.AutoencoderKL(config)
    levels, blocks = len(config.channel_mult), config.num_res_blocks
    ldm = sd21.vae_to_ldm(vae.state_dict(), levels, blocks)
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)  # 1x1 convolutions in LDM
    assert "decoder.up.0.block.1.conv1.weight" in ldm and "decoder.up.3.upsample.conv.weight" in ldm
    assert sd21.VAEConfig.from_ldm(ldm, "test") == config
    back = sd21.vae_to_diffusers(ldm, levels, blocks)
    assert back.keys() == vae.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in vae.state_dict().items())


def test_inverse_conversion_gives_the_official_layout():
    """Our modules, configured from the official tiny checkpoint's shapes and converted back, have
    exactly the official keys and shapes (the manifest was written from the official ControlLDM)."""
    shapes = manifest("tiny")
    state = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    config = dd.loader.config_from_official(dd.loader.split_parts(state, dd.loader.OFFICIAL_PREFIXES, "tiny"), "tiny")
    assert official_shapes(config) == shapes


def test_full_size_configuration_from_shapes():
    """The official configuration (configs/inference/cldm.yaml + LKPN) read off its shapes alone."""
    shapes = manifest("full")
    state = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    config = dd.loader.config_from_official(dd.loader.split_parts(state, dd.loader.OFFICIAL_PREFIXES, "full"), "full")
    unet, lkpn = config.unet, config.lkpn
    assert (unet.model_channels, unet.channel_mult, unet.num_res_blocks, unet.attention) == (320, (1, 2, 4, 4), 2, (True, True, True, False))
    assert unet.heads == (5, 10, 20, 20) and unet.context_dim == 1024 and unet.linear_projection
    assert config.controlnet.in_channels == 12 and config.controlnet.widths == unet.widths
    assert (lkpn.in_channels, lkpn.out_channels, lkpn.model_channels, lkpn.heads) == (8, 100, 128, (2, 4, 8, 8))
    assert (config.vae.channels, config.vae.channel_mult, config.vae.num_res_blocks) == (128, (1, 2, 4, 4), 2)
    text = config.text_encoder
    assert (text.width, text.layers, text.heads, text.mlp_width, text.vocab_size) == (1024, 24, 16, 4096, 49408)
    assert official_shapes(config) == shapes


def test_tiles_cover_and_blend_exactly():
    assert sd21.sliding_tiles(16, 12, 8, 4) == [(r, r + 8, c, c + 8) for r in (0, 4, 8) for c in (0, 4)]
    assert sd21.sliding_tiles(6, 20, 8, 4) == [(0, 6, c, c + 8) for c in (0, 4, 8, 12)]
    weights = sd21.gaussian_weights(6, 4)
    x, y = torch.arange(6.0), torch.arange(4.0)
    gx = torch.exp(-(x - 2.5) ** 2 / 36 / 0.02) / math.sqrt(2 * math.pi * 0.01)
    gy = torch.exp(-(y - 2.0) ** 2 / 16 / 0.02) / math.sqrt(2 * math.pi * 0.01)
    assert torch.allclose(weights, gy[:, None] * gx[None], rtol=1e-5)
    field = torch.randn(1, 4, 20, 28)
    blended = sd21.tiled_prediction(lambda b: field[:, :, b[0]:b[1], b[2]:b[3]], field, 8, 4)
    assert torch.allclose(blended, field, atol=1e-6)


def test_tiled_autoencoder_mechanics():
    vae = sd21.AutoencoderKL(micro_config().vae)
    image = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = vae.encode(image)
        assert torch.equal(vae.encode_tiled(image, 512, 256), whole)  # one tile = the whole image
        assert (vae.decode_tiled(whole, 64, 32) - vae.decode(whole)).abs().max() < 1e-5
        # with local stand-ins for the networks, tiles reproduce the whole image exactly
        vae.encode = lambda x, generator=None: F.avg_pool2d(torch.cat([x, x[:, :1]], 1), 8)
        vae.decode = lambda z: F.interpolate(z[:, :3], scale_factor=8, mode="nearest")
        z = vae.encode(image)
        assert torch.equal(vae.encode_tiled(image, 64, 32), z)
        assert torch.allclose(vae.decode_tiled(z, 4, 2), vae.decode(z), atol=1e-6)


def test_posterior_sampling_is_seeded():
    vae = sd21.AutoencoderKL(micro_config().vae)
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = vae.encode(image, torch.Generator().manual_seed(5))
        b = vae.encode(image, torch.Generator().manual_seed(5))
        mean, logvar = vae.moments(image)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.allclose(a, mean + torch.exp(0.5 * logvar) * noise)


def test_low_frequency_keeps_constants_and_removes_detail():
    flat = torch.full((1, 3, 40, 40), 0.3)
    assert torch.allclose(sd21.low_frequency(flat), flat)
    checker = (torch.arange(40)[:, None] + torch.arange(40)[None]) % 2
    low = sd21.low_frequency(checker.float().expand(1, 3, 40, 40))
    assert low.std() < 0.05 and abs(low.mean() - 0.5) < 0.05
