import types

import eventflow
import eventflow.runtime
import eventflow.testing


def test_all_public_names_are_exported() -> None:
    public = {
        name
        for name in dir(eventflow)
        if not name.startswith("_") and not isinstance(getattr(eventflow, name), types.ModuleType)
    }
    assert public == set(eventflow.__all__) - {"__version__"}
    for name in eventflow.__all__:
        assert hasattr(eventflow, name), name


def test_the_testing_module_exports_its_public_names() -> None:
    module = eventflow.testing
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name).__module__.startswith("eventflow."), name


def test_the_connector_contract_exports_its_public_names() -> None:
    """`eventflow.runtime` is all a connector may import (besides `eventflow`'s errors)."""
    module = eventflow.runtime
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(module.__all__)
