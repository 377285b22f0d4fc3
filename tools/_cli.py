"""Shared by the command-line tools: picking a device, resolving a model name, measuring memory,
the training tools' common options, running a trainer with resume and progress lines."""
from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import torch

from _pack import pack_module


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise SystemExit(f"error: --device {name!r} is not a device (auto, cpu, cuda, cuda:1, mps)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("error: --device cuda asked for but CUDA is not available in this torch")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def training_parser(doc: str, lr: float, seed: int, checkpoint_every: int) -> argparse.ArgumentParser:
    """A training tool's parser: its docstring as help, and the options every training tool takes
    (--resume, --lr, --seed, --checkpoint-every, --threads) with the tool's defaults."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc.splitlines()[2:]))
    common = p.add_argument_group("every training tool")
    common.add_argument("--resume", action="store_true", help="continue from RUN's checkpoint")
    common.add_argument("--lr", type=float, default=lr)
    common.add_argument("--seed", type=int, default=seed)
    common.add_argument("--checkpoint-every", type=int, default=checkpoint_every)
    common.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    common.add_argument("--stop-after", type=int, default=0, metavar="STEPS",
                        help="train this many steps, checkpoint and stop without writing the model (continue with --resume)")
    return p


def parse_training_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The parsed options; --threads applied."""
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def run_trainer(trainer, resume: bool, where: Callable[[object], str], every: int, line: Callable[..., str],
                stop_after: int = 0) -> bool:
    """Resume ``trainer`` when asked (printing ``resumed at <where(trainer)>``), then run it to the end
    (or ``stop_after`` steps when not 0), printing ``line(step, losses)`` and the seconds so far every
    ``every`` steps on the main process. True when training is over, False when stopped early (printed)."""
    main = trainer.accelerator.is_main_process
    if resume:
        trainer.load()
        if main:
            print(f"resumed at {where(trainer)}", flush=True)
    started = time.time()

    def report(*progress):
        if progress[-2] % every == 0:
            print(f"{line(*progress)} ({time.time() - started:.0f} s)", flush=True)

    trainer.run(stop_after=stop_after or None, progress=report)
    if not trainer.finished:
        if main:
            print(f"stopped at {where(trainer)} after --stop-after {stop_after}; continue with --resume", flush=True)
        return False
    return True


def resolve_model(name: str | None) -> tuple[str, str]:
    """(display name, path) of a pack model: None or 'default' → the bundled model; an existing path;
    or a name listed in the model folders (``COMFYUI_DEBLUR_MODELS``)."""
    default = pack_module("models.hidiff.default_model")
    if name in (None, "", "default", default.DEFAULT_NAME):
        if not default.default_available():
            raise SystemExit(f"error: the bundled default model is missing ({default.DEFAULT_PATH}); name a model with --model")
        return default.DEFAULT_NAME, default.DEFAULT_PATH
    if os.path.exists(name):
        return os.path.basename(os.path.normpath(name)), name
    host = pack_module("nodes.host")
    try:
        return name, host.resolve_model(name)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None


def load_model(path: str, device: torch.device, precision: str = "fp32"):
    """The HI-Diff model at ``path``; a bad file ends the tool with one line naming it and the problem."""
    hidiff = pack_module("models.hidiff")
    checkpoint = pack_module("models.common.checkpoint")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    try:
        model = hidiff.load_hidiff(path)
    except (checkpoint.CheckpointError, OSError) as error:
        raise SystemExit(f"error: {error}") from None
    return model.set_precision(dtype).to(device).eval()


class PeakMemory:
    """Peak memory of a block: CUDA allocations on a GPU, else the process's resident high-water mark
    (Linux: reset through /proc/self/clear_refs; elsewhere the peak since start)."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            pass

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @property
    def label(self) -> str:
        return "peak CUDA MiB" if self.device.type == "cuda" else "peak RSS MiB"
