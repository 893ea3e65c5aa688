"""The getting-started app: a flow of two tasks, run on a schedule and by hand."""

from datetime import datetime, timedelta

from connectors.schedule import IntervalSchedule
from eventflow import App, flow, get_run_logger, task


@task(retries=2, retry_delay_seconds=1)
def measure(moment: datetime) -> int:
    return moment.second


@task
def describe(value: int) -> str:
    return "even" if value % 2 == 0 else "odd"


@flow(name="tick")
def tick(scheduled_at: datetime) -> str:
    kind = describe(measure(scheduled_at))
    get_run_logger().info("the tick at %s was %s", scheduled_at, kind)
    return kind


app = App()
app.subscribe(IntervalSchedule(every=timedelta(seconds=2)), tick)

if __name__ == "__main__":
    print(tick(datetime.now()))  # a direct call: one tracked run, then the result
