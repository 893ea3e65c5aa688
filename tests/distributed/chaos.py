"""A chaos soak in DBOS's style (issue 21): workers, a broker and PostgreSQL of its own,
orders at a steady rate, and at random moments one of: SIGKILL a worker and
restart it, SIGSTOP then SIGCONT one, bounce the broker, restart PostgreSQL.
Then every line of the contract is checked from the store and the topic.

    scripts/chaos --minutes 60 [--seed N] [--workers 3] [--rate 60]

prints its seed first: the same seed makes the same choices (the timing of a
real system still varies). tests/distributed/test_chaos.py runs ~3 minutes of it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests._kafka import Kafka
from tests._services import Postgres
from tests.distributed._contract import ContractReport
from tests.distributed._load import SteadyProducer
from tests.distributed._scenario import Scenario


@dataclass
class Chaos:
    """Faults at random moments, one at a time; `log` says what happened when."""

    scenario: Scenario
    kafka: Kafka
    postgres: Postgres
    rng: random.Random
    log: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f}s {text}"
        self.log.append(line)
        print(line, flush=True)

    async def run(self, seconds: float) -> None:
        actions: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (self.kill_and_restart, 3),
            (self.freeze, 3),
            (self.bounce_broker, 1),
            (self.restart_postgres, 1),
        ]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(self.rng.uniform(3, 12))  # a random moment
            (action,) = self.rng.choices([a for a, _ in actions], [w for _, w in actions])
            await action()
        self.note("chaos over")

    def _victim(self) -> str:
        return self.rng.choice(sorted(self.scenario.workers))

    async def kill_and_restart(self) -> None:
        name, down = self._victim(), self.rng.uniform(0, 5)
        self.note(f"SIGKILL {name}, restart in {down:.1f}s")
        await asyncio.to_thread(self.scenario.workers[name].kill)
        await asyncio.sleep(down)
        self.scenario.start_worker(name)

    async def freeze(self) -> None:
        name, frozen = self._victim(), self.rng.uniform(2, 20)
        self.note(f"SIGSTOP {name} for {frozen:.1f}s")
        worker = self.scenario.workers[name]
        worker.signal_group(signal.SIGSTOP)
        try:
            await asyncio.sleep(frozen)
        finally:
            worker.signal_group(signal.SIGCONT)

    async def bounce_broker(self) -> None:
        down = self.rng.uniform(1, 10)
        self.note(f"broker stopped for {down:.1f}s")
        await asyncio.to_thread(self.kafka.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.kafka.start)
        self.note("broker back")

    async def restart_postgres(self) -> None:
        how, down = self.rng.choice(["stop", "kill"]), self.rng.uniform(1, 8)
        self.note(f"PostgreSQL {how} for {down:.1f}s")
        await asyncio.to_thread(self.postgres.stop if how == "stop" else self.postgres.kill)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.postgres.start)
        self.note("PostgreSQL back")


async def soak(
    kafka: Kafka,
    postgres: Postgres,
    logs: Path,
    *,
    seconds: float,
    seed: int,
    workers: int = 3,
    rate: float = 60,
    events: int | None = None,
) -> tuple[ContractReport, list[str]]:
    """Run the soak on this broker and server (both are bounced); the report and the log."""
    url = postgres.create_database()
    scenario = await Scenario.create(kafka.bootstrap, url, logs)
    for i in range(workers):
        scenario.start_worker(f"w{i + 1}")
    total = events if events is not None else int(rate * seconds)
    producer = SteadyProducer(kafka.bootstrap, scenario.topic, total, rate, keys=200, seed=seed)
    producer.start()
    chaos = Chaos(scenario, kafka, postgres, random.Random(seed))
    chaos.note(
        f"seed {seed}: {workers} workers, {total} events at {rate}/s, {seconds:.0f}s of chaos"
    )
    try:
        await chaos.run(seconds)
        await producer.wait(timeout=total / rate + 300)
        chaos.note(f"produced {producer.sent} ({producer.send_errors} sends retried)")
        await scenario.wait_done(producer.sent, timeout=300 + total / 50)
        chaos.note("every event has a COMPLETED run")
    finally:
        await producer.stop()
        report = await scenario.finish()
    chaos.note(report.summary())
    return report, chaos.log


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=60, help="events per second")
    args = parser.parse_args()
    # the producer's client complains at every broker bounce: that is the point here
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"chaos seed {seed} (rerun: scripts/chaos --seed {seed} --minutes {args.minutes})")
    kafka, postgres = Kafka.start_new(), Postgres.start_new()
    logs = Path(tempfile.mkdtemp(prefix="eventflow-chaos-"))
    print(f"worker logs in {logs}", flush=True)
    try:
        report, _ = asyncio.run(
            soak(
                kafka,
                postgres,
                logs,
                seconds=args.minutes * 60,
                seed=seed,
                workers=args.workers,
                rate=args.rate,
            )
        )
    finally:
        from tests.runtime._workers import Worker

        Worker.kill_all()
        kafka.remove()
        postgres.remove()
    print(f"chaos seed {seed}: {'; '.join(report.violations()) or 'the contract holds'}")
    return 1 if report.violations() else 0


if __name__ == "__main__":
    sys.exit(main())
