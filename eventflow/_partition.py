"""`Partition`: one partition of a stream, the unit of order and of offsets, defined once
for the engine's resume plans, the store and the runtime."""

Partition = tuple[str, int]
"""A partition of a stream: (stream name, partition number), e.g. ("orders", 3)."""
