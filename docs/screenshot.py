"""Make docs/screenshot.png: the web page on a real run, driven in headless Chromium.

    python docs/screenshot.py RUN_DIR [--out docs/screenshot.png] [--search matrix ...]

Not part of the tests (it needs a trained run on real data); the browser test in
tests/serve/test_browser.py drives the same page on a tiny run in CI.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    ap.add_argument(
        "--search",
        nargs="+",
        default=["toy story", "matrix", "star wars new hope", "fargo"],
        help="queries whose first hit goes into the history, oldest first",
    )
    ap.add_argument("--k", default="10")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    import uvicorn
    from playwright.sync_api import expect, sync_playwright

    from bstrec.serve.app import create_app

    torch.set_num_threads(1)
    server = uvicorn.Server(
        uvicorn.Config(create_app(args.run_dir), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.locator("#health")).to_contain_text("movies")
            for i, q in enumerate(args.search):
                page.fill("#search", q)
                page.press("#search", "Enter")
                page.wait_for_function(
                    "q => document.querySelector('#search-results li button') && "
                    "document.querySelector('#search').value === q",
                    arg=q,
                )
                page.wait_for_timeout(300)  # let a debounced search settle
                page.locator("#search-results li button.add").first.click()
                expect(page.locator("#history-draft li")).to_have_count(i + 1)
            page.select_option("#k", args.k)
            page.click("#history-go")
            expect(page.locator("#recs li.card")).to_have_count(int(args.k))
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
