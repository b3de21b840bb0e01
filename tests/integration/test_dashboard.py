"""The dashboard in a real browser: headless Chromium on the page the local stack serves after a finished run.

Chromium is Debian's (`apt-get install chromium`, at /usr/bin/chromium), driven by Playwright's client only:
`playwright install` downloads a browser build, which these machines cannot fetch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot.local.stack import LocalStack
from shared.ledger import Run, RunStatus
from shared.storage import AzureBlobStore
from tests.integration.stack_fixtures import finished_runs, start_stack, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "ahoy-chat" / "v1"
# Where the screenshot goes (build/ is ignored by git); docs/dashboard.png is a copy of one, made by hand.
SCREENSHOTS = Path(os.environ.get("AUTOPILOT_SCREENSHOT_DIR", ROOT / "build" / "screenshots"))
# The page's own refreshes must carry the key it was opened with (in Azure, its function key).
KEY = "local-test-key"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("dashboard-stack"))
    yield stack
    stack.down(report=lambda line: None)


@pytest.fixture(scope="module")
def finished_run(stack: LocalStack) -> Run:
    """One dataset run to its end, and one message the queue could not read (so a poison message shows)."""
    from azure.storage.queue import QueueClient

    state = stack.load()
    assert state is not None
    store = AzureBlobStore(state.connection_string)
    for path in (SAMPLE / "train_sft.jsonl", SAMPLE / "test_sft.jsonl", SAMPLE / "autopilot.json"):
        store.upload("training-data", f"ahoy-chat/v1/{path.name}", path.read_bytes())
    # Not base64: the queue trigger cannot decode it and the host moves it to validate-dataset-poison at once.
    QueueClient.from_connection_string(state.connection_string, "validate-dataset").send_message("not base64 {")
    run = wait_for(lambda: finished_runs(stack), 120, "the run to finish", stack)[0]
    assert run.status is RunStatus.SUCCEEDED, run.error_message
    return run  # type: ignore[no-any-return]


def test_a_person_sees_the_run_its_stages_the_loss_chart_and_the_endpoint(stack: LocalStack, finished_run: Run) -> None:
    from playwright.sync_api import expect, sync_playwright

    state = stack.load()
    assert state is not None
    run = finished_run
    shots = SCREENSHOTS
    shots.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots in {shots}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            problems: list[str] = []
            page.on(
                "console",
                lambda message: problems.append(f"{message.text} at {message.location}")
                if message.type == "error"
                else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            refreshes: list[str] = []
            page.on(
                "request", lambda request: refreshes.append(request.url) if request.resource_type == "fetch" else None
            )
            url = f"{state.functions_url}/api/dashboard?code={KEY}"
            response = page.goto(url)
            assert response is not None and response.ok
            assert response.headers["content-type"].startswith("text/html")
            # The run's row: all nine stages done, from received to live.
            row = page.locator(f'tr.run-row[data-run-id="{run.run_id}"]')
            expect(row).to_be_visible()
            expect(row.locator(".badge")).to_have_text("succeeded")
            expect(row.locator("li.stage")).to_have_count(9)
            expect(row.locator("li.stage-done")).to_have_count(9)
            # Its details: validation, the loss chart, the smoke replies and the rollout's traffic steps.
            card = page.locator(f'details[id="run-{run.run_id}"]')
            expect(card).to_have_attribute("open", "")
            expect(card.locator(".validation .badge")).to_have_text("valid")
            chart = card.locator("svg.loss-chart")
            expect(chart).to_be_visible()
            expect(chart).to_contain_text("train loss")
            expect(card.locator("tr.smoke-row")).to_have_count(len(run.smoke["results"]))
            expect(card.locator("svg.traffic-chart")).to_contain_text("promoted")
            # The endpoint it went live on: its deployment, with all traffic, and what it would cost.
            endpoint = page.locator(f'tr.endpoint-row[data-endpoint="{run.endpoint_name}"]')
            expect(endpoint).to_be_visible()
            expect(endpoint).to_contain_text(run.deployment_name)
            expect(endpoint).to_contain_text("100 %")
            expect(endpoint).to_contain_text("$")
            # The message no function could read, in its poison queue.
            expect(page.locator("tr.set-aside-row", has_text="validate-dataset-poison")).to_be_visible()
            # The page refreshes itself, with the key it was opened with, and nothing broke its script.
            first = page.locator("main#dashboard").get_attribute("data-generated")
            expect(page.locator("main#dashboard")).not_to_have_attribute("data-generated", first or "", timeout=15000)
            assert refreshes and all(f"code={KEY}" in address and "part=main" in address for address in refreshes)
            expect(page.locator(f'tr.run-row[data-run-id="{run.run_id}"]')).to_be_visible()
            (shots / "dashboard.html").write_text(page.content())
            assert problems == [], problems
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "dashboard.png").stat().st_size > 10_000
