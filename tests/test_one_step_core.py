"""The one-step core shared by FideDiff and OSDD: LoRA (merge, zero-init, per-sample scales, peft
keys), the one-step formula, loading SD 2.x bases from the three layouts, the training parts."""
import math

import pytest
import torch

from conftest import pack_module
from tiny_deblurdiff import micro_config, single_thread, write_model, micro_state  # noqa: F401  (single_thread: autouse fixture)
from tiny_sd import single_file_state, tiny_states, write_diffusers_folder, write_single_file

sd21 = pack_module("models.sd21")
lora = pack_module("models.sd21.lora")
training = pack_module("models.sd21.training")
CheckpointError = pack_module("models.common.checkpoint").CheckpointError


def tiny_unet(seed=0):
    unet = sd21.build_unet(micro_config().unet)
    unet.load_state_dict(tiny_states(seed)[0])
    return unet.eval()


def unet_inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 8, 8, generator=g), torch.tensor([200.0] * batch),
            torch.randn(batch, 77, 32, generator=g))


def run(unet, inputs):
    z, t, context = inputs
    with torch.no_grad():
        return unet(z, t, encoder_hidden_states=context, return_dict=False)[0]


def randomize_up(model, name, seed=3):
    g = torch.Generator().manual_seed(seed)
    for layer in lora.lora_layers(model).values():
        if name in layer.adapters:
            up = layer.adapters[name].up.weight
            with torch.no_grad():
                up.copy_(torch.randn(up.shape, generator=g) * 0.05)


def test_zero_up_lora_is_the_base_exactly():
    unet, inputs = tiny_unet(), unet_inputs()
    before = run(unet, inputs)
    wrapped = lora.inject_lora(unet, "a", rank=4)
    assert any(n.endswith("attn1.to_q") for n in wrapped) and any(n.endswith("conv1") for n in wrapped)
    assert any(n.endswith("ff.net.0.proj") for n in wrapped) and "conv_in" in wrapped
    assert torch.equal(run(unet, inputs), before)


def test_merged_equals_unmerged_and_two_adapters_add():
    unet, inputs = tiny_unet(), unet_inputs()
    base = run(unet, inputs)
    wrapped = lora.inject_lora(unet, "a", rank=4, alpha=8)
    assert lora.inject_lora(unet, "b", rank=2) == wrapped  # a second adapter goes on the same layers
    assert all(set(layer.adapters) == {"a", "b"} for layer in lora.lora_layers(unet).values())
    randomize_up(unet, "a", 3)
    randomize_up(unet, "b", 4)
    lora.set_scale(unet, "a", 0.7)
    lora.set_scale(unet, "b", 0.3)
    unmerged = run(unet, inputs)
    assert (unmerged - base).abs().max() > 1e-3  # the adapters do something
    lora.merge_adapters(unet)
    lora.unwrap_lora(unet)
    assert not lora.lora_layers(unet)
    merged = run(unet, inputs)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)


def test_per_sample_scales_mix_adapters_per_image():
    unet, inputs = tiny_unet(), unet_inputs(batch=2)
    lora.inject_lora(unet, "deblur", rank=4)
    lora.inject_lora(unet, "sharp", rank=4)
    randomize_up(unet, "deblur", 5)
    randomize_up(unet, "sharp", 6)
    gamma = torch.tensor([1.0, 0.25])
    lora.set_scale(unet, "deblur", gamma)
    lora.set_scale(unet, "sharp", 1 - gamma)
    mixed = run(unet, inputs)
    z, t, context = inputs
    for i, g in enumerate(gamma.tolist()):
        lora.set_scale(unet, "deblur", g)
        lora.set_scale(unet, "sharp", 1 - g)
        single = run(unet, (z[i:i + 1], t[i:i + 1], context[i:i + 1]))
        torch.testing.assert_close(mixed[i:i + 1], single, rtol=1e-4, atol=1e-5)
    lora.set_scale(unet, "deblur", torch.tensor([1.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match="per-sample scale"):
        run(unet, inputs)
    with pytest.raises(ValueError, match="cannot be merged"):
        lora.merge_adapters(unet)


def test_pack_state_round_trip_and_bad_adapters():
    unet, inputs = tiny_unet(), unet_inputs()
    lora.inject_lora(unet, "a", rank=4, alpha=2)
    randomize_up(unet, "a")
    expected = run(unet, inputs)
    state = lora.adapter_state(unet, "a")
    fresh = tiny_unet()
    assert lora.load_adapter(fresh, state, "a", "adapter.safetensors") == 4
    torch.testing.assert_close(run(fresh, inputs), expected, rtol=0, atol=0)
    bad = dict(state)
    key = next(k for k in bad if k.endswith("lora_up.weight"))
    bad[key] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="adapter.safetensors.*lora_up|up of"):
        lora.load_adapter(tiny_unet(), bad, "a", "adapter.safetensors")
    with pytest.raises(CheckpointError, match="not a linear"):
        lora.load_adapter(tiny_unet(), {"nothing.lora_down.weight": torch.zeros(1, 1), "nothing.lora_up.weight": torch.zeros(1, 1)},
                          "a", "adapter.safetensors")


def test_peft_trained_adapter_loads_without_peft():
    peft = pytest.importorskip("peft")  # installed by .ci/run; training needs it anyway
    unet, inputs = tiny_unet(), unet_inputs()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(sd21.UNET_TARGETS), init_lora_weights="gaussian")
    model = peft.get_peft_model(unet, config)
    g = torch.Generator().manual_seed(9)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    with torch.no_grad():
        expected = model(inputs[0], inputs[1], encoder_hidden_states=inputs[2], return_dict=False)[0]
    peft_state = peft.get_peft_model_state_dict(model)
    pack_state = lora.peft_to_pack(peft_state, alpha=8)
    fresh = tiny_unet()
    lora.load_adapter(fresh, pack_state, "default", "peft")
    torch.testing.assert_close(run(fresh, inputs), expected, rtol=1e-4, atol=1e-5)
    back, alphas = lora.pack_to_peft(pack_state)
    assert set(alphas.values()) == {8.0} and len(back) == len(peft_state)
    # a full state_dict of the wrapped model carries adapter names and base_layer keys
    full = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert lora.peft_to_pack(full, alpha=8, adapter="default").keys() == pack_state.keys()


def hand_alpha_bar(t: int) -> float:
    betas = [(math.sqrt(0.00085) + (math.sqrt(0.012) - math.sqrt(0.00085)) * i / 999) ** 2 for i in range(1000)]
    value = 1.0
    for beta in betas[:t + 1]:
        value *= 1 - beta
    return value


def test_one_step_formula_against_a_hand_computation():
    schedule = sd21.OneStepSchedule()
    assert abs(float(schedule.alpha_bar(200)) - hand_alpha_bar(200)) < 1e-12
    assert abs(float(schedule.alpha_bar(200)) - 0.7537) < 1e-4  # the notes' table
    half = (hand_alpha_bar(200) + hand_alpha_bar(201)) / 2
    assert abs(float(schedule.alpha_bar(200.5)) - half) < 1e-12
    z, eps = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3, dtype=torch.float64)
    a = hand_alpha_bar(120)
    expected = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
    torch.testing.assert_close(schedule.predict_x0(z, eps, 120), expected)
    v_schedule = sd21.OneStepSchedule("v_prediction")
    torch.testing.assert_close(v_schedule.predict_x0(z, eps, 120), math.sqrt(a) * z - math.sqrt(1 - a) * eps)
    # per-sample timesteps, and noising then predicting with the true noise gives x0 back
    t = torch.tensor([0.0, 333.3])
    torch.testing.assert_close(schedule.predict_x0(schedule.noised(z, eps, t), eps, t), z)


def test_one_step_runs_the_unet_once_without_noise():
    unet, (z, _, context) = tiny_unet(), unet_inputs()
    schedule = sd21.OneStepSchedule()
    calls = []
    unet.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        first = sd21.one_step(unet, schedule, z, 180.5, context[:1])
        second = sd21.one_step(unet, schedule, z, torch.tensor([180.5, 180.5]), context[:1].repeat(2, 1, 1))
    assert len(calls) == 2 and first.shape == z.shape
    torch.testing.assert_close(first, second)
    embedding = sd21.TextEmbedding(width=32)
    assert embedding(3).shape == (3, 77, 32) and embedding.embedding.requires_grad


def test_base_loads_from_every_layout_with_one_fingerprint(tmp_path):
    single = sd21.load_base(write_single_file(tmp_path / "ckpt" / "sd21.safetensors"), with_text=True)
    pickle = sd21.load_base(write_single_file(tmp_path / "ckpt" / "sd21.ckpt"))
    half = sd21.load_base(write_single_file(tmp_path / "ckpt" / "sd21_fp16.safetensors", dtype=torch.float16))
    folder = sd21.load_base(write_diffusers_folder(tmp_path / "diffusers" / "sd21", prediction="v_prediction"))
    other = sd21.load_base(write_single_file(tmp_path / "ckpt" / "other.safetensors", seed=1))
    assert single.fingerprint == pickle.fingerprint == half.fingerprint == folder.fingerprint != other.fingerprint
    assert single.text_encoder is not None and pickle.text_encoder is None
    assert (single.prediction, folder.prediction) == ("epsilon", "v_prediction")
    assert single.unet_config == micro_config().unet and single.vae_config == micro_config().vae
    inputs = unet_inputs()
    torch.testing.assert_close(run(single.unet, inputs), run(folder.unet, inputs), rtol=0, atol=0)
    torch.testing.assert_close(run(single.unet, inputs), run(tiny_unet(), inputs), rtol=0, atol=0)


def test_base_from_deblurdiff_model(tmp_path):
    base = sd21.load_base(write_model(tmp_path / "model.pth", micro_state(0)))
    assert base.unet_config == micro_config().unet and base.prediction == "epsilon" and len(base.fingerprint) == 16


def test_bad_base_files_are_named(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="junk.safetensors.*not a safetensors file"):
        sd21.load_base(str(junk))
    no_vae = tmp_path / "unet_only.ckpt"
    torch.save({k: v for k, v in single_file_state().items() if k.startswith("model.")}, no_vae)
    with pytest.raises(CheckpointError, match="unet_only.ckpt.*no autoencoder"):
        sd21.load_base(str(no_vae))
    other = tmp_path / "other.ckpt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="other.ckpt.*not a Stable Diffusion"):
        sd21.load_base(str(other))
    with pytest.raises(CheckpointError, match="not a diffusers model folder"):
        sd21.load_base(str(tmp_path))


def test_base_choices_from_host_folders(tmp_path, monkeypatch, models_dir):
    base_files = pack_module("models.sd21.base_files")
    write_single_file(tmp_path / "checkpoints" / "sd21.safetensors")
    write_diffusers_folder(tmp_path / "diffusers" / "sd21-base")
    write_model(models_dir / "DeblurDiff" / "model.pth", micro_state(0))
    monkeypatch.setenv("COMFYUI_DEBLUR_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("COMFYUI_DEBLUR_DIFFUSERS", str(tmp_path / "diffusers"))
    choices = base_files.base_choices()
    assert choices == ["checkpoints/sd21.safetensors", "diffusers/sd21-base", "deblur/DeblurDiff/model.pth"]
    assert base_files.resolve_base(choices[1]) == str(tmp_path / "diffusers" / "sd21-base")
    with pytest.raises(FileNotFoundError):
        base_files.resolve_base("checkpoints/../diffusers/sd21-base")


def test_latent_discriminator_and_losses():
    unet = tiny_unet()
    disc = training.LatentDiscriminator(unet)
    z, t, context = unet_inputs()
    logits = disc(z, t, context)
    assert logits.shape == (2, 1, 4, 4)
    assert disc.conv_in.weight is not unet.conv_in.weight and torch.equal(disc.conv_in.weight, unet.conv_in.weight)
    real, fake = torch.full((2, 1, 4, 4), 5.0), torch.full((2, 1, 4, 4), -5.0)
    assert training.discriminator_loss(real, fake) < 0.02 < training.discriminator_loss(fake, real)
    assert training.generator_loss(real) < 0.01 < training.generator_loss(fake)
    training.discriminator_loss(logits, -logits).backward()
    assert disc.head[0].weight.grad.abs().sum() > 0 and disc.down_blocks[0].resnets[0].conv1.weight.grad is not None


def test_edge_aware_perceptual_loss():
    distance = training.FeatureDistance(training.RandomConvFeatures())
    loss = training.edge_aware(distance)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert torch.equal(loss(a, a), torch.zeros(2))
    blurred = torch.nn.functional.avg_pool2d(a, 3, 1, 1)
    noisy = a + 0.05 * torch.randn(a.shape, generator=g)
    assert (loss(a, blurred) > distance(a, blurred)).all()  # the edge term adds to the plain one
    assert (loss(a, blurred) > 0).all() and loss(a, noisy).shape == (2,)
    flat = torch.zeros(1, 3, 8, 8)
    step = flat.clone()
    step[..., 4:] = 1.0
    assert training.sobel_magnitude(flat).max() < 1e-2 < training.sobel_magnitude(step)[0, 0, 4, 4]
