"""The live console in a real browser: Debian's chromium driven by Playwright (never its
download). Click Brooklyn on the map → the Brooklyn call taker's console rings with the
right location → Answer → the ladder shows every hop in the scenario's colours → Hang up
clears every hop. Every request the page makes goes to the console's own origin.

Screenshots of each step go to `tmp_path`, or to $NG911_CONSOLE_SHOTS when set (the README's
images: `NG911_CONSOLE_SHOTS=docs/console pytest tests/test_console_browser.py`).
"""

from __future__ import annotations

import pytest

from console_helpers import CHROMIUM, needs_chromium, ring_brooklyn
from console_helpers import CHROMIUM_ARGS as ARGS
from console_helpers import shots_dir as _shots
from ng911.console.server import Console

async_api = pytest.importorskip(
    "playwright.async_api", reason="playwright (Python package) is not installed"
)
pytestmark = needs_chromium
EXPECTED = {"tls-e2e": {"hop1": "tls", "hop2": "tls", "hop3": "tls", "hop4": "udp"}}


async def test_click_brooklyn_ring_answer_ladder_hangup(tmp_path):
    shots = _shots(tmp_path)
    console = Console(scenario="tls-e2e")
    url = await console.start("127.0.0.1", 0)
    origin = url.rstrip("/")
    requests: list[str] = []
    try:
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = await browser.new_page(viewport={"width": 1600, "height": 1100})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: print("console:", m.text))
            page.on("pageerror", lambda e: print("pageerror:", e))
            await page.goto(url)
            await page.wait_for_selector("body[data-ready='1']")
            await page.wait_for_selector("[data-taker='taker-brooklyn']")
            await page.screenshot(path=str(shots / "1-network.png"))

            # a person sits at the Brooklyn position: the call rings until Answer
            call = await ring_brooklyn(page, console)
            await page.screenshot(path=str(shots / "2-ringing.png"))
            await page.locator("#takers-panel").screenshot(path=str(shots / "calltaker.png"))

            await call.locator("button.answer").click()
            await page.locator(
                "[data-taker='taker-brooklyn'] .call[data-state='confirmed']"
            ).wait_for(timeout=10000)
            # the route is lit, hop by hop, in the scenario's colours
            for hop, transport in EXPECTED["tls-e2e"].items():
                row = page.locator(f"#ladder tr[data-hop='{hop}']", has_text="INVITE").first
                await row.wait_for(timeout=10000)
                assert await row.get_attribute("data-transport") == transport
                colour = "t-tls" if transport == "tls" else "t-plain"
                assert colour in (await row.get_attribute("class") or "")
            assert await page.locator(".edge.lit").count() >= 4
            assert "mTLS" in await page.text_content("#net")  # a mutual handshake was seen
            await page.screenshot(path=str(shots / "3-answered.png"))
            await page.locator("#network-panel").screenshot(path=str(shots / "network.png"))

            # the message inspector: the INVITE as it crossed hop 3, its PIDF-LO parsed
            await page.locator("#ladder tr[data-hop='hop3']", has_text="INVITE").first.click()
            await page.wait_for_selector("#inspector pre.sip")
            text = await page.inner_text("#inspector")
            assert "INVITE urn:service:sos" in text and "PIDF-LO" in text and "coordinates" in text
            assert "TLS records" in text and " B" in text  # the record sizes
            await page.screenshot(path=str(shots / "4-inspector.png"))
            await page.locator("#inspector-panel").screenshot(path=str(shots / "inspector.png"))

            # the LoST exchange of the call: the findService request and the answer, as XML
            await page.locator("#ladder tr[data-type='lost']").first.click()
            await page.wait_for_selector("#inspector pre.lost-response")
            sent = await page.inner_text("#inspector pre.lost-request")
            got = await page.inner_text("#inspector pre.lost-response")
            assert "<findService" in sent and "urn:service:sos" in sent, sent[:300]
            assert "<findServiceResponse" in got and "<mapping" in got, got[:300]
            assert "sip" in got  # the PSAP's URI the ESRP routes to

            await page.click("[data-taker='taker-brooklyn'] button.hangup")
            try:
                await page.wait_for_function(
                    "document.querySelectorAll('.edge.lit').length === 0", timeout=8000
                )
            except Exception:
                print(
                    await page.evaluate(
                        "JSON.stringify(Object.entries(window.ng911.calls).map(([k,v])=>[k,v.active,[...v.edges]]))"
                    )
                )
                print(console.stats, console.hub.stats())
                raise
            for hop in ("hop1", "hop2", "hop3", "hop4"):
                await page.locator(f"#ladder tr[data-hop='{hop}']", has_text="BYE").first.wait_for()
            await page.wait_for_selector("#stats tr[data-scenario='tls-e2e']")
            assert await page.locator("[data-taker='taker-brooklyn'] .call").count() == 0
            await page.screenshot(path=str(shots / "5-hung-up.png"))
            await browser.close()
    finally:
        await console.close()
    assert requests, "the page made no request at all?"
    foreign = [u for u in requests if not (u.startswith(origin) or u.startswith("data:"))]
    assert foreign == [], f"the page reached outside its origin: {foreign}"


async def test_a_process_chain_live_in_the_page_then_the_finished_run(tmp_path):
    """`ng911 testbed run --processes --console --console-stay`, in a browser: the element
    processes' messages fill the ladder in each hop's colour; once the run is over the page
    still serves it, says so, and the LoST exchange opens with its XML."""
    import asyncio

    from console_helpers import watched_run
    from ng911.console.server import RunConsole
    from ng911.testbed.run import run_testbed

    shots = _shots(tmp_path)
    got_url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    over = asyncio.Event()
    watch = RunConsole(ready=got_url.set_result, stay=True, say=lambda _t: over.set())
    cfg = watched_run(tmp_path, watch, scenarios=["tls-e2e"], calls=10, rate=2.0, processes=True)
    requests: list[str] = []

    async def drive() -> None:
        try:
            url = await asyncio.wait_for(got_url, 60)
            async with async_api.async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=ARGS
                )
                page = await browser.new_page(viewport={"width": 1600, "height": 1100})
                page.on("request", lambda r: requests.append(r.url))
                await page.goto(url)
                await page.wait_for_selector("body[data-ready='1']", timeout=60000)
                for hop, transport in EXPECTED["tls-e2e"].items():
                    row = page.locator(f"#ladder tr[data-hop='{hop}']", has_text="INVITE").first
                    await row.wait_for(timeout=60000)
                    colour = "t-tls" if transport == "tls" else "t-plain"
                    assert colour in (await row.get_attribute("class") or "")
                assert "element processes" in await page.inner_text("#summary")
                note = await page.inner_text("#takers")  # running, or over already
                assert "own processes" in note or "run is over" in note, note
                await asyncio.wait_for(over.wait(), 120)
                await page.wait_for_function(
                    "document.querySelector('#summary').textContent.includes('run finished')",
                    timeout=10000,
                )
                await page.locator("#ladder tr[data-type='lost']").first.click()
                await page.wait_for_selector("#inspector pre.lost-response")
                assert "<findService" in await page.inner_text("#inspector pre.lost-request")
                await page.screenshot(path=str(shots / "processes-finished.png"))
                await browser.close()
        finally:
            watch.release()

    result, _ = await asyncio.gather(run_testbed(cfg), drive())
    assert result.failed == 0
    assert requests and all(u.startswith(url_prefix(requests[0])) for u in requests)


def url_prefix(url: str) -> str:
    """scheme://host:port of `url`."""
    return "/".join(url.split("/")[:3])
