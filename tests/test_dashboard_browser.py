"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), against a
real server on a loopback port serving the demo shop behind a token: every page clicked
through, what it shows checked against the service, a toggled availability taking effect
in the next Recommend over gRPC, stored text never run as script, and no console error
anywhere. Screenshots of every page go to the test's output folder (and to
``docs/dashboard/`` with ``SHELFRANK_DOCS_SCREENSHOTS=1``, as the README's are made)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import playwright.sync_api as playwright_sync  # a dev dependency: never skipped
import pytest

from shelfrank.client import Client, Event, Item
from shelfrank.datasets.writers import write_features, write_interactions
from shelfrank.server.app import RunningServer, ServerOptions, start

expect = playwright_sync.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "dashboard-test-token"
HOSTILE = "<script>alert(1)</script>"
SEARCHER = "hostile-searcher"  # a shopper whose search query is HOSTILE
DOCS = Path(__file__).resolve().parent.parent / "docs" / "dashboard"
EXPERIMENTS = """
[[experiment]]
name = "home"
salt = "browser"
[[experiment.variant]]
name = "control"
share = 50
setting = "hybrid"
[[experiment.variant]]
name = "popular"
share = 50
setting = "popularity"
"""


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, toy_shop: tuple[Any, Any, Any]
) -> Iterator[RunningServer]:
    """The demo shop behind a token, with an experiment, some feedback and one stored
    evaluation run."""
    from shelfrank.server.cli import main

    root = tmp_path_factory.mktemp("dashboard")
    state = root / "state"
    interactions, _, users = toy_shop
    write_interactions(root / "events.csv", interactions)
    write_features(root / "users.csv", users)
    assert (
        main(
            [
                "evaluate",
                "--protocol",
                "random",
                "--interactions",
                str(root / "events.csv"),
                "--users",
                str(root / "users.csv"),
                "--group-by",
                "segment",
                "--models",
                "hybrid,popularity",
                "--epochs",
                "2",
                "--components",
                "4",
                "--seed",
                "1",
                "--threads",
                "1",
                "--quiet",
                "--save-to",
                str(state),
            ]
        )
        == 0
    )
    (root / "experiments.toml").write_text(EXPERIMENTS)
    running = start(
        ServerOptions(
            state_dir=state,
            port=0,
            http_port=0,
            demo=True,
            token=TOKEN,
            experiments=root / "experiments.toml",
        )
    )
    try:
        assert running.dashboard is not None
        with Client(f"127.0.0.1:{running.port}", token=TOKEN) as client:
            for number in range(40):  # feedback for the experiments page
                if number % 8 == 7:  # a load sample now and then (the sampler's are 10 s apart)
                    running.dashboard.sampler.record()
                user = f"browser-{number}"
                response = client.recommend(user, k=5)
                if number % 3 == 0:
                    client.track(
                        [
                            Event(
                                user,
                                response.item_ids[0],
                                "view",
                                recommendation_id=response.recommendation_id,
                            )
                        ]
                    )
            client.upsert_items([Item(HOSTILE, ["category=" + HOSTILE])])
            client.track([Event(SEARCHER, response.item_ids[0], "search", query=HOSTILE)])
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Fails with the reason rather than skipping, as the PostgreSQL tests do: `make pytest`
    # installs Debian's chromium (`make chromium`).
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (make chromium)")
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Session:
    """One logged-in browser page that records console errors, page errors and dialogs
    (a script injected through stored text would open one), and takes screenshots."""

    def __init__(self, browser: Any, base: str, shots: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.base = base
        self.shots = shots
        self.problems: list[str] = []
        # Chromium logs every non-2xx response as a console error; a step that asks for
        # one on purpose (a 404 page, a refused token) allows exactly that status, once.
        self.allowed: list[int] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("dialog", lambda dialog: self._dialog(dialog))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        for status in self.allowed:
            if f"status of {status}" in message.text:
                self.allowed.remove(status)
                return
        self.problems.append(f"console error: {message.text}")

    def expect_status(self, status: int) -> None:
        """The next step answers ``status`` on purpose (not a problem, once)."""
        self.allowed.append(status)

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog opened: {dialog.message}")
        dialog.dismiss()

    def go(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("SHELFRANK_DOCS_SCREENSHOTS") == "1":
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS / path.name)

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())


@pytest.fixture(scope="module")
def session(
    browser: Any, demo_server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Session]:
    shots = tmp_path_factory.mktemp("screenshots")
    opened = Session(browser, f"http://127.0.0.1:{demo_server.http_port}", shots)
    yield opened
    opened.context.close()
    assert opened.problems == []
    assert opened.allowed == []  # every error status asked for was answered


def test_login_refuses_a_wrong_token_then_lets_the_right_one_in(session: Session) -> None:
    page = session.page
    session.go("/")
    assert "/login" in page.url  # no cookie yet: sent to the login page
    session.shot("login")
    page.fill("#login-form input[type=password]", "wrong")
    session.expect_status(401)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not(:empty)")
    assert "/login" in page.url
    page.fill("#login-form input[type=password]", TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(session.base + "/")
    cookies = {c["name"]: c for c in session.context.cookies()}
    assert cookies["shelfrank_session"]["httpOnly"] is True
    assert cookies["shelfrank_session"]["sameSite"] == "Strict"
    assert TOKEN not in cookies["shelfrank_session"]["value"]


@pytest.mark.parametrize(
    ("start", "landing"),
    [
        ("/experiments", "/experiments"),  # sent to the login page, then back
        ("/login?next=%2F%09%2Fevil.example", "/"),  # a tab: //evil.example to a browser
        ("/login?next=https%3A%2F%2Fevil.example", "/"),
    ],
)
def test_after_login_the_page_goes_where_the_server_redirected(
    browser: Any, demo_server: RunningServer, tmp_path: Path, start: str, landing: str
) -> None:
    fresh = Session(browser, f"http://127.0.0.1:{demo_server.http_port}", tmp_path)
    try:
        fresh.go(start)
        fresh.page.wait_for_selector("#login-form")
        fresh.page.fill("#login-form input[type=password]", TOKEN)
        fresh.page.click("#login-form button[type=submit]")
        fresh.page.wait_for_url(fresh.base + landing)
    finally:
        fresh.context.close()
    assert fresh.problems == []


def test_the_overview_shows_the_serving_model_and_the_counts(
    session: Session, demo_server: RunningServer
) -> None:
    page = session.page
    session.go("/")
    # (Playwright's expect waits without evaluating strings in the page: its CSP forbids it.)
    expect(page.locator("#model-version")).to_contain_text(demo_server.service.state.model_version)
    counts = demo_server.service.store.counts()
    expect(page.locator("#counts")).to_contain_text(f"{counts.events:,}")
    assert counts.events > 60_000  # the demo shop's and the fixture's
    expect(page.locator("#events-chart canvas")).to_have_count(1)  # drawn by uPlot
    expect(page.locator("#latency-chart canvas")).to_have_count(1)
    expect(page.locator("#latency-summary")).to_contain_text("p50")
    session.shot("overview")


def test_a_shopper_shows_their_events_recommendations_and_a_what_if(
    session: Session, demo_server: RunningServer
) -> None:
    page = session.page
    store = demo_server.service.store
    _, first = next(iter(store.iter_events()))
    user = first.user_id
    session.go("/users")
    session.shot("users")
    page.fill("input[name=user_id]", user)
    page.keyboard.press("Enter")
    page.wait_for_url(session.base + "/users/" + quote(user, safe=""))
    page.wait_for_selector("#recommendations tr[data-item-id]")
    assert first.item_id in session.text("#user-events")
    rows = page.locator("#recommendations tr[data-item-id]")
    assert rows.count() == 10
    shown_first = rows.first.get_attribute("data-item-id")
    with Client(f"127.0.0.1:{demo_server.port}", token=TOKEN) as client:
        served = client.recommend(user, k=10, explain=True)
    assert shown_first == served.item_ids[0]  # the page shows what Recommend serves
    explanation = served.items[0].explanation
    assert explanation is not None
    reason = str(explanation.reason)  # a StrEnum: its wire name
    assert reason.replace("_", " ") in rows.first.inner_text().replace("_", " ")
    session.shot("user")
    stored_before = len(store.user_view(user).events)
    form = page.locator("#what-if-form")
    form.locator("input[name=item_id]").first.fill(served.item_ids[-1])
    form.locator("select[name=type]").first.select_option("purchase")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#what-if-result table")
    assert "before" in session.text("#what-if-result").lower()
    session.shot("what-if")
    assert len(store.user_view(user).events) == stored_before  # a what-if stores nothing


def test_an_item_toggled_unavailable_leaves_the_next_recommend(
    session: Session, demo_server: RunningServer
) -> None:
    page = session.page
    user = "toggle-shopper"
    with Client(f"127.0.0.1:{demo_server.port}", token=TOKEN) as client:
        item = client.recommend(user, k=5).item_ids[0]
        session.go("/items")
        session.shot("items")
        page.fill("input[name=item_id]", item)
        page.keyboard.press("Enter")
        page.wait_for_url(session.base + "/items/" + quote(item, safe=""))
        page.wait_for_selector("#similar-items tr[data-item-id]")
        assert "available" in session.text("#availability-state").lower()
        session.shot("item")
        page.click("#availability-toggle")
        expect(page.locator("#availability-state")).to_contain_text("unavailable")
        expect(page.locator("#audit")).to_contain_text("availability")
        assert item not in client.recommend(user, k=5).item_ids
        page.click("#availability-toggle")  # back, for the other tests
        expect(page.locator("#availability-state")).not_to_contain_text("unavailable")


def test_experiments_show_each_variant_with_intervals_and_a_verdict(session: Session) -> None:
    page = session.page
    session.go("/experiments")
    page.wait_for_selector("#experiments table")
    text = session.text("#experiments")
    for word in ("home", "control", "popular", "CTR"):
        assert word in text
    session.shot("experiments")


def test_stored_evaluation_runs_show_their_report_and_charts(session: Session) -> None:
    page = session.page
    session.go("/evaluations")
    runs = page.locator("#evaluations-list input[type=checkbox]")
    expect(runs).to_have_count(1)
    expect(runs.first).to_be_checked()  # the newest run is shown at once
    page.wait_for_selector("#evaluation-view img")
    images = page.locator("#evaluation-view img")
    assert images.count() >= 2
    for index in range(images.count()):  # every chart loaded (naturalWidth 0: broken)
        assert images.nth(index).evaluate("img => img.complete && img.naturalWidth > 0")
    assert "random" in session.text("#evaluation-view")
    session.shot("evaluations")


def test_stored_text_is_shown_never_run(session: Session) -> None:
    page = session.page
    session.go("/items/" + quote(HOSTILE, safe=""))
    page.wait_for_selector("#item-features")
    expect(page.locator("#item-features")).to_contain_text(HOSTILE)
    assert HOSTILE in session.text("h1")
    assert page.locator("#main script").count() == 0
    session.go("/users/" + SEARCHER)  # a search whose query is markup
    expect(page.locator("#user-events")).to_contain_text(HOSTILE)
    assert page.locator("#user-events .event-query").first.inner_text() == HOSTILE
    assert page.locator("#main script").count() == 0
    session.expect_status(404)
    response = session.go("/users/" + quote(HOSTILE, safe=""))  # no such shopper
    assert response.status == 404
    assert HOSTILE in session.text("#main")
    session.shot("not-found")


def test_the_api_answers_scripts_with_the_bearer_token(demo_server: RunningServer) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{demo_server.http_port}/api/overview",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        overview = json.loads(response.read())
    assert overview["model"]["version"] == demo_server.service.state.model_version
