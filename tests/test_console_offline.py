"""The console's page works with the network cut off: nothing it needs comes from elsewhere.

Chromium (Debian's, driven by Playwright) is started with every connection going through a
proxy that does not exist (127.0.0.1:9: nothing listens there) except those to the
console's own origin (`<-loopback>` first removes chromium's implicit bypass of every
loopback address, so other local ports fail too). A probe fetch from the page to an outside
address (TEST-NET-1, RFC 5737) fails; then the page does everything a person does first:
it loads, a click on Brooklyn on the caller map makes the Brooklyn call taker's console
ring, the ladder shows the call's INVITE on hop1..hop4 and its LoST query, Answer and Hang
up work. Apart from the probe, every request the page made was to its own origin.
"""

from __future__ import annotations

import pytest

from console_helpers import CHROMIUM, CHROMIUM_ARGS, needs_chromium, ring_brooklyn, shots_dir
from ng911.console.server import Console

async_api = pytest.importorskip(
    "playwright.async_api", reason="playwright (Python package) is not installed"
)
pytestmark = needs_chromium
DEAD_PROXY = "127.0.0.1:9"
PROBE = "http://192.0.2.1/"  # TEST-NET-1: never on any network
PROBE_JS = """async (url) => {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 8000);
  try {
    await fetch(url, {mode: "no-cors", cache: "no-store", signal: ctl.signal});
    return "reached";
  } catch (e) {
    return "failed: " + e;
  } finally {
    clearTimeout(timer);
  }
}"""


async def test_the_page_works_with_the_network_cut_off(tmp_path):
    shots = shots_dir(tmp_path)
    console = Console(scenario="plain")
    url = await console.start("127.0.0.1", 0)
    origin = url.rstrip("/")
    host_port = origin.split("//")[1]
    args = [
        *CHROMIUM_ARGS,
        f"--proxy-server={DEAD_PROXY}",
        f"--proxy-bypass-list=<-loopback>;{host_port}",
    ]
    requests: list[str] = []
    failed: dict[str, str] = {}
    try:
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            page = await browser.new_page(viewport={"width": 1600, "height": 1100})
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: failed.setdefault(r.url, r.failure or "?"))
            page.on("pageerror", lambda e: print("pageerror:", e))
            await page.goto(url)
            await page.wait_for_selector("body[data-ready='1']")

            # the network is cut off: an outside address cannot be reached from the page
            probe = await page.evaluate(PROBE_JS, PROBE)
            assert probe.startswith("failed"), probe
            assert PROBE in failed, failed
            print("probe:", probe, failed[PROBE])

            # ...and the page works: the Brooklyn call taker's console rings
            call = await ring_brooklyn(page, console)
            # the ladder: the call's INVITE on every hop, and the ESRP's LoST query
            for hop in ("hop1", "hop2", "hop3", "hop4"):
                row = page.locator(f"#ladder tr[data-hop='{hop}']", has_text="INVITE").first
                await row.wait_for(timeout=10000)
                assert await row.get_attribute("data-transport") == "udp"
            await page.locator("#ladder tr[data-type='lost']").first.wait_for(timeout=10000)
            await page.screenshot(path=str(shots / "offline-ringing.png"))

            await call.locator("button.answer").click()
            await page.locator(
                "[data-taker='taker-brooklyn'] .call[data-state='confirmed']"
            ).wait_for(timeout=10000)
            await page.click("[data-taker='taker-brooklyn'] button.hangup")
            for hop in ("hop1", "hop2", "hop3", "hop4"):
                await page.locator(f"#ladder tr[data-hop='{hop}']", has_text="BYE").first.wait_for()
            assert await page.locator("[data-taker='taker-brooklyn'] .call").count() == 0
            await page.screenshot(path=str(shots / "offline-hung-up.png"))
            await browser.close()
    finally:
        await console.close()
    assert (shots / "offline-ringing.png").stat().st_size > 0
    local = [u for u in requests if u != PROBE]
    assert len(local) >= 4, requests  # the page, its script and style, its API
    foreign = [u for u in local if not (u.startswith(origin + "/") or u.startswith("data:"))]
    assert foreign == [], f"the page requested outside its origin: {foreign}"
    assert not any(u.startswith(origin) for u in failed), failed  # nothing of its own failed
