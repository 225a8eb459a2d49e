"""User code named as ``"package.module:function"`` and imported on every rank: model builders
(``model.builder``) and sampler factories (``sampler=``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def import_function(spec: Any, what: str) -> Callable:
    """The function ``spec`` names; a ``ValueError`` naming ``what`` (the option) and what failed."""
    module_name, _, function_name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not module_name or not function_name or ":" in function_name:
        raise ValueError(f"{what} must look like 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} {spec!r}: cannot import {module_name!r} ({exc})") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"{what} {spec!r}: {module_name} has no function {function_name!r}")
    return function
