import eventflow


def test_all_public_names_are_exported() -> None:
    public = {name for name in dir(eventflow) if not name.startswith("_")}
    assert public == set(eventflow.__all__) - {"__version__"}
    for name in eventflow.__all__:
        assert hasattr(eventflow, name), name
