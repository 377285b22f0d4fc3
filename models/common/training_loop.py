"""The training loop the trainers share (FideDiff, OSDD): step, average and log losses to ``loss_log.csv``,
checkpoint and resume bit for bit.

A trainer subclasses :class:`TrainingLoop` and gives ``step() -> {name: float}``, its trainable tensors
(``trainable_state`` / ``load_trainable_state``) and its optimisers (``self.optimizers``, by name). The
checkpoint holds those tensors, the optimiser states, the data sampler's generator and torch's RNG, and
is read back with ``weights_only=True``.

The two-stage trainers with their own loops (HI-Diff, the kernel estimator) share the small parts:
:func:`append_log_row`, :func:`save_run_files`, :func:`read_training_state`.
"""
from __future__ import annotations

import csv
import os
import time

from typing import Callable

import torch

from .checkpoint import CheckpointError

CHECKPOINT = "checkpoint.pt"


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


class TrainingLoop:
    stage: str = ""
    steps: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    log_fields: tuple[str, ...] = ("stage", "step", "loss", "seconds")

    def __init__(self, run_dir: str, sampler):
        self.run_dir, self.sampler = run_dir, sampler
        self.step_index = 0
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # what a trainer provides
    def step(self) -> dict[str, float]:
        raise NotImplementedError

    def trainable_state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    # the loop
    def run(self, stop_after: int | None = None, progress=None) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        end = self.steps if stop_after is None else min(self.steps, self.step_index + stop_after)
        sums, count, start = {}, 0, time.time()
        while self.step_index < end:
            record = self.step()
            self.step_index += 1
            for key, value in record.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            if progress:
                progress(self.step_index, record)
            if self.step_index % self.log_every == 0 or self.step_index == end:
                self.log({k: v / count for k, v in sums.items()}, time.time() - start)
                sums, count, start = {}, 0, time.time()
            if self.step_index % self.checkpoint_every == 0 or self.step_index == end:
                self.save()

    def log(self, means: dict[str, float], seconds: float) -> None:
        append_log_row(os.path.join(self.run_dir, "loss_log.csv"), self.log_fields,
                       {"stage": self.stage, "step": self.step_index, "seconds": round(seconds, 2)}
                       | {k: round(means[k], 6) for k in self.log_fields if k in means})

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.run_dir, CHECKPOINT)

    def save(self) -> None:
        state = {"weights": {k: v.detach().cpu() for k, v in self.trainable_state().items()}, "step": self.step_index,
                 "stage": self.stage, "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                 "sampler": self.sampler.state(), "torch_rng": torch.get_rng_state()}
        torch.save(state, self.checkpoint_path + ".partial")
        os.replace(self.checkpoint_path + ".partial", self.checkpoint_path)

    def load(self) -> None:
        path = self.checkpoint_path
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("stage") != self.stage:
            raise ValueError(f"{path} is a {state.get('stage')!r} run, not {self.stage!r}")
        with torch.no_grad():
            self.load_trainable_state(state["weights"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        self.step_index = int(state["step"])
