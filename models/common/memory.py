"""Memory follows the tile: estimate a run's peak before it starts and pick a tile that fits.

Every path that deblurs a whole image (the WebUI's API and Extras step through ``models/methods.py``,
and the ComfyUI nodes) asks :func:`plan_tile` first. A region's cost comes from the caller
(``bytes_for(height, width)``: weights plus activations, as the nodes already give the host's
``free_memory``); this module adds the full-size buffers every run keeps (the image in and out, the
tile accumulators), compares the sum with what the device has free (the CPU included: available
system memory, a container's limit, the process's resource limits) and, if the whole image does
not fit, tries ever smaller tiles. When even the smallest tile does not fit, :class:`MemoryLimitError`
names the image size, the estimate, what is free and the setting to change (the API answers 413).
"""
from __future__ import annotations

import logging
from typing import Callable

try:  # POSIX only: on Windows there are no rlimits to respect, and the pack must still import
    import resource
except ImportError:
    resource = None

import torch

from . import runtime

log = logging.getLogger(__name__)

IMAGE_BYTES_PER_PIXEL = 64  # full-size buffers of one image: float32 input and output, accumulators, conversions
CPU_SHARE = 0.5  # of the available system memory one run may plan to use (the OS, the host and other programs share it)
GPU_SHARE = 0.9  # of the device memory free after the host unloaded what it could
TILES = (1024, 512, 256, 128)  # tried largest first when the whole image (or the asked tile) does not fit
GIB = 1 << 30


class MemoryLimitError(ValueError):
    """The image cannot be processed within the memory this machine has free, even in the smallest tiles."""


def _meminfo_available() -> int | None:
    try:
        import psutil  # optional: ComfyUI and the WebUIs have it; /proc/meminfo otherwise

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 (not installed, or no such information on this system)
        pass
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as stream:
            text = stream.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_headroom() -> int | None:
    """A container's memory limit minus what it uses (cgroup v2, then v1); None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            return max(limit - usage, 0)
    return None


def _rlimit_headroom() -> int | None:
    """The process's address-space and data limits (``ulimit -v``/``-d``) minus what it already maps."""
    if resource is None:
        return None
    status = {}
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                key, _, value = line.partition(":")
                if key in ("VmSize", "VmData"):
                    status[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    headrooms = []
    for limit_name, key in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        soft, _hard = resource.getrlimit(getattr(resource, limit_name))
        if soft != resource.RLIM_INFINITY and key in status:
            headrooms.append(max(soft - status[key], 0))
    return min(headrooms) if headrooms else None


def cpu_available_bytes() -> int | None:
    """System memory this process can still take: the smallest of available memory, its container's
    headroom and its resource limits' headroom; None if none of them can be read."""
    known = [v for v in (_meminfo_available(), _cgroup_headroom(), _rlimit_headroom()) if v is not None]
    return min(known) if known else None


def device_available_bytes(device: torch.device) -> int | None:
    """Standalone answer for any device (hosts may know better: ``runtime.Host.available_memory``)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        try:
            return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return cpu_available_bytes()  # unified memory
    if device.type == "cpu":
        return cpu_available_bytes()
    return None


def budgets(device: torch.device) -> tuple[int | None, int | None]:
    """(bytes a run may plan on ``device``, bytes for the full-size image buffers in system memory)."""
    cpu = runtime.available_memory(torch.device("cpu"))
    cpu_budget = None if cpu is None else int(cpu * CPU_SHARE)
    if torch.device(device).type == "cpu":
        return cpu_budget, cpu_budget
    free = runtime.available_memory(device)
    return (None if free is None else int(free * GPU_SHARE)), cpu_budget


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def plan_tile(height: int, width: int, tile: int, bytes_for: Callable[[int, int], int], device: torch.device | None = None,
              what: str = "deblur", setting: str = "tile_size", batch: int = 1, tiles=TILES) -> int:
    """The tile side to run with (0 = the whole image): ``tile`` if that fits in memory, else the
    largest of ``tiles`` smaller than the image that fits. ``bytes_for(h, w)`` is the peak of one
    region on ``device`` (weights included). Raises :class:`MemoryLimitError` if nothing fits.
    Where free memory cannot be read, ``tile`` is returned unchanged."""
    device = torch.device(device) if device is not None else runtime.torch_device()
    on_device, in_system = budgets(device)
    image_bytes = IMAGE_BYTES_PER_PIXEL * height * width * max(batch, 1)
    shared = device.type == "cpu"  # activations and the image buffers come out of the same memory

    def cost(side: int) -> int:
        return bytes_for(min(height, side or height), min(width, side or width))

    def fits(side: int) -> bool:
        device_need = cost(side) + (image_bytes if shared else 0)
        return (on_device is None or device_need <= on_device) and (in_system is None or shared or image_bytes <= in_system)

    if fits(tile):
        return tile
    limit = min(tile or max(height, width), max(height, width))
    for side in tiles:
        if side < limit and fits(side):
            log.warning("%s: %dx%d needs about %s %s; running in %d px tiles (memory follows the tile)", what, width,
                        height, _gib(cost(tile) + image_bytes), "whole" if not tile else f"in {tile} px tiles", side)
            return side
    smallest = min(tiles) if tiles else 0
    device_short = on_device is not None and cost(smallest) + (image_bytes if shared else 0) > on_device
    free, where = (on_device, "system" if shared else device.type) if device_short else (in_system, "system")
    tiled = f" and still {_gib(cost(smallest) + image_bytes)} in {smallest} px tiles" if smallest else ""
    raise MemoryLimitError(
        f"{what}: a {width}x{height} image needs about {_gib(cost(tile) + image_bytes)} "
        f"({setting} {tile or '0 = whole image'}){tiled}, but only {_gib(free or 0)} of {where} memory is free for it; "
        "send a smaller image or free memory")


def check_fits(height: int, width: int, bytes_for: Callable[[int, int], int], device: torch.device | None = None,
               what: str = "deblur", hint: str = "", batch: int = 1) -> None:
    """For stages that cannot tile: a named error instead of running out of memory."""
    try:
        plan_tile(height, width, 0, bytes_for, device, what, batch=batch, tiles=())
    except MemoryLimitError as error:
        raise MemoryLimitError(f"{error}{'; ' + hint if hint else ''}") from None
