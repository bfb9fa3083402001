"""Finding the app a command should run, from a `module:attr` spec."""

from __future__ import annotations

import importlib
import os
import sys

from flowapp.app import FlowApp


class AppLoadError(Exception):
    """The `module:attr` spec does not lead to a FlowApp."""


def load_app(spec: str, extra_paths: tuple[str, ...] = ()) -> FlowApp:
    """Import `module:attr` (attr defaults to `app`) from the current directory or the installed packages."""
    module_name, _, attr_path = spec.partition(":")
    attr_path = attr_path or "app"
    if not module_name:
        raise AppLoadError(f"app spec {spec!r} must look like 'module:attr', for example 'myapp:app'")
    for folder in (*extra_paths, os.getcwd()):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"cannot import module {module_name!r}: {exc}") from exc
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise AppLoadError(f"module {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, attr)
    if not isinstance(target, FlowApp):
        raise AppLoadError(f"{spec!r} is a {type(target).__name__}, not a FlowApp")
    return target
