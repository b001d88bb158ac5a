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


# Reads /chat_stream in the browser and renders it: the 0.3 protocol as the page rendered it before (the whole
# answer so far set on every chunk, then scrolled to the end, which lays the message out); delta mode as the
# page renders it now (the chunks that arrived within one animation frame appended to one text node at once).
# Returns the body's bytes, the chunks, the time spent rendering and from the request to the answer shown.
READ_AND_RENDER = """async (mode) => {
  const FINISH = "<::EOS::>";
  const element = document.createElement("div");
  document.body.appendChild(element);
  const node = document.createTextNode("");
  element.appendChild(node);
  const started = performance.now();
  const response = await fetch("chat_stream", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({user_input: window.ANSWER_INPUT, stream_mode: mode})});
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let received = "", bytes = 0, chunks = 0, renderMs = 0, pending = "", scheduled = false;
  const flush = () => {
    const before = performance.now();
    scheduled = false;
    node.appendData(pending);
    pending = "";
    document.body.scrollTop = element.scrollHeight;
    renderMs += performance.now() - before;
  };
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    bytes += value.byteLength;
    received += decoder.decode(value, {stream: true});
    let end = received.indexOf(FINISH);
    while (end >= 0) {
      const frame = received.slice(0, end).split("<::ESC::>").join("<::");
      if (mode === "delta") {
        pending += frame;
        if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
      } else {
        const before = performance.now();
        node.data = frame;
        document.body.scrollTop = element.scrollHeight;
        renderMs += performance.now() - before;
      }
      chunks += 1;
      received = received.slice(end + FINISH.length);
      end = received.indexOf(FINISH);
    }
  }
  if (pending) flush();
  const text = node.data;
  element.remove();
  return {bytes, chunks, renderMs, totalMs: performance.now() - started, text};
}"""


async def test_a_2000_token_answer_delta_mode_vs_the_03_protocol_in_the_browser(chromium, serve):
    from playwright.async_api import async_playwright, expect

    words = [f"word{i:05d}" for i in range(2000)]  # the generator mock echoes them: 2,000 tokens
    answer = " ".join(words)
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret="0123456789abcdef-ui",
                             max_new_tokens=4000, context_len=40_000, client_roles=PAGE_ROLES)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    base_url = serve(app)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(base_url + "/")
            await page.evaluate("(text) => { window.ANSWER_INPUT = text; }", answer)
            figures = {mode: await page.evaluate(READ_AND_RENDER, mode) for mode in ("full", "delta")}
            for mode, got in figures.items():
                assert got["text"] == answer and got["chunks"] == len(words), mode
                print(f"\n{mode:>5}: {got['bytes']:>10,} bytes, {got['chunks']} chunks, "
                      f"render {got['renderMs']:8.1f} ms, request to last chunk shown {got['totalMs']:8.1f} ms")
            answer_bytes = len(answer.encode())
            assert figures["delta"]["bytes"] == answer_bytes + len(b"<::EOS::>") * len(words) < 2 * answer_bytes
            assert figures["full"]["bytes"] > 500 * answer_bytes  # 0.3: the answer so far, every token

            # the page itself (delta mode): the whole answer shows in its bubble
            started = time.perf_counter()
            await page.fill("#input", answer)
            await page.press("#input", "Enter")
            bubble = page.locator(".message.assistant").last
            await expect(bubble).to_have_text(answer, timeout=60_000)
            await expect(page.locator("#stop")).to_be_hidden()
            print(f" page: the 2,000-token answer shown in {(time.perf_counter() - started) * 1000:8.1f} ms")
            assert errors == []
        finally:
            await browser.close()
