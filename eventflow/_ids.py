"""Run ids."""

from __future__ import annotations

import os
import random
import time

_ids = random.Random()


def new_id() -> str:
    """A 128-bit run id in hex laid out like a UUIDv7: 48 bits of milliseconds, 80 random.

    Time-ordered ids keep inserts at the end of the primary-key index (random
    ones scatter them and slow the store as it grows). The random bits come
    from a generator seeded once per process from the OS (again in a forked
    child), not an OS call per id: one `getrandom` costs tens of microseconds
    on some kernels and sandboxes, and this runs per task run.
    """
    bits = (time.time_ns() // 1_000_000) << 80 | _ids.getrandbits(80)
    return bits.to_bytes(16, "big").hex()  # twice as fast as formatting two numbers


os.register_at_fork(after_in_child=_ids.seed)
