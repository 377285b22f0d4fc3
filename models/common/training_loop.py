"""The training loop every trainer shares (HI-Diff, the kernel estimator, FideDiff, OSDD): accelerate
set-up (device, mixed precision, several processes through ``accelerate launch`` / torchrun), each
rank's slice of the global batch, step, average and log losses to ``loss_log.csv``, checkpoint and
resume bit for bit.

A trainer subclasses :class:`TrainingLoop` and gives ``step() -> {name: float}``, its trainable tensors
(``trainable_state`` / ``load_trainable_state``) and its optimisers (``self.optimizers``, by name);
multi-stage trainers also give ``next_stage()``. The default checkpoint (``checkpoint.pt``) holds those
tensors, the optimiser states, the data sampler's generator and torch's RNG, and is read back with
``weights_only=True``; trainers with a model-format checkpoint override ``save`` / ``load`` and reuse
:func:`save_run_files`, :func:`read_training_state` and :meth:`TrainingLoop.loop_state`.

Several processes: every rank draws the GLOBAL batch (``world × batch``) from the shared seed and keeps
its own slice (:class:`RankSlices`), so W processes of batch B train on exactly the samples one process of
batch W·B would; accelerate's DDP averages the gradients, which for batch-mean losses equals the
gradient of the global batch. Only the main process writes files.
"""
from __future__ import annotations

import csv
import os
import time

from typing import Callable

import torch

from .checkpoint import CheckpointError

CHECKPOINT = "checkpoint.pt"
PRECISIONS = ("no", "fp16", "bf16")


def append_log_row(path: str, fields, row: dict) -> None:
    """One row of a run's loss log (a CSV file, header written when new)."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        if new:
            writer.writeheader()
        writer.writerow(row)


def save_run_files(model_path: str, write_model: Callable[[str], None], state_path: str, state: dict) -> None:
    """Write a run's model file and training state, then replace both (a crash leaves the old pair)."""
    write_model(model_path + ".tmp")
    torch.save(state, state_path + ".tmp")
    os.replace(model_path + ".tmp", model_path)
    os.replace(state_path + ".tmp", state_path)


def read_training_state(path: str) -> dict:
    """A run's training state, read with ``weights_only=True``; a missing or unreadable file is a
    :class:`CheckpointError` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path, "no training state to resume from") from None
    except Exception as error:
        raise CheckpointError(path, f"not a readable training state ({error})") from None


def make_accelerator(mixed_precision: str = "no", device: str = "auto"):
    """accelerate's Accelerator for ``device`` ('cpu' forces the CPU; 'cuda:N' picks a GPU when not
    launched distributed; 'auto', 'cuda', 'mps': accelerate's choice) and ``mixed_precision``."""
    from accelerate import Accelerator

    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed precision must be one of {PRECISIONS}, got {mixed_precision!r}")
    device = str(device)
    cpu = device == "cpu"
    if mixed_precision == "fp16" and (cpu or not torch.cuda.is_available()):
        raise ValueError("fp16 mixed precision needs CUDA; use bf16 or no mixed precision on the CPU")
    single = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if device.startswith("cuda:") and single:
        torch.cuda.set_device(torch.device(device))
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError:
        if not single:
            raise
        # accelerate keeps one state per process and refuses another precision; a single process (a
        # test, a notebook, one tool calling another) starts it afresh for the next trainer
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


class RankSlices:
    """A sampler as rank ``rank`` of ``world`` sees it: the wrapped sampler draws the global batch
    (its ``batch`` multiplied by ``world``) and every tensor of a batch is cut along dim 0 into
    ``world`` equal parts, this rank keeping its own. Anything else (state, generator) is the sampler's."""

    def __init__(self, sampler, rank: int = 0, world: int = 1):
        self.sampler, self.rank, self.world = sampler, rank, world
        if world > 1:
            sampler.batch = sampler.batch * world

    def next_batch(self):
        return tuple(self.local(x) for x in self.sampler.next_batch())

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's part of a tensor drawn for the global batch."""
        if self.world == 1:
            return tensor
        if tensor.shape[0] % self.world:
            raise ValueError(f"a batch of {tensor.shape[0]} does not split over {self.world} processes")
        size = tensor.shape[0] // self.world
        return tensor[self.rank * size:(self.rank + 1) * size]

    def __getattr__(self, name):
        return getattr(self.sampler, name)


class TrainingLoop:
    stage = ""
    steps: int = 0  # of the current stage
    checkpoint_every: int = 500
    log_every: int = 10
    log_fields: tuple[str, ...] = ("stage", "step", "loss", "seconds")

    def __init__(self, run_dir: str, sampler, mixed_precision: str = "no", device: str = "auto"):
        self.accelerator = make_accelerator(mixed_precision, device)
        self.run_dir = run_dir
        self.sampler = RankSlices(sampler, self.accelerator.process_index, self.accelerator.num_processes)
        self.step_index, self.elapsed = 0, 0.0
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # what a trainer provides
    def step(self) -> dict[str, float]:
        raise NotImplementedError

    def trainable_state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def next_stage(self) -> bool:
        """Called when the current stage's steps are done: set up the next one and return True, or
        return False when training is over (the default: one stage)."""
        return False

    def validation(self) -> dict | None:
        """Extra values for the log after this step (e.g. a validation PSNR; main process only), or None."""
        return None

    def is_last_stage(self) -> bool:
        return True

    @property
    def finished(self) -> bool:
        return self.step_index >= self.steps and self.is_last_stage()

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # the loop
    def run(self, stop_after: int | None = None, progress=None) -> None:
        """Train to the end of the last stage, or ``stop_after`` more steps (then log and checkpoint)."""
        os.makedirs(self.run_dir, exist_ok=True)
        taken, sums, count, start = 0, {}, 0, time.time()
        while stop_after is None or taken < stop_after:
            if self.step_index >= self.steps:
                if not self.next_stage():
                    break
                continue
            started = time.perf_counter()
            record = self.mean_over_processes(self.step())
            self.elapsed += time.perf_counter() - started
            self.step_index += 1
            taken += 1
            for key, value in record.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            extra = self.validation() if self.is_main else None
            end = self.step_index == self.steps or taken == stop_after
            if self.is_main and (self.step_index % self.log_every == 0 or end or extra):
                self.log({k: v / count for k, v in sums.items()}, time.time() - start, extra or {})
            if self.step_index % self.log_every == 0 or end or extra:
                sums, count, start = {}, 0, time.time()
            if progress and self.is_main:
                progress(self.step_index, record)
            if self.step_index % self.checkpoint_every == 0 or end:
                self.checkpoint()

    def mean_over_processes(self, record: dict[str, float]) -> dict[str, float]:
        """The step's values averaged over the processes (what one process of the global batch logs)."""
        if self.accelerator.num_processes == 1:
            return record
        values = torch.tensor(list(record.values()), dtype=torch.float64, device=self.accelerator.device)
        return dict(zip(record, self.accelerator.reduce(values, "mean").tolist()))

    def local_part(self, tensor: torch.Tensor) -> torch.Tensor:
        """This process's slice of a tensor drawn for the global batch (e.g. noise from a shared generator)."""
        return self.sampler.local(tensor)

    def prepare(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer):
        """``module`` on the device, wrapped for DDP and autocast, with its optimiser (loss scaling for fp16)."""
        return self.accelerator.prepare(module.to(self.accelerator.device).train(), optimizer)

    def log(self, means: dict[str, float], seconds: float, extra: dict) -> None:
        append_log_row(os.path.join(self.run_dir, "loss_log.csv"), self.log_fields,
                       {"stage": self.stage, "step": self.step_index, "seconds": round(seconds, 2)}
                       | {k: round(means[k], 6) for k in self.log_fields if k in means} | extra)

    # saving and resuming
    def checkpoint(self) -> None:
        """Save on the main process; the others wait (every rank holds the same weights and state)."""
        if self.is_main:
            os.makedirs(self.run_dir, exist_ok=True)
            self.save()
        self.accelerator.wait_for_everyone()

    def loop_state(self) -> dict:
        """What every checkpoint holds besides the weights: optimisers, data stream, RNG, loss scaler."""
        state = {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}, "sampler": self.sampler.state(),
                 "torch_rng": torch.get_rng_state(), "elapsed": self.elapsed}
        if self.accelerator.scaler is not None:
            state["scaler"] = self.accelerator.scaler.state_dict()
        return state

    def load_loop_state(self, state: dict) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        self.elapsed = float(state.get("elapsed", 0.0))
        if self.accelerator.scaler is not None and "scaler" in state:
            self.accelerator.scaler.load_state_dict(state["scaler"])

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.run_dir, CHECKPOINT)

    def save(self) -> None:
        state = {"weights": {k: v.detach().cpu() for k, v in self.trainable_state().items()}, "step": self.step_index,
                 "stage": self.stage, **self.loop_state()}
        torch.save(state, self.checkpoint_path + ".partial")
        os.replace(self.checkpoint_path + ".partial", self.checkpoint_path)

    def load(self) -> None:
        path = self.checkpoint_path
        state = read_training_state(path)
        if state.get("stage") != self.stage:
            raise ValueError(f"{path} is a {state.get('stage')!r} run, not {self.stage!r}")
        with torch.no_grad():
            self.load_trainable_state(state["weights"])
        self.load_loop_state(state)
        self.step_index = int(state["step"])
