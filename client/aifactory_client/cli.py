"""`aifactory`: the AI Factory from a terminal.

The API URL and key come from --url/--api-key or AIFACTORY_URL/AIFACTORY_API_KEY. Every
command takes --json for machine-readable output. Errors print the Factory's message and
exit 1.
"""

import base64
import functools
import json
import secrets
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from aifactory_client.client import KEY_ENV, URL_ENV, Client
from aifactory_client.errors import FactoryError
from aifactory_client.models import JobStatus, Report
from aifactory_client.receiver import CallbackReceiver, ReceivedCallback, masked_headers
from aifactory_client.tables import new_console, print_table

# A callback signing secret: Standard Webhooks' prefix and base64 of 32 random bytes.
SIGNING_SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
# How the API writes a time (CreationTime, TrainingEndTime, ...).
API_TIME = "%Y-%m-%d %H:%M:%S"
STATUS_STYLE = {
    "InProgress": "cyan",
    "Completed": "green",
    "Failed": "red",
    "Stopping": "yellow",
    "Stopped": "yellow",
}


def _emit_json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", by_alias=True, exclude_none=False)
    click.echo(json.dumps(data, indent=2))


def _client(ctx: click.Context) -> Client:
    opts = ctx.find_root().params
    if not opts.get("url"):
        raise click.UsageError(f"no Factory URL: give --url URL, or set {URL_ENV}")
    if not opts.get("api_key"):
        raise click.UsageError(f"no API key: give --api-key KEY, or set {KEY_ENV}")

    def say_retrying(line: str) -> None:
        click.echo(line, err=True)

    try:
        return Client(
            opts["url"], opts["api_key"], retries=opts.get("retries", 4), on_retry=say_retrying
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A subcommand with --json, whose Factory errors exit 1 with the Factory's message."""

    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FactoryError as exc:
            if kwargs.get("as_json"):
                click.echo(
                    json.dumps(
                        {"status": "error", "http_status": exc.status, "message": exc.message}
                    )
                )
            else:
                click.echo(f"Error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group()
@click.option("--url", envvar=URL_ENV, help=f"The API's base URL [env {URL_ENV}].")
@click.option(
    "--api-key", envvar=KEY_ENV, help=f"The x-api-key [env {KEY_ENV}].", show_default=False
)
@click.option("--retries", default=4, show_default=True, help="Retries of 429/5xx answers.")
@click.version_option(package_name="aifactory-client")
def main(url: str | None, api_key: str | None, retries: int) -> None:
    """Train models with the AI Factory from the terminal."""


# -- tables -----------------------------------------------------------------------------------
def report_table(report: Report, title: str | None = None) -> Table:
    """The per-class report: one row per class, then the weighted average."""
    table = Table(title=title)
    table.add_column("class")
    for column in ("precision", "recall", "f1-score", "support"):
        table.add_column(column, justify="right")
    for row in report.details:
        table.add_row(row.no, row.precision, row.recall, row.f1_score, row.support)
    avg = report.avg
    table.add_section()
    table.add_row(
        "avg (weighted)", avg.precision, avg.recall, avg.f1_score, avg.support, style="bold"
    )
    return table


def _status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def status_table(status: JobStatus, elapsed: float | None = None) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", status.job_name or "")
    table.add_row("status", _status_text(status.status))
    table.add_row("secondary status", status.secondary_status or "")
    if status.staged_records is not None:
        table.add_row("staged records", f"{status.staged_records} ({status.staged_pages} pages)")
    table.add_row("created", status.creation_time or "")
    if status.training_end_time:
        table.add_row("ended", status.training_end_time)
    if status.failure_reason:
        table.add_row("failure reason", Text(status.failure_reason, style="red"))
    if status.callback is not None:
        cb = status.callback
        detail = f"{cb.state}, {cb.attempts} attempt(s)"
        if cb.last_error:
            detail += f", last error: {cb.last_error}"
        table.add_row("callback", detail)
    if elapsed is not None:
        table.add_row("elapsed", f"{elapsed:.1f} s")
    return table


def _show_end(console: Console, status: JobStatus) -> None:
    print_table(console, status_table(status))
    if status.report is not None:
        title = f"Per-class report of {status.job_name}"
        print_table(console, report_table(status.report, title=title))
    elif status.ended:
        console.print("(no evaluation report)")


# -- commands ---------------------------------------------------------------------------------
@main.command()
@click.argument("request_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the job to its end; exit 0 only if Completed.")
@click.option("--idempotency-key", help="Idempotency-Key to send (default: a new one).")
@click.option("--timeout", type=float, default=None, help="Give up waiting after SECONDS.")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Polling interval.")
@command
@click.pass_context
def create(
    ctx: click.Context,
    request_file: Path,
    wait: bool,
    idempotency_key: str | None,
    timeout: float | None,
    poll: float,
    as_json: bool,
) -> None:
    """Start a training job from REQUEST_FILE (the seed's JSON request)."""
    try:
        request = json.loads(request_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise click.BadParameter(f"not a JSON file: {exc}", param_hint="REQUEST_FILE") from None
    client = _client(ctx)
    created = client.create(request, idempotency_key=idempotency_key)
    if not wait:
        if as_json:
            _emit_json(created)
        else:
            new_console().print(f"created [bold]{created.job_name}[/bold]")
        return
    final = _follow(client, created.job_name, timeout, poll, as_json)
    sys.exit(0 if final.status == "Completed" else 1)


def _follow(
    client: Client, name: str, timeout: float | None, poll: float, as_json: bool
) -> JobStatus:
    """Wait for the job, with a live display (or JSON lines), then show how it ended."""
    started = time.monotonic()
    if as_json:

        def on_change_json(status: JobStatus) -> None:
            click.echo(json.dumps(status.model_dump(mode="json", by_alias=True)))

        return client.wait(name, timeout, on_change_json, poll=poll, poll_max=max(poll, 5.0))
    console = new_console()
    console.print(f"following [bold]{name}[/bold]")
    first: list[JobStatus] = []
    with Live(Text("waiting for the first status..."), console=console, transient=True) as live:

        def on_change(status: JobStatus) -> None:
            if not first:
                first.append(status)
            live.update(status_table(status, time.monotonic() - started))

        final = client.wait(name, timeout, on_change, poll=poll, poll_max=max(poll, 5.0))
    if first and first[0].ended:
        # Nothing was followed: say how long the job itself ran.
        console.print(Group(Text(f"already ended: {_ran_for(final)}")))
    else:
        console.print(Group(Text(f"ended after {time.monotonic() - started:.1f} s")))
    _show_end(console, final)
    return final


def _ran_for(status: JobStatus) -> str:
    """`Completed at 2026-11-28 20:14:41, 10 s after it was created`: from the job's own
    times, in whole seconds."""
    try:
        created = datetime.strptime(status.creation_time or "", API_TIME)
        ended = datetime.strptime(status.training_end_time or "", API_TIME)
    except ValueError:
        return f"{status.status} at {status.training_end_time or 'an unknown time'}"
    seconds = int((ended - created).total_seconds())
    return f"{status.status} at {status.training_end_time}, {seconds} s after it was created"


@main.command()
@click.option("--status", "status_filter", type=click.Choice(list(STATUS_STYLE)))
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N jobs.")
@command
@click.pass_context
def jobs(ctx: click.Context, status_filter: str | None, limit: int | None, as_json: bool) -> None:
    """The caller's jobs, newest first."""
    found = []
    for job in _client(ctx).jobs(status=status_filter, page_size=min(limit or 100, 100)):
        found.append(job)
        if limit is not None and len(found) >= limit:
            break
    if as_json:
        _emit_json([job.model_dump(mode="json", exclude_none=True) for job in found])
        return
    table = Table()
    # A job's name is what the other commands take: never cut short, nor wrapped.
    table.add_column("job", no_wrap=True)
    for column in ("status", "created", "ended"):
        table.add_column(column)
    for job in found:
        table.add_row(
            job.TrainingJobName,
            _status_text(job.TrainingJobStatus),
            job.CreationTime,
            job.TrainingEndTime or "",
        )
    print_table(new_console(), table)


@main.command()
@click.argument("name")
@click.option("--watch", is_flag=True, help="Follow the job to its end.")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Polling interval.")
@command
@click.pass_context
def status(ctx: click.Context, name: str, watch: bool, poll: float, as_json: bool) -> None:
    """One job's state (with --watch, followed to its end)."""
    client = _client(ctx)
    if watch:
        final = _follow(client, name, None, poll, as_json)
        sys.exit(0 if final.status == "Completed" else 1)
    current = client.status(name)
    if as_json:
        _emit_json(current)
    else:
        _show_end(new_console(), current)


@main.command()
@click.argument("name")
@command
@click.pass_context
def stop(ctx: click.Context, name: str, as_json: bool) -> None:
    """Stop a job that is staging or training."""
    answer = _client(ctx).stop(name)
    if as_json:
        _emit_json(answer)
    else:
        new_console().print(f"stopping [bold]{answer.job_name}[/bold]")


@main.command("model-url")
@click.argument("name")
@command
@click.pass_context
def model_url(ctx: click.Context, name: str, as_json: bool) -> None:
    """A freshly presigned link to the job's model.tar.gz."""
    answer = _client(ctx).model_url(name)
    if as_json:
        _emit_json(answer)
    else:
        click.echo(answer.model)
        click.echo(f"expires at {answer.expires_at} UTC", err=True)


@main.command()
@click.argument("name")
@command
@click.pass_context
def redeliver(ctx: click.Context, name: str, as_json: bool) -> None:
    """Send a finished job's callback again."""
    answer = _client(ctx).redeliver(name)
    if as_json:
        _emit_json(answer)
    else:
        new_console().print(f"callback of [bold]{answer.job_name}[/bold] queued for delivery")


@main.command()
@click.argument("name")
@command
@click.pass_context
def report(ctx: click.Context, name: str, as_json: bool) -> None:
    """The per-class table of a finished job's evaluation report."""
    current = _client(ctx).status(name)
    if as_json:
        report = current.report
        _emit_json(report.model_dump(mode="json", by_alias=True) if report else None)
    elif current.report is not None:
        title = f"Per-class report of {name}"
        print_table(new_console(), report_table(current.report, title=title))
    else:
        why = "it has not ended" if not current.ended else "it has no evaluation report"
        click.echo(f"No report for {name}: {why} (status {current.status}).", err=True)
        sys.exit(1)


@main.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing lines until the job ends.")
@click.option("--timestamps", is_flag=True, help="Print each line's time (UTC) before it.")
@click.option("--poll", type=float, default=2.0, show_default=True, help="Polling interval.")
@command
@click.pass_context
def logs(
    ctx: click.Context, name: str, follow: bool, timestamps: bool, poll: float, as_json: bool
) -> None:
    """The job's training log (with --follow, as it is written, until the job ends)."""
    client = _client(ctx)
    lines = client.follow_logs(name, poll=poll) if follow else client.logs(name)
    for event in lines:
        if as_json:
            click.echo(json.dumps(event.model_dump(mode="json")))
        elif timestamps:
            click.echo(f"{event.timestamp}  {event.message}")
        else:
            click.echo(event.message)


LOSS = "train:loss"


def _latest(series: list[Any]) -> float | None:
    return float(series[-1].value) if series else None


@main.command()
@click.argument("name")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Polling interval.")
@click.option(
    "--loss-every",
    type=float,
    default=5.0,
    show_default=True,
    help="Read the latest loss at most every SECONDS.",
)
@command
@click.pass_context
def watch(ctx: click.Context, name: str, poll: float, loss_every: float, as_json: bool) -> None:
    """A progress bar of the job's training (step, percent, loss, ETA), then its report.

    Exits 0 when the job ends Completed, 1 otherwise."""
    client = _client(ctx)
    loss: list[float | None] = [None]
    loss_read = [-float("inf")]

    def latest_loss(status: JobStatus) -> float | None:
        if status.progress is not None and time.monotonic() - loss_read[0] >= loss_every:
            loss_read[0] = time.monotonic()
            loss[0] = _latest(client.metrics(name).metrics.get(LOSS, []))
        return loss[0]

    if as_json:

        def on_change_json(status: JobStatus) -> None:
            line = status.model_dump(mode="json", by_alias=True)
            line["loss"] = latest_loss(status)
            click.echo(json.dumps(line))

        final = client.wait(name, None, on_change_json, poll=poll, poll_max=max(poll, 5.0))
        sys.exit(0 if final.status == "Completed" else 1)

    console = new_console()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    task = bar.add_task(name, total=None, loss="-")
    total: list[int | None] = [None]

    def on_change(status: JobStatus) -> None:
        words = status.status if status.ended else status.secondary_status or status.status
        progress = status.progress
        if progress is not None:
            total[0] = progress.total_steps or total[0]
            value = latest_loss(status)
            bar.update(
                task,
                completed=progress.step,
                total=progress.total_steps,
                loss=f"{value:.4f}" if value is not None else "-",
                description=f"{name} {words}",
            )
        else:
            bar.update(task, description=f"{name} {words}")

    with bar:
        final = client.wait(name, None, on_change, poll=poll, poll_max=max(poll, 5.0))
        # Where training ended: its last step and loss.
        series = client.metrics(name).metrics
        last_loss = _latest(series.get(LOSS, []))
        last_step = _latest(series.get("train:step", []))
        if last_step is not None:
            bar.update(
                task,
                completed=int(last_step),
                total=total[0] or int(last_step),
                loss=f"{last_loss:.4f}" if last_loss is not None else "-",
            )
    if last_loss is not None:
        console.print(f"final loss {last_loss:.4f}")
    _show_end(console, final)
    sys.exit(0 if final.status == "Completed" else 1)


@main.command()
@command
def secret(as_json: bool) -> None:
    """A new callback signing secret (whsec_...).

    Put it in a job's callback_url.signing_secret (Standard Webhooks form: whsec_ and the
    base64 of 32 random bytes), and give the same secret to whatever verifies the callbacks
    (`aifactory listen --secret`, verify_callback).
    """
    value = SIGNING_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()
    if as_json:
        _emit_json({"signing_secret": value})
    else:
        click.echo(value)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8901, show_default=True, type=int)
@click.option("--secret", help="The job's signing_secret (whsec_...): verify each callback.")
@click.option("--count", type=int, default=None, help="Exit after N callbacks.")
@click.option(
    "--headers", "show_headers", is_flag=True, help="Show each callback's headers (masked)."
)
@command
def listen(
    host: str,
    port: int,
    secret: str | None,
    count: int | None,
    show_headers: bool,
    as_json: bool,
) -> None:
    """A callback receiver: prints each callback and its report (verified with --secret).

    Answers 204 to a callback it accepts, 401 to one whose signature does not verify."""
    console = new_console()

    def show(received: ReceivedCallback) -> None:
        _print_callback(console, received, as_json, show_headers)

    try:
        receiver = CallbackReceiver(host, port, secret=secret, on_receive=show)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    with receiver:
        if not as_json:
            console.print(
                f"listening on {receiver.base_url}/" + (" (verifying signatures)" if secret else "")
            )
        try:
            # Short waits, so that Ctrl-C is noticed at once.
            while not receiver.wait_handled(count if count is not None else 1 << 62, 0.5):
                pass
        except KeyboardInterrupt:
            pass


def _print_callback(
    console: Console, received: ReceivedCallback, as_json: bool, show_headers: bool = False
) -> None:
    verdict, callback = received.verdict, received.callback
    if as_json:
        data = callback.model_dump(mode="json", by_alias=True) if callback else None
        click.echo(json.dumps({"verdict": verdict, "status": received.status, "callback": data}))
        return
    if show_headers:
        console.print(f"POST {received.path}\n{masked_headers(received.headers)}", markup=False)
    if callback is None:
        answer = f"answered {received.status}"
        console.print(f"[red]callback {verdict}[/red] ({len(received.body)} bytes, {answer})")
        if received.status < 300:  # JSON, but not a callback this client reads: show it
            console.print(received.body.decode("utf-8", "replace"), markup=False)
        return
    console.print(
        f"callback for [bold]{callback.job_name}[/bold]: ",
        _status_text(callback.status),
        f" ({verdict})",
        sep="",
    )
    if callback.failure_reason:
        console.print(f"  failure reason: {callback.failure_reason}")
    if callback.log is not None:
        console.print(report_table(callback.log))
