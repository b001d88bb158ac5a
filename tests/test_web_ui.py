"""The chat page in a real headless browser (Debian's chromium driven by Playwright)."""

import asyncio
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import client_role_chat_page

# the page's roles, plus what the test reads (the history, the load) and agents that chat as other clients
PAGE_USER = client_role_chat_page["user"]["apis"]
PAGE_ROLES = {
    "user": {"apis": {**PAGE_USER, "allow": [*PAGE_USER["allow"], "get_prompt", "get_load"]}},
    "agent": {"apis": {"allow": "all", "auth_method": "nothing", "use_session": False}},
}

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = Path(os.environ.get("CHATSTREAM_UI_SCREENSHOT", "/tmp/chatstream_web_ui.png"))


class NumberedGenerator:
    """Answers "answer N to <input>" plus ``extra_words`` filler words, one word per ``delay`` seconds;
    blocks while ``gate`` is clear; raises after ``fail_after`` words when set."""

    def __init__(self):
        self.count = 0
        self.extra_words = 0
        self.delay = 0.02
        self.fail_after = None
        self.gate = threading.Event()
        self.gate.set()

    def stream(self, chat_prompt, params=None, should_stop=None):
        self.count += 1
        words = f"answer {self.count} to {chat_prompt.get_requester_last_msg()}".split()
        words += ["more"] * self.extra_words
        while not self.gate.wait(0.01):
            if should_stop and should_stop():
                return
        for i, word in enumerate(words):
            if i == self.fail_after:
                raise RuntimeError("simulated model failure")
            time.sleep(self.delay)
            yield word if i == 0 else " " + word


@pytest.fixture
def chromium():
    if os.environ.get("CHATSTREAM_SKIP_BROWSER") == "1":
        pytest.skip("CHATSTREAM_SKIP_BROWSER=1")
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: `apt-get install -y chromium` (or set CHATSTREAM_SKIP_BROWSER=1 to skip)")
    return CHROMIUM


async def test_chat_page_streams_stops_regenerates_clears_and_shows_429(chromium, serve):
    from playwright.async_api import async_playwright, expect

    generator = NumberedGenerator()
    chat_stream = ChatStream(chat_generator=generator, num_of_concurrent_executions=1, max_queue_size=1,
                             too_many_request_as_http_error=True, session_secret="0123456789abcdef-ui",
                             client_roles=PAGE_ROLES)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True, "web_ui_params": {"welcomeMessage": "Welcome! Ask me anything."}})
    base_url = serve(app)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 900, "height": 700})
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(base_url + "/")
            await expect(page).to_have_title("ChatStream")
            assistant = page.locator(".message.assistant")
            await expect(assistant.first).to_have_text("Welcome! Ask me anything.")

            # send: the answer streams into a bubble
            await page.fill("#input", "hello there")
            await page.press("#input", "Enter")
            await expect(page.locator(".message.user").last).to_have_text("hello there")
            await expect(assistant.last).to_have_text("answer 1 to hello there")
            await expect(page.locator("#regenerate")).to_be_visible()

            # regenerate replaces the last answer, on the page and on the server
            await page.click("#regenerate")
            await expect(assistant.last).to_have_text("answer 2 to hello there")
            history = (await (await page.request.get(base_url + "/get_prompt")).json())["history"]
            assert [c["message"] for c in history["chat_contents"]] == ["hello there", "answer 2 to hello there"]

            # an answer that breaks off: the page says so and takes the message back; the server kept nothing
            generator.fail_after = 2
            await page.fill("#input", "break please")
            await page.click("#send")
            await expect(page.locator("#error")).to_contain_text("broke off")
            await expect(page.locator("#input")).to_have_value("break please")
            await expect(page.locator(".message.user")).to_have_count(1)
            await expect(assistant.last).to_have_text("answer 2 to hello there")
            assert (await (await page.request.get(base_url + "/get_prompt")).json())["history"] == history
            generator.fail_after = None

            # stop: a long answer is cut, the partial text stays, the slot is freed
            generator.extra_words, generator.delay = 200, 0.05
            await page.fill("#input", "tell me a long story")
            await page.click("#send")
            await expect(page.locator("#stop")).to_be_visible()
            await expect(assistant.last).to_contain_text("more more")
            await page.click("#stop")
            await expect(assistant.last).to_contain_text("(stopped)")
            await expect(page.locator("#stop")).to_be_hidden()
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                deadline = time.monotonic() + 3
                while (await client.get("/get_load")).json()["chatstream_workers"][0]["running"]:
                    assert time.monotonic() < deadline, "the stopped generation still holds its slot"
                    await asyncio.sleep(0.05)

                async def until_load(key, value):
                    while (await client.get("/get_load")).json()["chatstream_workers"][0][key] != value:
                        await asyncio.sleep(0.02)

                # stop while queued behind another client: the page takes the message back, nothing was kept
                generator.extra_words, generator.delay = 0, 0.02
                generator.gate.clear()
                agents = {"X-FastSession-Skip": "skip"}
                others = [asyncio.create_task(client.post("/chat_stream", json={"user_input": "o0"}, headers=agents))]
                await until_load("running", 1)
                await page.fill("#input", "queued question")
                await page.click("#send")
                await until_load("waiting", 1)
                await page.click("#stop")
                await expect(page.locator("#input")).to_have_value("queued question")
                await expect(page.locator(".message.user")).to_have_count(2)
                await expect(page.locator("#error")).to_be_hidden()
                await until_load("waiting", 0)

                # 429: the slot and the queue are taken by two other clients
                others.append(asyncio.create_task(client.post("/chat_stream", json={"user_input": "o1"},
                                                              headers=agents)))
                await until_load("waiting", 1)
                await page.fill("#input", "are you there?")
                await page.click("#send")
                await expect(page.locator("#error")).to_be_visible()
                await expect(page.locator("#error")).to_contain_text("busy")
                await expect(page.locator("#input")).to_have_value("are you there?")
                await expect(page.locator(".message.user")).to_have_count(2)
                await page.screenshot(path=str(SCREENSHOT))
                generator.gate.set()
                assert [r.status_code for r in await asyncio.gather(*others)] == [200, 200]

            # clear: the page and the server forget the conversation
            await page.click("#clear")
            await expect(page.locator(".message")).to_have_count(1)
            await expect(page.locator("#error")).to_be_hidden()
            prompt = await (await page.request.get(base_url + "/get_prompt")).json()
            assert prompt["prompt"] is None
            assert errors == []
        finally:
            await browser.close()
