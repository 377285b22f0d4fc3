"""Every INT and FLOAT input checked on the server against the node's own declaration.

ComfyUI's checks let NaN through (it compares false with every bound), skip values that arrive
through links, and ignore ``step`` (the UI's step of 8 is not enforced on /prompt), so a graph sent
to the API could feed NaN or a 1 px tile to a node. :func:`guard_number_inputs` wraps the ``FUNCTION``
of every node class once, at registration, so nodes added later are covered without code of their own.

INT values must lie on the declared step counted from ``min`` (as the frontend rounds them); FLOAT
steps are not enforced, because the frontend's rounding precision is a user setting and finer values
are legitimate.
"""
from __future__ import annotations

import functools
import inspect
import math
from numbers import Integral, Real

NUMBER_TYPES = ("INT", "FLOAT")


def number_problem(name: str, value, kind: str, options: dict) -> str | None:
    """Why ``value`` is not acceptable for an input declared as ``(kind, options)``; None if it is."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return f"{name} must be a number, got {type(value).__name__} {value!r}"
    if not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r}"
    if kind == "INT" and not isinstance(value, Integral) and value != int(value):
        return f"{name} must be a whole number, got {value!r}"
    low, high = options.get("min"), options.get("max")
    if low is not None and value < low or high is not None and value > high:
        return f"{name} must be between {low} and {high}, got {value!r}"
    step = options.get("step")
    if kind == "INT" and isinstance(step, int) and step > 1 and (int(value) - int(low or 0)) % step:
        if step == 2:
            return f"{name} must be {'odd' if int(low or 0) % 2 else 'even'}, got {value!r}"
        return f"{name} must be {low or 0} plus a multiple of {step}, got {value!r}"
    return None


def number_inputs(node_class) -> dict[str, tuple[str, dict]]:
    """``{input name: (kind, options)}`` of the node's INT and FLOAT inputs."""
    found = {}
    for section in ("required", "optional"):
        for name, spec in (node_class.INPUT_TYPES().get(section) or {}).items():
            if isinstance(spec, (tuple, list)) and spec and spec[0] in NUMBER_TYPES:
                found[name] = (spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    return found


def guard_number_inputs(node_classes: dict) -> None:
    """Wrap each class's ``FUNCTION`` to check its number inputs first (once per class)."""
    for key, node_class in node_classes.items():
        method = getattr(node_class, node_class.FUNCTION)
        if getattr(method, "checks_numbers", False):
            continue
        setattr(node_class, node_class.FUNCTION, _checked(method, key))


def _checked(method, label: str):
    signature = inspect.signature(method)
    specs: dict | None = None

    def check(self, args, kwargs):
        nonlocal specs
        if specs is None:  # read on first use: INPUT_TYPES may list models, not wanted at import
            specs = number_inputs(type(self))
        bound = signature.bind_partial(self, *args, **kwargs).arguments
        problems = [problem for name, (kind, options) in specs.items() if name in bound
                    for problem in [number_problem(name, bound[name], kind, options)] if problem]
        if problems:
            raise ValueError(f"{label}: " + "; ".join(problems))

    if inspect.iscoroutinefunction(method):  # ComfyUI awaits async node functions: stay one
        @functools.wraps(method)
        async def run(self, *args, **kwargs):
            check(self, args, kwargs)
            return await method(self, *args, **kwargs)
    else:
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            check(self, args, kwargs)
            return method(self, *args, **kwargs)

    run.checks_numbers = True
    return run
