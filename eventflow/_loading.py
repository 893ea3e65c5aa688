"""Finding the user's App from `path/to/file.py:app` or `package.module:app`.

Both forms work from the current directory, as `python -m` would. What goes
wrong while importing the user's code comes back as a ConfigurationError of a
line or two (the Python error and where), not a traceback through eventflow.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from ._errors import ConfigurationError, EventflowError, describe_error

_PACKAGE = str(Path(__file__).resolve().parent)


def load_object(target: str) -> Any:
    """Import `module_or_file:attribute` and return the attribute (default attribute: `app`)."""
    location, _, attribute = target.partition(":")
    attribute = attribute or "app"
    if not location:
        raise ConfigurationError(f"{target!r} names no module: write path/to/file.py:app")
    if location.endswith(".py") or "/" in location or os.sep in location:
        module = _import_file(location)
    else:
        module = _import_module(location)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{location} has no attribute {attribute!r}") from None


def _import_file(location: str) -> ModuleType:
    path = Path(location).resolve()
    if not path.is_file():
        raise ConfigurationError(f"no such file: {location}")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"cannot import {location}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(path.stem, None)
        raise _import_error(location, error, path) from error
    return module


def _import_module(location: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(location)
    except ModuleNotFoundError as error:
        if error.name is not None and location.startswith(error.name):
            raise ConfigurationError(
                f"no module named {error.name!r} in {cwd} or on the Python path: "
                f"run eventflow from the directory that holds it, "
                f"or give its file (path/to/{location.replace('.', '/')}.py:app)"
            ) from error
        raise _import_error(location, error, None) from error
    except BaseException as error:
        raise _import_error(location, error, None) from error


def _import_error(location: str, error: BaseException, path: Path | None) -> BaseException:
    """A short ConfigurationError for an error raised by importing the user's code."""
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return error
    if isinstance(error, SyntaxError):
        where = f"{error.filename}, line {error.lineno}"
        code = (error.text or "").strip()
        return ConfigurationError(
            f"cannot import {location}: {type(error).__name__}: {error.msg} ({where})"
            + (f"\n    {code}" if code else "")
        )
    frames = traceback.extract_tb(error.__traceback__)
    user = [f for f in frames if path is not None and Path(f.filename) == path] or [
        f for f in frames if "importlib" not in f.filename and not f.filename.startswith(_PACKAGE)
    ]
    where = f" ({user[-1].filename}, line {user[-1].lineno})" if user else ""
    message = str(error) if isinstance(error, EventflowError) else describe_error(error)
    return ConfigurationError(f"cannot import {location}: {message}{where}")
