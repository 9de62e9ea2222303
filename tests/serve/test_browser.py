"""End to end in headless Chromium: load the page, search a movie, add it, get
recommendations; and the known-user path with its recent history.

Uses Debian's `chromium` (never a browser that Playwright downloads). Outside CI a
machine without it skips with a message; in CI (CI=true) a missing browser fails,
since .ci/run installs it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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


def _chromium() -> str:
    path = os.environ.get("BSTREC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if Path(path).is_file():
        return path
    msg = (
        "Chromium not found (apt-get install -y chromium, or set BSTREC_CHROMIUM); "
        "the browser test needs it"
    )
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser test needs playwright (dev extra)"
    )
    executable = _chromium()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, live_server):
    yield from _open(browser, live_server)


def _open(browser, url: str):
    """A page at ``url`` that must show no script errors while it is used."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # a 404 the page asked for on purpose (an unknown user) logs "Failed to load
    # resource"; script errors are what must not happen
    page.on(
        "console",
        lambda m: m.type == "error" and "Failed to load" not in m.text and errors.append(m.text),
    )
    page.set_default_timeout(15_000)
    page.goto(url + "/")
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def test_build_a_history_and_get_recommendations(page, tmp_path):
    from playwright.sync_api import expect

    expect(page.locator("#health")).to_contain_text("bst")
    # before any answer: no empty headings, no note about scores
    expect(page.locator("#recent-title")).to_be_hidden()
    expect(page.locator("#score-note")).to_be_hidden()
    expect(page.locator("label[for=feat-gender]")).to_have_text("Gender")
    expect(page.locator("#feat-gender option")).to_have_text(["not given", "female", "male"])
    page.fill("#search", "movie 12")
    page.press("#search", "Enter")
    hit = page.locator('#search-results li[data-movie-id="12"]')
    expect(hit).to_be_visible()
    hit.get_by_role("button", name="Add").click()
    page.fill("#search", "MÓVIE 13")  # accents and case do not matter
    page.press("#search", "Enter")
    page.locator('#search-results li[data-movie-id="13"]').get_by_role("button", name="Add").click()
    expect(page.locator("#history-draft li")).to_have_count(2)
    # a ranking model reads no stars, so the page does not ask for them
    expect(page.locator("#history-draft .draft-stars")).to_have_count(0)
    expect(page.locator("#stars-note")).to_be_hidden()
    page.select_option("#feat-gender", "F")  # demographics from /health go along
    page.select_option("#k", "5")
    with page.expect_request("**/recommendations") as sent:
        page.click("#history-go")
    assert sent.value.post_data_json == {"history": [12, 13], "k": 5, "user": {"gender": "F"}}

    cards = page.locator("#recs li.card")
    expect(cards).to_have_count(5)
    expect(page.locator("#recs-title")).to_contain_text("your history")
    first = cards.first
    expect(first.locator(".title")).to_contain_text("Movie")
    # scores read as a match relative to the first pick, and the page says so
    expect(first.locator(".score")).to_have_text("match 100%")
    matches = [int(t.split()[1].rstrip("%")) for t in cards.locator(".score").all_inner_texts()]
    assert matches == sorted(matches, reverse=True) and all(0 <= m <= 100 for m in matches)
    assert first.locator(".score").get_attribute("title").startswith("model score ")
    expect(page.locator("#score-note")).to_contain_text("compared with the first pick")
    expect(page.locator("#recent-title")).to_be_visible()
    expect(page.locator("#recs .because").first).to_contain_text("because you watched")
    expect(page.locator("#recent li")).to_have_count(2)
    expect(page.locator("#error")).to_be_hidden()
    shot = Path(os.environ.get("BSTREC_SCREENSHOT", tmp_path / "screenshot.png"))
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_known_user_shows_recommendations_and_recent_history(page):
    from playwright.sync_api import expect

    page.fill("#user-id", "3")
    page.click("#user-go")
    expect(page.locator("#recs-title")).to_contain_text("user 3")
    expect(page.locator("#recs li.card")).to_have_count(5)
    expect(page.locator("#recent li")).to_have_count(10)
    expect(page.locator("#recent .stars").first).to_contain_text("★")


def test_unknown_user_shows_the_error(page):
    from playwright.sync_api import expect

    page.fill("#user-id", "424242")
    page.click("#user-go")
    expect(page.locator("#error")).to_contain_text("unknown user id: 424242")


def test_movielens_demographics_read_as_names_in_order(page, live_server):
    """The page shows what /health lists, in its order: here a MovieLens 1M model's
    features (the tiny test run has only two), put in /health's answer on the way."""
    import httpx
    from playwright.sync_api import expect

    from bstrec.serve.labels import choices, feature_label

    vocab = {
        "age": ["18-24", "25-34", "35-44", "45-49", "50-55", "56+", "Under 18"],
        "occupation": sorted(str(i) for i in range(21)),  # as the data stores them
        "zip1": [str(i) for i in range(10)],
    }
    health = httpx.get(live_server + "/health").json()
    health["user_feature_choices"] = [
        {"name": n, "label": feature_label(n), "choices": choices(n, v, "ml-1m")}
        for n, v in vocab.items()
    ]
    context = page.context.browser.new_context()
    other = context.new_page()
    other.route("**/health", lambda route: route.fulfill(json=health))
    other.goto(live_server + "/")
    expect(other.locator("#feat-age option")).to_have_text(
        ["not given", "Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
    )
    occupations = other.locator("#feat-occupation option")
    expect(occupations).to_have_count(22)
    expect(occupations.nth(1)).to_have_text("other or not specified")
    expect(occupations.nth(2)).to_have_text("academic/educator")
    expect(occupations.nth(11)).to_have_text("K-12 student")
    expect(occupations.nth(21)).to_have_text("writer")
    assert occupations.nth(13).get_attribute("value") == "12"  # the code goes back
    expect(other.locator("label[for=feat-zip1]")).to_have_text("ZIP code starts with")
    context.close()


@pytest.fixture(scope="module")
def rating_page(browser, tmp_path_factory):
    """The page of a rating model: the factors peer, fitted in about a second."""
    from bstrec.config import RunConfig
    from bstrec.recommend import Recommender
    from bstrec.run_dir import load_run
    from bstrec.serve.app import create_app
    from bstrec.train import train
    from tests.factories import tiny_dataset
    from tests.serve.conftest import running

    cfg = RunConfig()
    cfg.model.name, cfg.model.task, cfg.model.rating_factors = "factors", "rating", 4
    out = tmp_path_factory.mktemp("rating-page") / "run"
    train(cfg, tiny_dataset(n_users=40, per_user=12), out, log=lambda _m: None)
    with running(create_app(Recommender(load_run(out)))) as url:
        yield from _open(browser, url)


def test_a_rating_model_asks_for_stars_and_sends_them(rating_page):
    from playwright.sync_api import expect

    page = rating_page
    expect(page.locator("#health")).to_contain_text("(rating)")
    for movie in (12, 13):
        page.fill("#search", f"movie {movie}")
        page.press("#search", "Enter")
        hit = page.locator(f'#search-results li[data-movie-id="{movie}"]')
        hit.get_by_role("button", name="Add").click()
    stars = page.locator("#history-draft .draft-stars")
    expect(stars).to_have_count(2)
    expect(page.locator("#stars-note")).to_be_visible()
    with page.expect_request("**/recommendations") as sent:
        page.click("#history-go")  # no stars given: none sent
    assert "ratings" not in sent.value.post_data_json
    stars.nth(0).select_option("4.5")
    with page.expect_request("**/recommendations") as sent:
        page.click("#history-go")
    assert sent.value.post_data_json["ratings"] == [4.5, None]
    cards = page.locator("#recs li.card")
    expect(cards.first.locator(".score")).to_contain_text("★")
    # removing a movie keeps the stars of the others with their movies
    page.get_by_role("button", name="remove Movie 12 (2002)").click()
    expect(stars).to_have_count(1)
    expect(stars.nth(0)).to_have_value("")
