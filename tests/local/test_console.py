"""The job console in a real browser: Playwright drives Debian's Chromium against the local
Factory with real jobs (one trained to the end, one stopped from the page), as two tenants.

Chromium comes from the distribution (`make test` installs it with apt-get where it is
missing); where there is none, these tests are skipped with that reason, and in CI (CI=true)
they fail instead, so that CI always runs them.
"""

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from aifactory_local.factory import LocalFactory
from tests.local.conftest import ALICE_KEY, BOB_KEY, FAKE_TRAINER, TERMINAL, Client

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium")
SLOW_TRAINER = Path(__file__).with_name("slow_trainer.py")
SLOW_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:slow"
TIMEOUT_MS = 60_000

if CHROMIUM is None:
    reason = "no chromium on PATH (Debian's chromium package; `make test` installs it as root)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import (  # noqa: E402 - only where a browser can run
    Browser,
    Page,
    Playwright,
    expect,
    sync_playwright,
)


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFactory]:
    """The local Factory of tests/local, plus a trainer that trains until it is stopped."""
    with LocalFactory(
        api_keys={"alice": ALICE_KEY, "bob": BOB_KEY},
        state_dir=tmp_path_factory.mktemp("aifactory-state"),
        callback_retry_base_seconds=1,
        trainers={
            "*:sklearn_report": [sys.executable, str(FAKE_TRAINER)],
            "*:slow": [sys.executable, str(SLOW_TRAINER)],
        },
        stop_grace_seconds=5,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no storage, no cookies) and a page that records CSP refusals."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    refusals: list[str] = []
    tab.on(
        "console",
        lambda message: (
            refusals.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    tab.csp_refusals = refusals  # type: ignore[attr-defined]
    yield tab
    context.close()
    assert refusals == [], "the page broke its own Content-Security-Policy"


@pytest.fixture(scope="module")
def finished(factory: LocalFactory, payload_module: Callable[..., dict[str, Any]]) -> str:
    """Alice's slot_tagger job, trained to the end with a loss line every 10 steps."""
    alice = Client(factory.api_url, ALICE_KEY)
    body = payload_module()
    body["training_model"]["hyperparameters"].update(
        {"process.train.steps": "200", "logSteps": "10"}
    )
    name = alice.create(body)

    # Ended, with its report kept and its callback delivered (moments after the end)
    def settled(s: dict[str, Any]) -> bool:
        return s["status"] in TERMINAL and bool(s["report"]) and s["callback"]["state"] != "pending"

    status = alice.wait(name, settled, timeout=180)
    assert status["status"] == "Completed", status
    assert status["report"]["details"], status
    return name


@pytest.fixture(scope="module")
def payload_module(tagging_dataset: Any, receiver: Any) -> Callable[..., dict[str, Any]]:
    from aifactory_local.example import example_request
    from tests.local.conftest import CALLBACK_SECRET, DATASET_SECRET

    def make(image: str | None = None) -> dict[str, Any]:
        body = example_request(tagging_dataset.url, receiver.url)
        body["dataset_endpoint"]["headers"] = {"x-api-key": DATASET_SECRET}
        body["callback_url"]["headers"] = {"x-api-key": CALLBACK_SECRET}
        if image:
            body["training_model"]["image"] = image
        return body

    return make


def console_url(factory: LocalFactory) -> str:
    return f"{factory.api_url}/console"


def sign_in(page: Page, factory: LocalFactory, key: str) -> None:
    page.goto(console_url(factory))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def status_calls(page: Page) -> list[str]:
    calls: list[str] = []
    page.on("request", lambda r: calls.append(r.url) if "check_training_status" in r.url else None)
    return calls


# ---- the page itself --------------------------------------------------------------------------


def test_console_is_served_without_a_key_with_a_policy_of_its_own_origin(factory):
    # Given no API key at all, when the page and one of its assets are fetched
    page = requests.get(console_url(factory), timeout=30)
    script = requests.get(f"{console_url(factory)}/console.js", timeout=30)
    # Then both are served, under a policy that allows nothing but the page's own origin
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    # And the page names no other host (no CDN): it works offline
    assert "http://" not in page.text and "https://" not in page.text
    # And nothing but the console's own files is served: not its code, not a path
    for asset in ("app.py", "..%2Fapp.py", "missing.js", "uPlot.LICENSE"):
        answer = requests.get(f"{console_url(factory)}/{asset}", timeout=30)
        assert answer.status_code == 404, asset
        assert answer.json()["status"] == "error"
    # And the data routes still refuse a caller without a key
    listing = requests.post(f"{factory.api_url}/check_trained_job", timeout=30)
    assert listing.status_code == 403


def test_a_wrong_key_gets_the_apis_message_and_is_not_kept(factory, page):
    # When someone signs in with a key the API does not know
    sign_in(page, factory, "not-a-key-of-this-factory")
    # Then the page shows the API's own answer, and asks again
    expect(page.get_by_role("alert")).to_have_text("Forbidden")
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert page.evaluate("localStorage.length") == 0


# ---- a tenant's jobs ------------------------------------------------------------------------


def test_sign_in_lists_the_tenants_jobs_and_keeps_the_key_out_of_url_and_storage(
    factory, page, finished
):
    # When Alice signs in
    sign_in(page, factory, ALICE_KEY)
    # Then her finished job is listed, its name a link to its page, with its statuses
    link = page.get_by_role("link", name=finished)
    expect(link).to_be_visible()
    row = page.get_by_role("row").filter(has=link)
    expect(row).to_contain_text("Completed")
    expect(row).to_contain_text(f"{finished[17:21]}-{finished[21:23]}-{finished[23:25]}")
    # And the key is in this tab's sessionStorage at most: never localStorage, a cookie or the URL
    assert ALICE_KEY not in page.url
    assert page.evaluate("JSON.stringify(localStorage)") == "{}"
    assert page.context.cookies() == []
    stored = page.evaluate("JSON.stringify(sessionStorage)")
    assert json.loads(stored) == {"aifactory.apiKey": ALICE_KEY}
    # And filtering by another status leaves it out (the API's own filter)
    page.get_by_label("Status").select_option("Failed")
    expect(page.get_by_role("link", name=finished)).to_have_count(0)
    expect(page.get_by_text("No jobs.")).to_be_visible()
    page.get_by_label("Status").select_option("Completed")
    expect(page.get_by_role("link", name=finished)).to_be_visible()


def test_the_list_pages_with_the_apis_next_token(factory, page, finished, payload_module):
    # Given Alice has more jobs than one page of the console holds (20)
    alice = Client(factory.api_url, ALICE_KEY)
    names = []
    for _ in range(21):  # each stopped at once: the page needs them listed, not trained
        names.append(alice.create(payload_module(image=SLOW_IMAGE)))
        assert alice.post("stop_training_job", {"job_name": names[-1]}).status_code == 200
        alice.wait_terminal(names[-1], timeout=120)
    # When she signs in, the newest 20 are on the first page, and the older ones on the next
    sign_in(page, factory, ALICE_KEY)
    expect(page.get_by_role("link", name=names[-1])).to_be_visible()
    expect(page.get_by_role("link", name=finished)).to_have_count(0)
    page.get_by_role("button", name="Next page").click()
    expect(page.get_by_role("link", name=finished)).to_be_visible()
    expect(page.get_by_role("link", name=names[0])).to_be_visible()
    page.get_by_role("button", name="First page").click()
    expect(page.get_by_role("link", name=names[-1])).to_be_visible()


def test_a_finished_job_shows_its_curve_report_and_links_and_stops_polling(
    factory, page, finished, tmp_path_factory
):
    alice = Client(factory.api_url, ALICE_KEY)
    report = alice.status(finished)["report"]
    # When Alice opens her finished job from the list of her completed ones
    sign_in(page, factory, ALICE_KEY)
    page.get_by_label("Status").select_option("Completed")
    page.get_by_role("link", name=finished).click()
    # Then the loss curve is drawn, as an image named "Training loss"
    curve = page.get_by_role("img", name="Training loss")
    expect(curve.locator("canvas")).to_have_count(1)
    # And the evaluation report is a table, a row per class, with a per-class F1 chart
    table = page.get_by_role("table", name="Evaluation report")
    for row in report["details"]:
        heading = page.get_by_role("rowheader", name=str(row["no"]), exact=True)
        expect(table.get_by_role("row").filter(has=heading)).to_contain_text(row["f1-score"])
    expect(page.get_by_role("img", name="F1 per class").locator("canvas")).to_have_count(1)
    # And the timeline has reached its end, the log shows the trainer's lines
    expect(page.locator("#timeline li[data-step=ended]")).to_have_class("done")
    expect(page.locator("#timeline li[data-step=training]")).to_have_class("done")
    expect(page.get_by_label("Training log")).to_contain_text("loss=")
    # And the callback's state, with a Redeliver button; a Download model link; no Stop
    expect(page.locator("#callback-state")).to_contain_text("delivered")
    expect(page.get_by_role("button", name="Redeliver")).to_be_visible()
    download = page.get_by_role("link", name="Download model")
    href = download.get_attribute("href") or ""
    assert "model.tar.gz" in href and href.startswith("http")
    assert requests.get(href, timeout=30).status_code == 200
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    # And nothing runs, so the page stops asking
    calls = status_calls(page)
    page.wait_for_timeout(5000)
    assert calls == []
    # The picture for the README: saved in the test's output
    shot = tmp_path_factory.mktemp("console") / "finished-job.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot of a finished job's page: {shot}")


def test_redeliver_sends_the_callback_again(factory, page, finished, receiver):
    # Given the finished job's callback has been delivered
    assert receiver.wait_for_job(finished, timeout=30) is not None
    before = len(receiver.for_job(finished))
    sign_in(page, factory, ALICE_KEY)
    page.goto(f"{console_url(factory)}#job={finished}")
    # When Redeliver is clicked, then the receiver gets the callback once more
    page.get_by_role("button", name="Redeliver").click()
    expect(page.locator("#callback-state")).to_contain_text("redelivery accepted")
    deadline = time.monotonic() + 30
    while len(receiver.for_job(finished)) == before:
        assert time.monotonic() < deadline, "no redelivered callback"
        time.sleep(0.2)


def test_a_running_job_is_followed_and_stopped_from_the_page(factory, page, payload_module):
    # Given a job that trains until it is stopped
    alice = Client(factory.api_url, ALICE_KEY)
    name = alice.create(payload_module(image=SLOW_IMAGE))
    sign_in(page, factory, ALICE_KEY)
    page.get_by_role("link", name=name).click()
    # Then its page follows it while it runs: it reaches Training without a reload
    expect(page.locator("#job-secondary")).to_have_text("Training", timeout=120_000)
    expect(page.get_by_label("Training log")).to_contain_text("training until stopped")
    # When Stop is clicked
    page.get_by_role("button", name="Stop").click()
    # Then the job stops (the trainer is told), and the page shows it ended
    expect(page.locator("#job-status")).to_have_text("Stopped", timeout=120_000)
    assert alice.status(name)["status"] == "Stopped"
    expect(page.get_by_label("Training log")).to_contain_text("SIGTERM received")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()


def test_a_second_tenant_does_not_see_the_first_ones_jobs(factory, page, finished):
    # When Bob signs in
    sign_in(page, factory, BOB_KEY)
    # Then none of Alice's jobs is listed
    expect(page.get_by_text("No jobs.")).to_be_visible()
    expect(page.get_by_role("link", name=finished)).to_have_count(0)
    # And her job's page, opened by name, gets the API's answer for a job he does not own
    page.goto(f"{console_url(factory)}#job={finished}")
    expect(page.get_by_role("alert")).to_have_text(f"job_name: no training job named {finished}")
    expect(page.get_by_role("table", name="Evaluation report")).to_be_hidden()
