"""``mirrorsync serve`` in a real browser: Debian's headless Chromium, driven by Playwright
(``executable_path``: no browser is downloaded). Pages are read as a person sees
them: rendered, links followed, screenshots written to the test's directory."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Dialog, Page, sync_playwright

import webview
from conftest import run_cli
from webview import SCRIPT_NAME, XSS_NAME, Served, WebDb

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def webdb(tmp_path_factory: pytest.TempPathFactory) -> WebDb:
    return webview.build(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def served(webdb: WebDb) -> Iterator[Served]:
    running = Served(webdb.config, webdb.config.parent)
    yield running
    assert running.stop()[0] == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        reason = f"no {CHROMIUM} (apt install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


#: Messages of every dialog a page opened: an alert() would be a script that ran.
DIALOGS: list[str] = []


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()

    def record(dialog: Dialog) -> None:
        DIALOGS.append(dialog.message)
        dialog.dismiss()

    opened.on("dialog", record)
    yield opened
    context.close()


def test_overview_lists_the_stacks_and_links_each(
    page: Page, served: Served, tmp_path: Path
) -> None:
    page.goto(served.url + "/")
    assert page.locator("tr.stack td:first-child a").all_inner_texts() == ["e4s", "root"]
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    assert (tmp_path / "overview.png").stat().st_size > 10_000
    page.get_by_role("link", name="root", exact=True).click()
    page.wait_for_load_state()
    assert page.url == served.url + "/stacks/test/develop/root"
    assert page.locator("h1").inner_text() == "develop/root"


def test_stack_chart_points_equal_the_history(
    page: Page, served: Served, webdb: WebDb, tmp_path: Path
) -> None:
    history = json.loads(
        run_cli("-c", str(webdb.config), "history", "--release", "develop", "--stack", "root",
                "--json", cwd=webdb.config.parent).stdout
    )  # fmt: skip
    page.goto(served.url + "/stacks/test/develop/root")
    points = page.locator("svg.chart circle.point")
    assert points.count() == len(history) == 3
    shown = [
        (int(p.get_attribute("data-version") or ""), int(p.get_attribute("data-specs") or ""))
        for p in points.all()
    ]
    assert shown == [(h["version"], h["spec_count"]) for h in history]
    # Higher on the chart means more specs: the drawn points follow the numbers.
    boxes = [p.bounding_box() for p in points.all()]
    ys = [box["y"] for box in boxes if box is not None]
    counts = [h["spec_count"] for h in history]
    for i in range(len(counts) - 1):
        assert (ys[i] > ys[i + 1]) == (counts[i] < counts[i + 1]) or counts[i] == counts[i + 1]
    rows = page.locator("table.versions tr.version")
    texts = {
        r.get_attribute("data-version"): r.locator("td").all_inner_texts()[3:5] for r in rows.all()
    }
    assert texts == {str(h["version"]): [f"+{h['added']}", f"-{h['removed']}"] for h in history}
    page.screenshot(path=str(tmp_path / "stack.png"), full_page=True)
    assert (tmp_path / "stack.png").stat().st_size > 10_000


def test_diff_page_shows_the_right_hashes(page: Page, served: Served) -> None:
    page.goto(served.url + "/stacks/test/develop/root")
    page.fill("form.diff input[name=from]", "1")
    page.fill("form.diff input[name=to]", "3")
    page.click("form.diff button")
    page.wait_for_load_state()
    before, after = webview.held(0, "root"), webview.held(2, "root")
    added = set(page.locator("tr.spec.added code.hash").all_inner_texts())
    removed = set(page.locator("tr.spec.removed code.hash").all_inner_texts())
    assert added == after - before and removed == before - after
    assert added and removed
    counts = page.locator("p.counts").inner_text()
    assert f"+{len(added)}" in counts and f"-{len(removed)}" in counts


def test_names_holding_markup_are_shown_as_text(page: Page, served: Served) -> None:
    for name in (SCRIPT_NAME, XSS_NAME):
        page.goto(served.url + "/packages/" + quote(name, safe=""))
        assert page.locator("h1").inner_text() == name
    page.goto(served.url + "/stacks/test/develop/root/diff?from=1&to=2")
    names = page.locator("tr.spec td:nth-child(2)").all_inner_texts()
    assert SCRIPT_NAME in names and XSS_NAME in names
    page.goto(served.url + "/events?type=spec.added")
    assert SCRIPT_NAME in page.locator("table.events").inner_text()
    for path in ("/packages/" + quote(SCRIPT_NAME, safe=""), "/events", "/search?q=%3C"):
        page.goto(served.url + path)
        assert page.evaluate("document.querySelectorAll('script, img').length") == 0
    assert DIALOGS == []
