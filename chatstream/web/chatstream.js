// ChatStream chat page: streams answers from POST chat_stream (each chunk is the whole answer so far
// followed by "<::EOS::>"), can stop, regenerate and clear, and shows refusals (429) and errors.
(function () {
  "use strict";

  const FINISH = "<::EOS::>";
  const ESCAPE = "<::ESC::>";
  const configElement = document.getElementById("chatstream-config");
  const config = configElement ? JSON.parse(configElement.textContent || "{}") : {};
  const styleOpts = config.style_opts || {};
  // 0.3's icon options: an icon is shown when its URL is given and it is not switched off
  const icons = {
    assistant: styleOpts.show_ai_icon !== false && styleOpts.ai_icon_url ? styleOpts.ai_icon_url : null,
    user: styleOpts.show_human_icon !== false && styleOpts.human_icon_url ? styleOpts.human_icon_url : null,
  };
  // 0.3's developMode: send the session cookie to another origin too (a page served elsewhere, CORS)
  const credentials = config.developMode ? "include" : "same-origin";

  const $ = (id) => document.getElementById(id);
  const messages = $("messages");
  const input = $("input");
  const sendButton = $("send");
  const stopButton = $("stop");
  const regenerateButton = $("regenerate");
  const clearButton = $("clear");
  const errorBox = $("error");
  const form = $("composer");

  if (styleOpts.button_label_stop_generating) stopButton.textContent = styleOpts.button_label_stop_generating;
  if (styleOpts.button_label_regenerate) regenerateButton.textContent = styleOpts.button_label_regenerate;
  if (styleOpts.label_input_placeholder) input.placeholder = styleOpts.label_input_placeholder;
  if (icons.user && styleOpts.show_human_icon_on_input !== false) input.before(iconElement(icons.user));

  function iconElement(url) {
    const image = document.createElement("img");
    image.className = "icon";
    image.src = url;
    image.alt = "";
    return image;
  }

  let controller = null; // AbortController of the answer being streamed
  let lastAnswer = null; // the last assistant bubble that belongs to the history

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  function hideError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  function addMessage(role, text) {
    const element = document.createElement("div");
    element.className = "message " + role;
    element.textContent = text;
    if (icons[role]) {
      const line = document.createElement("div");
      line.className = "line " + role;
      line.append(iconElement(icons[role]), element);
      messages.appendChild(line);
    } else {
      messages.appendChild(element);
    }
    messages.scrollTop = messages.scrollHeight;
    return element;
  }

  function setText(element, text, note) {
    element.textContent = text;
    if (note) {
      const small = document.createElement("span");
      small.className = "note";
      small.textContent = note;
      element.appendChild(small);
    }
    messages.scrollTop = messages.scrollHeight;
  }

  function setBusy(busy) {
    sendButton.disabled = busy;
    clearButton.disabled = busy;
    stopButton.hidden = !busy;
    const regenerateEnabled = config.regenerate_enabled !== false && styleOpts.regenerate_enabled !== false;
    regenerateButton.hidden = busy || lastAnswer === null || !regenerateEnabled;
  }

  // The page asks for delta mode ("stream_mode": "delta"): each chunk is only the new text plus "<::EOS::>",
  // so an answer costs O(n) bytes and each chunk is appended to one text node (no re-render of the message).
  // A literal "<::EOS::>" / "<::ESC::>" inside a chunk arrives as "<::ESC::>EOS::>" / "<::ESC::>ESC::>";
  // each chunk is unescaped on its own, before it is appended.
  function unescapeChunk(chunk) {
    return chunk.split(ESCAPE).join("<::");
  }

  // Appends streamed text to a message bubble (replacing what it showed before on the first piece), at most
  // once per animation frame: the pieces that arrived meanwhile go in together, so the message is laid out
  // and scrolled once per frame, not once per token.
  function streamInto(element) {
    let node = null;
    let pending = "";
    let scheduled = false;
    function flush() {
      scheduled = false;
      if (node === null) {
        element.textContent = "";
        node = document.createTextNode("");
        element.appendChild(node);
      }
      if (pending) node.appendData(pending);
      pending = "";
      messages.scrollTop = messages.scrollHeight;
    }
    return {
      append(piece) {
        pending += piece;
        if (!scheduled) {
          scheduled = true;
          requestAnimationFrame(flush);
        }
      },
      note(text) {
        flush();
        const small = document.createElement("span");
        small.className = "note";
        small.textContent = text;
        element.appendChild(small);
      },
      flush,
    };
  }

  async function describeRefusal(response) {
    let body = {};
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    if (response.status === 429 || body.error === "too_many_requests") {
      return body.detail || "The server is busy right now. Please try again in a moment.";
    }
    return "Request failed (" + response.status + "): " + (body.detail || body.error || response.statusText);
  }

  // Send a message (or regenerate the last answer) and stream the answer into `bubble`. True when the
  // server kept the turn: it answered in full or was stopped while streaming (the partial answer is
  // kept); false when it refused the request, was stopped before it started, or the answer broke off
  // (the server then keeps the history as it was).
  async function ask(userInput, regenerate, bubble) {
    hideError();
    controller = new AbortController();
    setBusy(true);
    bubble.classList.add("pending");
    let refused = null;
    let started = false; // the server began streaming (it sends the headers once generation starts)
    const target = streamInto(bubble);
    try {
      const response = await fetch("chat_stream", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user_input: userInput, regenerate: regenerate, stream_mode: "delta" }),
        signal: controller.signal,
        credentials,
      });
      const type = response.headers.get("content-type") || "";
      if (!response.ok || type.indexOf("application/json") >= 0) {
        refused = await describeRefusal(response);
        return false;
      }
      started = true;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let received = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += decoder.decode(value, { stream: true });
        let end = received.indexOf(FINISH);
        while (end >= 0) { // each complete chunk, in order; the rest is the start of the next one
          const piece = unescapeChunk(received.slice(0, end));
          target.append(piece);
          received = received.slice(end + FINISH.length);
          end = received.indexOf(FINISH);
        }
      }
      target.flush();
      return true;
    } catch (error) {
      if (error.name === "AbortError") {
        if (!started) return false; // stopped while waiting in the queue: the server kept nothing
        target.note("(stopped)");
        return true;
      }
      refused = "The answer broke off (" + error.message + "); it was not kept. Please try again.";
      return false;
    } finally {
      bubble.classList.remove("pending");
      controller = null;
      if (refused !== null) showError(refused);
      bubble.dataset.refused = refused !== null ? "1" : "";
      setBusy(false);
    }
  }

  async function sendMessage() {
    const userInput = input.value;
    if (!userInput.trim() || controller) return;
    input.value = "";
    const question = addMessage("user", userInput);
    const bubble = addMessage("assistant", "");
    const accepted = await ask(userInput, false, bubble);
    if (!accepted) { // refused: nothing was recorded, so take the message back
      (question.closest(".line") || question).remove();
      (bubble.closest(".line") || bubble).remove();
      input.value = userInput;
    } else {
      lastAnswer = bubble;
    }
    setBusy(false);
  }

  async function regenerate() {
    if (!lastAnswer || controller) return;
    const previous = lastAnswer.textContent;
    setText(lastAnswer, "");
    const accepted = await ask(null, true, lastAnswer);
    if (!accepted) setText(lastAnswer, previous);
  }

  async function clearContext() {
    if (controller) return;
    hideError();
    try {
      const response = await fetch("clear_context", { method: "POST", credentials });
      if (!response.ok) {
        showError(await describeRefusal(response));
        return;
      }
    } catch (error) {
      showError("Could not clear the conversation: " + error.message);
      return;
    }
    messages.textContent = "";
    lastAnswer = null;
    if (config.welcomeMessage) addMessage("assistant", config.welcomeMessage);
    setBusy(false);
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); sendMessage(); });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  stopButton.addEventListener("click", () => { if (controller) controller.abort(); });
  regenerateButton.addEventListener("click", regenerate);
  clearButton.addEventListener("click", clearContext);

  if (config.clearContextOnReload) {
    clearContext();
  } else if (config.welcomeMessage) {
    addMessage("assistant", config.welcomeMessage);
  }
  setBusy(false);
  input.focus();
})();
