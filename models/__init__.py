"""Plain PyTorch models of the pack: one sub-package per method plus shared parts.

Nothing here imports ComfyUI; the node adapters in ``nodes/`` do that through ``nodes/host.py``.
"""
