// The playground page: a conversation shared by one or two policies, replies streamed
// from /api/playground/chat (server-sent events read from the fetch body).
(function () {
  "use strict";
  const form = document.getElementById("playground");
  if (!form) return;
  const csrf = window.PLAYGROUND_CSRF;
  const sides = ["left", "right"];
  // turns: [{user: "...", replies: {left: "...", right: "..."}}]
  let turns = [];
  let busy = false;

  function policyOf(side) {
    return document.getElementById("pg-" + side).value;
  }

  function column(side) {
    return document.getElementById("pg-column-" + side);
  }

  function messagesFor(side) {
    const messages = [];
    turns.forEach(function (turn) {
      messages.push({ role: "user", content: turn.user });
      if (turn.replies[side]) messages.push({ role: "assistant", content: turn.replies[side] });
    });
    return messages;
  }

  function sampling() {
    const data = new FormData(form);
    return {
      temperature: parseFloat(data.get("temperature")),
      top_k: parseInt(data.get("top_k"), 10),
      top_p: parseFloat(data.get("top_p")),
      max_new_tokens: parseInt(data.get("max_new_tokens"), 10),
      seed: parseInt(data.get("seed"), 10),
    };
  }

  function bubble(side, role, text) {
    const div = document.createElement("div");
    div.className = "msg msg-" + role;
    div.dataset.role = role;
    div.textContent = text; // model text is text, never HTML
    column(side).appendChild(div);
    return div;
  }

  async function stream(side, turn) {
    const out = bubble(side, "assistant", "");
    out.classList.add("streaming");
    turn.replies[side] = "";
    const response = await fetch("/api/playground/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      credentials: "same-origin",
      body: JSON.stringify({ policy: policyOf(side), messages: messagesFor(side), sampling: sampling() }),
    });
    if (!response.ok) {
      const body = await response.json().catch(function () { return {}; });
      out.classList.add("error");
      out.textContent = "Error: " + JSON.stringify(body.detail || response.status);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop();
      events.forEach(function (raw) {
        if (!raw.startsWith("data: ")) return;
        const event = JSON.parse(raw.slice(6));
        if (event.event === "token") {
          turn.replies[side] += event.text;
          out.textContent = turn.replies[side];
        } else if (event.event === "error") {
          out.classList.add("error");
          out.textContent = turn.replies[side] + " [error: " + event.detail + "]";
        } else if (event.event === "done") {
          out.dataset.tokens = event.tokens;
        }
      });
    }
    out.classList.remove("streaming");
    out.classList.add("done");
  }

  function activeSides() {
    return sides.filter(function (side) { return side === "left" || policyOf(side); });
  }

  document.getElementById("pg-right").addEventListener("change", function () {
    column("right").hidden = !policyOf("right");
  });

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (busy) return;
    const box = document.getElementById("pg-message");
    const text = box.value.trim();
    if (!text) return;
    busy = true;
    box.value = "";
    const status = document.getElementById("pg-status");
    status.textContent = "Generating…";
    const turn = { user: text, replies: {} };
    turns.push(turn);
    const active = activeSides();
    active.forEach(function (side) { bubble(side, "user", text); });
    try {
      await Promise.all(active.map(function (side) { return stream(side, turn); }));
      status.textContent = "";
    } catch (err) {
      status.textContent = "Failed: " + err;
    }
    busy = false;
  });

  document.getElementById("pg-reset").addEventListener("click", function () {
    turns = [];
    sides.forEach(function (side) { column(side).replaceChildren(); });
  });

  const pool = document.getElementById("pg-pool");
  if (pool) {
    pool.addEventListener("click", async function () {
      const status = document.getElementById("pg-pool-status");
      const response = await fetch("/api/playground/pool", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        credentials: "same-origin",
        body: JSON.stringify({ project: document.getElementById("pg-project").value, messages: messagesFor("left") }),
      });
      const body = await response.json();
      if (!response.ok) {
        status.textContent = "Not added: " + JSON.stringify(body.detail);
      } else if (body.added.length) {
        status.textContent = "Added as prompt " + body.added.join(", ") + ".";
      } else {
        status.textContent = "Not added: " + body.rejected.map(function (r) { return r.reason; }).join("; ");
      }
    });
  }
})();
