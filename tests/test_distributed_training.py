"""HI-Diff and the kernel estimator on two CPU processes (gloo): the weights equal one process with the
doubled batch, and a two-process run stopped and resumed ends bit for bit where the straight one does.

The processes are started with ``accelerate launch --multi_gpu --num_processes 2`` (torch's elastic
launcher) and the tools' ``--device cpu``, which makes accelerate join them over gloo (MULTI_CPU):
``accelerate launch --cpu`` starts several CPU processes only through MPI, which CI machines lack."""
import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, pack_module

pytest.importorskip("accelerate")  # .ci/run installs the training extra (peft, accelerate)

hidiff = pack_module("models.hidiff")
em = pack_module("models.fidediff.estimator_model")
blur = pack_module("models.blur")
image_io = pack_module("models.common.image_io")
sys.path.insert(0, os.path.join(ROOT, "tools"))

# The two processes average their gradients (all-reduce) where one process sums over the doubled batch:
# the same gradient up to float32 rounding of the summation order (~1e-7 relative), which a few AdamW
# steps (update size ~lr, normalised per element) carry into the weights. Measured: 7e-8 (HI-Diff, 2 + 2
# steps), 1.2e-7 (8 + 8), 3e-8 (estimator, 2 + 2). 1e-5 absolute leaves room for other CPUs' kernels and
# stays far below one step's change (lr = 2e-4 .. 5e-4 per element; another seed differs by > 1e-3).
TOLERANCE = 1e-5


def sharp_folder(path, count=3, size=48):
    path.mkdir()
    for i in range(count):
        image_io.save_png(blur.dead_leaves(size, torch.Generator().manual_seed(i)), str(path / f"{i}.png"))
    return str(path)


def launch(tool, args, processes):
    """Run ``tools/<tool>`` in ``processes`` CPU processes (1: a plain single process, no launcher)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DEBLUR_NO_PROGRESS="1")
    script = os.path.join(ROOT, "tools", tool)
    with socket.socket() as probe:  # a free port for the processes' rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    command = (launcher if processes > 1 else [sys.executable]) + [script] + args
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if processes > 1 and done.returncode and "exitcode: -" in done.stderr:
        # a rank killed by a signal at rendezvous (seen once in ~10 runs on a loaded 2-core machine, the
        # probed port taken meanwhile): one fresh launch; a wrong result or a Python error is never retried
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def differences(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def hidiff_weights(path):
    model = hidiff.load_hidiff(str(path))
    return {f"{part}.{k}": v for part in ("net_g", "net_le", "net_le_dm", "net_d") for k, v in getattr(model, part).state_dict().items()}


def estimator_weights(path):
    return em.estimator_state(em.load_blur_estimator(str(path)))


HIDIFF = ["--preset", "tiny", "--iters", "2", "2", "--patch", "32", "--kernel-size", "7", "--device", "cpu",
          "--threads", "1", "--log-every", "1", "--seed", "3"]
ESTIMATOR = ["--iters", "2", "2", "--kernel-size", "7", "--basis", "2", "--widths", "8", "12", "--regressor-width", "8",
             "--patch", "16", "--frames", "1", "7", "--speed", "0.5", "1", "--device", "cpu", "--threads", "1", "--seed", "4"]


@pytest.mark.parametrize("tool,common,weights", [("train_hidiff.py", HIDIFF, hidiff_weights),
                                                 ("train_kernel_estimator.py", ESTIMATOR, estimator_weights)])
def test_two_processes_match_one_with_the_doubled_batch(tmp_path, tool, common, weights):
    sharp = sharp_folder(tmp_path / "sharp")
    launch(tool, ["--sharp", sharp, "--run", str(tmp_path / "two"), "--batch", "2"] + common, 2)
    launch(tool, ["--sharp", sharp, "--run", str(tmp_path / "one"), "--batch", "4"] + common, 1)
    two, one = weights(tmp_path / "two" / "model.safetensors"), weights(tmp_path / "one" / "model.safetensors")
    gap = differences(two, one)
    assert gap < TOLERANCE, f"two processes differ from one by {gap:.3g}"
    # and the run did train: the same command with another seed ends elsewhere by far more
    seed = common.index("--seed") + 1
    other = common[:seed] + [str(int(common[seed]) + 1)] + common[seed + 1:]
    launch(tool, ["--sharp", sharp, "--run", str(tmp_path / "other"), "--batch", "4"] + other, 1)
    spread = differences(weights(tmp_path / "other" / "model.safetensors"), one)
    assert spread > 100 * TOLERANCE, f"another seed ends only {spread:.3g} away"
    # the logs agree too: the losses are averaged over the processes before they are written
    log_two = (tmp_path / "two" / "loss_log.csv").read_text().splitlines()
    log_one = (tmp_path / "one" / "loss_log.csv").read_text().splitlines()
    assert log_two[0] == log_one[0] and len(log_two) == len(log_one), (log_two, log_one)


@pytest.mark.parametrize("tool,common,weights", [("train_hidiff.py", HIDIFF, hidiff_weights),
                                                 ("train_kernel_estimator.py", ESTIMATOR, estimator_weights)])
def test_a_two_process_run_resumes_bit_for_bit(tmp_path, tool, common, weights):
    sharp = sharp_folder(tmp_path / "sharp")
    common = ["--sharp", sharp, "--batch", "2"] + common
    launch(tool, common + ["--run", str(tmp_path / "straight")], 2)
    # the same run stopped inside stage two (2 + 1 of 2 + 2 steps), then resumed
    launch(tool, common + ["--run", str(tmp_path / "resumed"), "--stop-after", "3"], 2)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # stopped: checkpoint only
    launch(tool, common + ["--run", str(tmp_path / "resumed"), "--resume"], 2)
    a, b = weights(tmp_path / "straight" / "model.safetensors"), weights(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fidediff_base_stage_on_two_processes_matches_one(tmp_path):
    """The other TrainingLoop trainers get the same slices: FideDiff's base stage (LoRA, text embedding,
    latent GAN) on 2 x 1 scene against 1 x 2 scenes, the adapter files compared element by element.

    One step only, and a share of the weights: AdamW's first step moves every weight by about ±lr
    whatever the size of its gradient, and in this UNet some gradients are rounding noise (theoretically
    zero, e.g. ahead of a normalisation), so their sign follows the summation order; from the second
    step on those few weights change the network and everything drifts. Measured after the step, over
    the weights it moves (LoRA up-projections and the text embedding; the down-projections get no
    gradient while the up ones are zero): 2.4% differ by more than 1e-5, all others agree, against 31%
    when both processes train on the first process's slice. The test allows 8%."""
    pytest.importorskip("peft")
    from safetensors.torch import load_file
    from tiny_sd import write_single_file

    sharp = sharp_folder(tmp_path / "sharp")
    base = write_single_file(tmp_path / "sd21.safetensors")
    common = ["--stage", "base", "--base", base, "--sharp", sharp, "--steps", "1", "--crop", "16", "--points", "2",
              "--rank", "2", "--perceptual", "features", "--latent-downsample", "8", "--lr", "2e-3", "--cpu", "--seed", "3",
              "--threads", "1"]
    launch("train_fidediff.py", common + ["--run", str(tmp_path / "two"), "--scenes", "1"], 2)
    launch("train_fidediff.py", common + ["--run", str(tmp_path / "one"), "--scenes", "2"], 1)
    two, one = (load_file(str(tmp_path / run / "adapter.safetensors")) for run in ("two", "one"))
    assert two.keys() == one.keys() and "text_embedding" in two
    moved = [k for k in two if "lora_up" in k or k == "text_embedding"]
    diffs = torch.cat([(two[k].double() - one[k].double()).abs().flatten() for k in moved])
    share = float((diffs > TOLERANCE).double().mean())
    assert share < 0.08, f"{share:.2%} of the trained weights differ"


def test_osdd_stage_on_two_processes_matches_one(tmp_path):
    """OSDD's synthetic stage (UNet and VAE LoRA, latent GAN) on 2 x 1 against 1 x 2
    patches: every weight the step moved agrees within TOLERANCE (measured 1.9e-7)."""
    from safetensors.torch import load_file
    from tiny_sd import write_single_file

    sharp = sharp_folder(tmp_path / "sharp", size=64)
    base = write_single_file(tmp_path / "base.safetensors")
    common = ["--stage", "synthetic", "--base", base, "--sharp", sharp, "--steps", "1", "--crop", "32", "--unet-rank", "2",
              "--vae-rank", "2", "--perceptual", "features", "--cpu", "--kernel-size", "7", "--threads", "1", "--seed", "2"]
    launch("train_osdd.py", common + ["--run", str(tmp_path / "two"), "--batch", "1"], 2)
    launch("train_osdd.py", common + ["--run", str(tmp_path / "one"), "--batch", "2"], 1)
    launch("train_osdd.py", common + ["--run", str(tmp_path / "start"), "--batch", "2", "--steps", "0"], 1)
    two, one, start = (load_file(str(tmp_path / run / "osdd.safetensors")) for run in ("two", "one", "start"))
    moved = {k: v for k, v in one.items() if k in start and not torch.equal(v, start[k])}
    assert len(moved) > 50  # the step trained the LoRA layers
    assert differences({k: two[k] for k in moved}, moved) < TOLERANCE
