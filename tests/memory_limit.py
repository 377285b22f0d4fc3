"""Run one call in a child process under a memory ceiling, so a test of a memory bound fails
instead of exhausting the machine when the bound regresses.

The child imports torch and the pack, then limits its address space (``RLIMIT_AS``) to what it has
plus ``headroom``; an allocation past it raises (torch's "can't allocate memory", MemoryError)
instead of growing. Figures here (2-core CPU, torch 2.13): the child's own address space after its
imports is about 0.6-0.7 GiB; loading the bundled HI-Diff model adds under 0.1 GiB.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

HEADROOM = 2 * 2**30

CHILD = r"""
import importlib, json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
import safetensors.torch  # imported before the limit, as a running host has it loaded already
from conftest import pack_module
checkpoint = pack_module("models.common.checkpoint")
name = sys.argv[2]
module = importlib.import_module(name[len("tests:"):]) if name.startswith("tests:") else pack_module(name)
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
limit = status("VmSize") + int(sys.argv[5])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
resident = status("VmRSS")
try:
    value = getattr(module, sys.argv[3])(*json.loads(sys.argv[4]))
    result = {"error": None, "value": value if isinstance(value, (int, float, str, list, dict)) else repr(value)[:200]}
except checkpoint.CheckpointError as error:
    result = {"error": "CheckpointError", "path": error.path, "message": str(error)}
except BaseException as error:  # MemoryError, torch's "can't allocate memory", anything else
    result = {"error": type(error).__name__, "message": str(error)[:400]}
result["peak_rise"] = status("VmHWM") - resident  # bytes of resident memory the call added at its peak
print("RESULT " + json.dumps(result))
"""


def run_limited(module: str, function: str, *args, headroom: int = HEADROOM) -> dict:
    """``<module>.<function>(*args)`` in a child under the limit: a pack module (``"models.x"``) or a
    test module (``"tests:name"``); JSON arguments (paths become strings). Returns ``error`` (None,
    ``"CheckpointError"`` with ``path`` and ``message``, or another exception's name), ``value`` (a
    JSON value or a repr) and ``peak_rise`` (bytes)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    arguments = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in args]
    done = subprocess.run([sys.executable, "-c", CHILD, os.path.join(ROOT, "tests"), module, function,
                           json.dumps(arguments), str(headroom)], capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the child died (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])
