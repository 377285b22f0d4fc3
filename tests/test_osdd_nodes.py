"""OSDD nodes with a tiny base and tiny weights: listing and loading (base from the host's checkpoints
folder), the one-node deblur (alpha, grey, determinism, Cancel), the stages equal to the one node, eVAE Decode
on foreign latents (a plain LATENT dict) and mismatched sizes, auto γ needing the skips."""
import pytest
import torch

from conftest import pack_module
from tiny_deblurdiff import single_thread  # noqa: F401  (autouse fixture)
from tiny_osdd import write_tiny_osdd

nodes = pack_module("nodes.osdd")
host = pack_module("nodes.host")
osdd = pack_module("models.osdd")
BASE = "checkpoints/v2-1_512-ema-pruned.safetensors"
WEIGHTS = "OSDD/tiny_osdd.safetensors"


@pytest.fixture
def handle(models_dir, monkeypatch):
    checkpoints = models_dir.parent / "checkpoints"
    monkeypatch.setenv("COMFYUI_DEBLUR_CHECKPOINTS", str(checkpoints))
    write_tiny_osdd(models_dir / WEIGHTS, checkpoints / BASE.split("/")[1])
    assert BASE in pack_module("models.sd21.base_files").base_choices()
    assert nodes.list_weights() == [WEIGHTS]
    (loaded,) = nodes.OSDDLoader().load(BASE, WEIGHTS, "auto")
    return loaded


def image(seed=0, h=30, w=40, c=3, batch=1):
    return torch.rand(batch, h, w, c, generator=torch.Generator().manual_seed(seed))


def test_missing_files_are_explained(models_dir, monkeypatch):
    monkeypatch.setenv("COMFYUI_DEBLUR_CHECKPOINTS", "")
    assert nodes.list_weights() == [nodes.NO_WEIGHTS]
    assert nodes.OSDDLoader.INPUT_TYPES()["required"]["base"][0] == [nodes.NO_BASE]
    with pytest.raises(FileNotFoundError, match="models/checkpoints"):
        nodes.OSDDLoader().load(nodes.NO_BASE, nodes.NO_WEIGHTS)
    with pytest.raises(FileNotFoundError, match="tools/train_osdd.py"):
        nodes.OSDDLoader().load(BASE, nodes.NO_WEIGHTS)


def test_deblur_keeps_alpha_and_grey_and_is_deterministic(handle):
    rgba = image(0, c=4)
    (out,) = nodes.OSDDDeblur().deblur(handle, rgba)
    assert out.shape == rgba.shape and torch.equal(out[..., 3], rgba[..., 3]) and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out[..., :3], rgba[..., :3])
    assert torch.equal(nodes.OSDDDeblur().deblur(handle, rgba)[0], out)
    (grey,) = nodes.OSDDDeblur().deblur(handle, image(1, c=1), "fixed", 0.3)
    assert grey.shape == (1, 30, 40, 1)
    (tiled,) = nodes.OSDDDeblur().deblur(handle, image(2, 40, 56), "fixed", 0.3, True, 64, 32)
    assert tiled.shape == (1, 40, 56, 3)


def test_stages_equal_the_one_node(handle):
    picture = image(3, batch=2)
    latent, skips = nodes.EVAEEncode().encode(handle, picture)
    assert latent["samples"].shape == (2, 4, 4, 6) and latent[nodes.SIZE_KEY] == [30, 40]  # padded to 32x48
    for mode, gamma in (("auto", 0.5), ("fixed", 0.8)):
        (sharp,) = nodes.OSDDOneStep().step(handle, latent, mode, gamma, skips=skips)
        (stages,) = nodes.EVAEDecode().decode(handle, sharp, skips=skips)
        (whole,) = nodes.OSDDDeblur().deblur(handle, picture, mode, gamma)
        torch.testing.assert_close(stages, whole, rtol=0, atol=1e-5)
    (plain,) = nodes.EVAEDecode().decode(handle, sharp)  # no skips: the plain SD decoder
    assert plain.shape == (2, 30, 40, 3) and (plain - stages).abs().max() > 1e-3


def test_decode_takes_any_latent_of_the_right_size_and_names_a_wrong_one(handle):
    _, skips = nodes.EVAEEncode().encode(handle, image(4))
    foreign = {"samples": torch.randn(1, 4, 4, 6)}  # e.g. a KSampler's LATENT: nothing but samples
    (out,) = nodes.EVAEDecode().decode(handle, foreign, skips=skips)
    assert out.shape == (1, 30, 40, 3)
    with pytest.raises(ValueError, match=r"48x32 image\) but the latent to decode is 4x4 \(32x32\)"):
        nodes.EVAEDecode().decode(handle, {"samples": torch.randn(1, 4, 4, 4)}, skips=skips)
    with pytest.raises(ValueError, match="SD 2.x LATENT"):
        nodes.EVAEDecode().decode(handle, {"samples": torch.randn(1, 16, 4, 6)}, skips=skips)
    with pytest.raises(ValueError, match="EVAE_SKIPS"):
        nodes.EVAEDecode().decode(handle, foreign, skips="not skips")


def test_auto_gamma_needs_skips_and_a_prompt_can_replace_the_stored_one(handle):
    latent, skips = nodes.EVAEEncode().encode(handle, image(5))
    with pytest.raises(ValueError, match="needs the skips"):
        nodes.OSDDOneStep().step(handle, latent, "auto", 0.5)
    (stored,) = nodes.OSDDOneStep().step(handle, latent, "fixed", 0.5)
    conditioning = [[torch.randn(1, 77, 32), {}]]
    (prompted,) = nodes.OSDDOneStep().step(handle, latent, "fixed", 0.5, positive=conditioning)
    assert (stored["samples"] - prompted["samples"]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="cross-attends to width 32"):
        nodes.OSDDOneStep().step(handle, latent, "fixed", 0.5, positive=[[torch.randn(1, 77, 1024), {}]])


def test_cancel_stops_between_images(handle, monkeypatch):
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 1:
            raise InterruptedError("cancelled")

    monkeypatch.setattr(host, "check_interrupt", interrupt)
    with pytest.raises(InterruptedError):
        nodes.OSDDDeblur().deblur(handle, image(6, batch=3))
    assert len(calls) == 2
    assert next(handle.model.unet.parameters()).device == host.offload_device()


def test_half_precision_stays_close(handle, models_dir):
    picture = image(7)
    (reference,) = nodes.OSDDDeblur().deblur(handle, picture, "fixed", 0.5)
    (half,) = nodes.OSDDLoader().load(BASE, WEIGHTS, "bf16")
    assert next(half.model.unet.parameters()).dtype == torch.bfloat16
    (out,) = nodes.OSDDDeblur().deblur(half, picture, "fixed", 0.5)
    assert (out - reference).abs().mean() < 0.05


def test_out_of_memory_retries_in_tiles(handle, monkeypatch):
    real, tilings = nodes.deblur, []

    def deblur(model, image, gamma, device, tiling=None, *args):
        tilings.append(tiling)
        if tiling is None or tiling.tile > 256:
            raise MemoryError("out of memory")
        return real(model, image, gamma, device, tiling, *args)

    monkeypatch.setattr(nodes, "deblur", deblur)
    monkeypatch.setattr(host, "is_out_of_memory", lambda error: isinstance(error, MemoryError))
    (out,) = nodes.OSDDDeblur().deblur(handle, image(8), "fixed", 0.5)
    assert out.shape == (1, 30, 40, 3)
    assert [t.tile if t else None for t in tilings] == [None, 512, 256]
    tilings.clear()
    monkeypatch.setattr(nodes, "deblur", lambda model, image, gamma, device, tiling=None, *args: tilings.append(tiling) or 1 / 0)
    monkeypatch.setattr(host, "is_out_of_memory", lambda error: isinstance(error, ZeroDivisionError))
    with pytest.raises(ZeroDivisionError):  # already at the smallest tiles: the error stands
        nodes.OSDDDeblur().deblur(handle, image(8), "fixed", 0.5, True, 1024, 512)
    assert [t.tile for t in tilings] == [1024, 512, 256]


def test_deblur_and_evae_decode_honour_mask_and_strength(handle):
    from blend_checks import check_node_blends

    picture = image(4)
    check_node_blends(lambda **kw: nodes.OSDDDeblur().deblur(handle, picture, "fixed", 0.5, **kw)[0], picture)
    latent, skips = nodes.EVAEEncode().encode(handle, picture)
    (sharp,) = nodes.OSDDOneStep().step(handle, latent, "fixed", 0.5)
    check_node_blends(lambda **kw: nodes.EVAEDecode().decode(handle, sharp, skips=skips, **kw)[0], picture)
    with pytest.raises(ValueError, match="skips"):
        nodes.EVAEDecode().decode(handle, sharp, strength=0.3)
