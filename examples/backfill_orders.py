"""A backfill: the orders flow over a JSONL file of past orders, every line a tracked run.

    python examples/backfill_orders.py orders.jsonl [--create 5000]

`--create N` first writes N orders (a few malformed) to the file. The backfill
shows a progress bar, reports failed lines (they never stop it), and resumes
where it stopped if interrupted (Ctrl-C) and started again: offsets are
stored with the runs. The same from the command line:

    eventflow backfill examples/orders.py:process_order --jsonl orders.jsonl
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import orjson

from connectors.jsonl import JsonlSource
from eventflow import backfill
from examples.orders import process_order


def create(path: Path, count: int) -> None:
    with path.open("wb") as out:
        for i in range(count):
            if i % 100 == 99:
                out.write(b'{"id": "broken"\n')  # a malformed line: a FAILED run, reported
                continue
            amount = random.randrange(100)
            order = {"id": f"past-{i}", "customer_id": f"c{i % 50}", "amount": amount}
            out.write(orjson.dumps(order) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--create", type=int, metavar="N", help="first write N orders to PATH")
    args = parser.parse_args()
    if args.create:
        create(args.path, args.create)
    result = backfill(process_order, JsonlSource(args.path), progress=True)
    print(result.summary())


if __name__ == "__main__":
    main()
