"""Unit-test an App without a broker.

```python
from eventflow.testing import TestApp

async def test_order_flow():
    async with TestApp(app) as test:
        run = await test.publish(orders_source, {"id": "o1", "customer_id": "c1"}, key="c1")
        assert run.state == "COMPLETED"
```

`TestApp(app)` serves a copy of `app` whose subscriptions read from memory
instead of their sources, and record into a temporary store: everything but
the broker runs as in production (decoding and validation, flow controls,
per-key order, retries, failure policies, offsets stored with the runs).
`with TestApp(app) as test:` is the same for sync test code.
"""

from ._testing._app import PendingRun, TestApp
from ._testing._blocking import BlockingPendingRun, BlockingTestApp
from ._testing._memory import DeadLetter, EventNotRunError
from ._testing._stored_runs import FlowRun, RunLog, TaskRun

__all__ = [
    "BlockingPendingRun",
    "BlockingTestApp",
    "DeadLetter",
    "EventNotRunError",
    "FlowRun",
    "PendingRun",
    "RunLog",
    "TaskRun",
    "TestApp",
]
