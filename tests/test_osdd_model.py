"""OSDD's one-step model: the dual adapter's γ identities (γ = 1 / 0 are each adapter alone, a fixed γ is
the two LoRAs merged into the weights, per-image γ), the gate, the step's formula, the whole pass, and the
weights file (round trip, base fingerprint, bad files named)."""
import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import pack_module
from tiny_deblurdiff import single_thread  # noqa: F401  (autouse fixture)
from tiny_osdd import tiny_base, tiny_osdd, write_tiny_osdd

osdd = pack_module("models.osdd")
lora = pack_module("models.sd21.lora")
CheckpointError = pack_module("models.common.checkpoint").CheckpointError


@pytest.fixture
def base_path(tmp_path):
    return tmp_path / "checkpoints" / "tiny_sd21.safetensors"


def latent(batch=2, seed=1, size=8):
    return torch.randn(batch, 4, size, size, generator=torch.Generator().manual_seed(seed))


def merged_copy(model, scales: dict[str, float]):
    """A copy whose UNet has the adapters folded into its weights with these scales, others dropped."""
    other = copy.deepcopy(model)
    for layer in lora.lora_layers(other.unet).values():
        for name in list(layer.adapters):
            if name not in scales:
                del layer.adapters[name]
    for name, scale in scales.items():
        lora.set_scale(other.unet, name, scale)
    lora.merge_adapters(other.unet)
    lora.unwrap_lora(other.unet)
    assert not lora.lora_layers(other.unet)
    return other


@torch.no_grad()
def test_gamma_one_and_zero_are_each_adapter_alone_and_fixed_gamma_is_the_merge(base_path):
    model = tiny_osdd(base_path)
    z = latent()
    outputs = {g: model.step(z, g) for g in (1.0, 0.0, 0.3)}
    assert (outputs[1.0] - outputs[0.0]).abs().max() > 0.1  # the adapters differ
    # x0 at t = 999 divides ε by √ᾱ·scale ≈ 0.0124, so float32 rounding of ε shows ~80x larger here
    torch.testing.assert_close(outputs[1.0], merged_copy(model, {"real": 1.0}).step(z, 1.0), rtol=1e-4, atol=2e-3)
    torch.testing.assert_close(outputs[0.0], merged_copy(model, {"synthetic": 1.0}).step(z, 0.0), rtol=1e-4, atol=2e-3)
    merged = merged_copy(model, {"real": 0.3, "synthetic": 0.7})
    torch.testing.assert_close(outputs[0.3], merged.step(z, 0.3), rtol=1e-4, atol=2e-3)
    plain = merged_copy(model, {})
    assert (plain.step(z, 0.3) - outputs[0.3]).abs().max() > 0.1  # the merge is not the bare base


@torch.no_grad()
def test_per_image_gamma_equals_each_image_run_alone(base_path):
    model = tiny_osdd(base_path)
    z = latent()
    mixed = model.step(z, torch.tensor([1.0, 0.25]))
    torch.testing.assert_close(mixed[:1], model.step(z[:1], 1.0), rtol=1e-4, atol=2e-3)
    torch.testing.assert_close(mixed[1:], model.step(z[1:], 0.25), rtol=1e-4, atol=2e-3)
    assert (mixed[1:] - model.step(z[1:], 1.0)).abs().max() > 0.1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.step(z, 1.5)
    with pytest.raises(ValueError, match="one per image"):
        model.step(z, torch.tensor([0.5, 0.5, 0.5]))


@torch.no_grad()
def test_step_is_the_x0_formula_at_timestep_999(base_path):
    model = tiny_osdd(base_path)
    z = latent(1)
    osdd.set_gamma(model.unet, 0.6)
    z_t = z * model.latent_scale
    eps = model.unet(z_t, torch.tensor([999.0]), encoder_hidden_states=model.text(1), return_dict=False)[0]
    a = model.schedule.alphas_cumprod[999].item()
    expected = (z_t - (1 - a) ** 0.5 * eps) / a ** 0.5 / model.latent_scale
    torch.testing.assert_close(model.step(z, 0.6), expected, rtol=1e-4, atol=2e-3)
    assert torch.equal(model.step(z, 0.6), model.step(z, 0.6))  # deterministic


@torch.no_grad()
def test_gate_starts_at_one_half_and_then_depends_on_the_image(base_path):
    base = tiny_base(base_path)
    fresh = osdd.OSDD.fresh(base)
    _, skips = fresh.encode(torch.rand(2, 3, 32, 32))
    assert torch.equal(fresh.gamma_from(skips), torch.tensor([0.5, 0.5]))
    model = tiny_osdd(base_path)
    images = torch.stack([torch.zeros(3, 32, 32), torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))])
    gamma = model.gamma_from(model.encode(images)[1])
    assert ((gamma > 0) & (gamma < 1)).all() and abs(float(gamma[0] - gamma[1])) > 1e-4


@torch.no_grad()
def test_deblur_keeps_the_size_and_uses_the_skips(base_path):
    model = tiny_osdd(base_path)
    image = torch.rand(2, 3, 30, 45, generator=torch.Generator().manual_seed(3))
    out, gammas = osdd.deblur(model, image, "auto", torch.device("cpu"))
    assert out.shape == image.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert len(gammas) == 2 and all(0 < g < 1 for g in gammas)
    fixed, _ = osdd.deblur(model, image[:1], 0.5, torch.device("cpu"))
    padded, size = pack_module("models.common.padding").pad_to_multiple(image[:1], model.pad_multiple)
    z, skips = model.encode(padded)
    no_skips = model.decode(model.step(z, 0.5), None)[..., :30, :45]
    assert (fixed - no_skips).abs().max() > 1e-3
    tiled, _ = osdd.deblur(model, image[:1], 0.5, torch.device("cpu"), osdd.Tiling(32, 16))
    assert tiled.shape == fixed.shape and torch.isfinite(tiled).all()


@torch.no_grad()
def test_weights_round_trip_with_the_encoder_lora_merged(tmp_path, base_path):
    model = tiny_osdd(base_path, seed=4)
    path = tmp_path / "deblur" / "OSDD" / "tiny.safetensors"
    osdd.save_osdd(model, str(path), source="test")
    state = load_file(str(path))
    assert any(k.startswith("vae_lora.encoder.") for k in state) and "text.embedding" in state
    loaded = osdd.load_osdd(str(path), tiny_base(base_path))
    assert not lora.lora_layers(loaded.evae.vae)  # merged
    assert osdd.is_osdd_file(str(path)) and osdd.find_osdd_models(str(tmp_path / "deblur")) == ["OSDD/tiny.safetensors"]
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    expected, g1 = osdd.deblur(model, image, "auto", torch.device("cpu"))
    got, g2 = osdd.deblur(loaded, image, "auto", torch.device("cpu"))
    assert g1 == pytest.approx(g2, abs=1e-5)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_another_base_and_bad_files_are_named(tmp_path, base_path):
    path = write_tiny_osdd(tmp_path / "osdd.safetensors", base_path)
    other = tiny_base(tmp_path / "other.safetensors", seed=9)
    with pytest.raises(CheckpointError, match="osdd.safetensors: was trained on another base"):
        osdd.load_osdd(path, other)
    osdd.load_osdd(path, tiny_base(tmp_path / "other.safetensors", seed=9), check_base=False)

    state = load_file(path)
    metadata = dict(__import__("safetensors").safe_open(path, "pt").metadata())

    def broken(name, change=None, meta=None):
        s = dict(state)
        if change:
            change(s)
        target = str(tmp_path / name)
        save_file(s, target, metadata=meta or metadata)
        return target

    cases = [
        (broken("stray.safetensors", lambda s: s.update({"unet.conv_in.weight": torch.zeros(1)})), "belong to no OSDD part"),
        (broken("nogate.safetensors", lambda s: [s.pop(k) for k in list(s) if k.startswith("gate.")]), "no gate weights"),
        (broken("rank.safetensors", lambda s: s.update({k: torch.zeros(3, 3) for k in s if k.startswith("unet_lora.real.") and k.endswith("to_q.lora_up.weight")})),
         "LoRA up of .*to_q"),
        (broken("skips.safetensors", lambda s: s.update({"skips.0.skip_conv.weight": torch.zeros(8, 8, 1, 1)})), "shape mismatches"),
        (broken("method.safetensors", meta={**metadata, "method": "fidediff"}), "'fidediff' model, not OSDD"),
        (broken("version.safetensors", meta={**metadata, "format_version": "9"}), "format version '9'"),
    ]
    base = tiny_base(base_path)
    for target, message in cases:
        with pytest.raises(CheckpointError, match=message):
            osdd.load_osdd(target, base)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(open(path, "rb").read()[:200])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        osdd.load_osdd(str(truncated), base)
    with pytest.raises(CheckpointError, match="made by tools/train_osdd.py"):
        osdd.load_osdd(str(tmp_path / "model.pth"), base)
