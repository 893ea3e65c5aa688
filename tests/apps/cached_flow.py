"""A batch run of a flow whose task is cached: `python tests/apps/cached_flow.py VALUE`.

The task appends VALUE to the file CALLS each time it really runs; its cache
entries expire after CACHE_SECONDS (given as a number of seconds, as other options
are; a timedelta works too). The store is EVENTFLOW_DATABASE_URL.
"""

from __future__ import annotations

import os
import sys

from eventflow import flow, task, task_input_hash

CALLS = os.environ["CALLS"]


@task(
    cache_key_fn=task_input_hash,
    cache_expiration=float(os.environ.get("CACHE_SECONDS", "3600")),
)
def price(sku: str) -> dict[str, object]:
    with open(CALLS, "a") as calls:
        calls.write(sku + "\n")
    return {"sku": sku, "cents": 100 * len(sku)}


@flow(name="cached-prices")
def quote(sku: str) -> int:
    return int(str(price(sku)["cents"]))


if __name__ == "__main__":
    print(quote(sys.argv[1]))
