import types

import eventflow


def test_all_public_names_are_exported() -> None:
    public = {
        name
        for name in dir(eventflow)
        if not name.startswith("_") and not isinstance(getattr(eventflow, name), types.ModuleType)
    }
    assert public == set(eventflow.__all__) - {"__version__"}
    for name in eventflow.__all__:
        assert hasattr(eventflow, name), name
