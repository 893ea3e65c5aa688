"""Optional extras: a feature whose packages are not installed says which extra brings them."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._errors import MissingExtraError


def missing_extra(module: str, extra: str, feature: str) -> MissingExtraError:
    """The error for `feature` needing `module`, installed by `eventflow[extra]`."""
    return MissingExtraError(
        f"{feature} cannot be used without the package {module!r}, which is not installed: "
        f"pip install 'eventflow[{extra}]'"
    )


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise the MissingExtraError naming `extra`."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but broken: its own error says more
        raise missing_extra(module, extra, feature) from None
