"""Finding the user's App from `path/to/file.py:app` or `package.module:app`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError


def load_object(target: str) -> Any:
    """Import `module_or_file:attribute` and return the attribute (default attribute: `app`)."""
    location, _, attribute = target.partition(":")
    attribute = attribute or "app"
    if location.endswith(".py") or "/" in location:
        path = Path(location).resolve()
        if not path.is_file():
            raise ConfigurationError(f"no such file: {location}")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ConfigurationError(f"cannot import {location}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(location)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{location} has no attribute {attribute!r}") from None
