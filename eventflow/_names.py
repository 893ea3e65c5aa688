"""Default run names, Prefect-style ("brave-otter"): easier to say and to spot than an id."""

from __future__ import annotations

_ADJECTIVES = (
    "amber", "bold", "brave", "bright", "calm", "clever", "cosmic", "crimson",
    "curious", "daring", "eager", "electric", "fancy", "fearless", "gentle", "golden",
    "happy", "hidden", "honest", "icy", "jolly", "keen", "lively", "lucky",
    "mellow", "mighty", "misty", "nimble", "noble", "olive", "patient", "polite",
    "proud", "quick", "quiet", "rapid", "rosy", "rustic", "scarlet", "silent",
    "silver", "steady", "sunny", "swift", "tidy", "vivid", "witty", "zesty",
)  # fmt: skip
_ANIMALS = (
    "badger", "beaver", "bison", "camel", "cheetah", "cobra", "condor", "coyote",
    "crane", "dingo", "dolphin", "eagle", "falcon", "ferret", "finch", "fox",
    "gazelle", "gecko", "heron", "ibis", "jackal", "jaguar", "koala", "lemur",
    "lynx", "marmot", "mole", "moose", "narwhal", "ocelot", "orca", "otter",
    "owl", "panda", "pelican", "puffin", "quail", "raven", "seal", "sloth",
    "swan", "tapir", "tiger", "toucan", "walrus", "wombat", "yak", "zebra",
)  # fmt: skip


def default_run_name(run_id: str) -> str:
    """A name drawn from the run id's last (random) hex digits, so it costs no randomness."""
    try:
        n = int(run_id[-6:], 16)
    except ValueError:
        n = sum(map(ord, run_id))
    adjective = _ADJECTIVES[n % len(_ADJECTIVES)]
    return f"{adjective}-{_ANIMALS[n // len(_ADJECTIVES) % len(_ANIMALS)]}"
