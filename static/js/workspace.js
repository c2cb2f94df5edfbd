/* The annotator workspace: rank by keyboard or drag (SortableJS), ties, flags, timers.
 *
 * The page works without this script (a rank select per response); with it, the
 * ranking is built in #ranked and sent as JSON tie groups in the hidden `order`
 * field. A pairwise project's page has A and B and a strength scale of radio
 * buttons (#strength-scale) instead, which posts by itself; here keys choose its
 * points. Re-initialised on every htmx swap of #workspace.
 */
(function () {
  "use strict";

  var IDLE_MS = 60000; // no input for a minute: active time stops counting
  var lastInput = Date.now();
  var flagMode = false;

  function current() {
    var ws = document.getElementById("workspace");
    return ws && ws.querySelector("#rank-form") ? ws : null;
  }

  function say(ws, text) {
    var status = ws.querySelector("#ranking-status");
    if (status) status.textContent = text;
  }

  function ordinal(n) {
    var s = ["th", "st", "nd", "rd"], v = n % 100;
    return n + (s[(v - 20) % 10] || s[v] || s[0]);
  }

  // The order as tie groups of response numbers (handles 1..K, as the page shows
  // them): the server maps them to responses; the page never knows their ids.
  function groups(ws) {
    var out = [];
    ws.querySelectorAll("#ranked .chip").forEach(function (chip, i) {
      var num = parseInt(chip.dataset.num, 10);
      if (i > 0 && chip.dataset.tie === "1") out[out.length - 1].push(num);
      else out.push([num]);
    });
    return out;
  }

  function sync(ws) {
    var ranked = ws.querySelector("#ranked"), pool = ws.querySelector("#pool");
    pool.querySelectorAll(".chip").forEach(function (chip) { chip.dataset.tie = "0"; });
    var first = ranked.querySelector(".chip");
    if (first) first.dataset.tie = "0";
    ws.querySelectorAll(".chip").forEach(function (chip) {
      var button = chip.querySelector(".tie-toggle");
      var inRanked = chip.parentNode === ranked;
      button.hidden = !inRanked || chip === first;
      button.setAttribute("aria-pressed", chip.dataset.tie === "1" ? "true" : "false");
      chip.classList.toggle("tied", chip.dataset.tie === "1");
    });
    var order = groups(ws);
    ws.querySelectorAll(".rank-badge").forEach(function (b) { b.textContent = ""; });
    order.forEach(function (group, g) {
      group.forEach(function (num) {
        var badge = ws.querySelector("#badge-" + num);
        if (badge) badge.textContent = ordinal(g + 1) + (group.length > 1 ? " (tie)" : "");
      });
    });
    ws.querySelector("#order-input").value = order.length ? JSON.stringify(order) : "";
    var left = pool.querySelectorAll(".chip").length;
    ws.querySelector("#pool-count") && (ws.querySelector("#pool-count").textContent = left);
    ws.classList.toggle("complete", left === 0);
  }

  function chipOf(ws, num) {
    return ws.querySelector('.chip[data-num="' + num + '"]');
  }

  function pick(ws, chip) {
    var ranked = ws.querySelector("#ranked");
    if (!chip || chip.parentNode === ranked) {
      if (chip) say(ws, "Response " + chip.dataset.num + " is already ranked.");
      return;
    }
    chip.dataset.tie = "0";
    ranked.appendChild(chip);
    sync(ws);
    var n = groups(ws).length;
    say(ws, "Response " + chip.dataset.num + " ranked " + ordinal(n) + ".");
  }

  function tie(ws) {
    var chips = ws.querySelectorAll("#ranked .chip");
    if (chips.length < 2) { say(ws, "Rank two responses before marking a tie."); return; }
    var last = chips[chips.length - 1];
    last.dataset.tie = last.dataset.tie === "1" ? "0" : "1";
    sync(ws);
    say(ws, "Response " + last.dataset.num + (last.dataset.tie === "1" ? " ties with the one above." : " no longer ties."));
  }

  function undo(ws) {
    var chips = ws.querySelectorAll("#ranked .chip");
    if (!chips.length) { say(ws, "Nothing to undo."); return; }
    var last = chips[chips.length - 1];
    if (last.dataset.tie === "1") {
      last.dataset.tie = "0";
      sync(ws);
      say(ws, "Tie of response " + last.dataset.num + " undone.");
      return;
    }
    var pool = ws.querySelector("#pool");
    var after = Array.prototype.find.call(pool.querySelectorAll(".chip"), function (c) {
      return parseInt(c.dataset.num, 10) > parseInt(last.dataset.num, 10);
    });
    pool.insertBefore(last, after || null);
    sync(ws);
    say(ws, "Response " + last.dataset.num + " moved back to not ranked.");
  }

  // Pairwise: the points of the strength scale, A's strongest first.
  function points(ws) {
    return ws.querySelectorAll('#strength-scale input[name="preference"]');
  }

  function isPair(ws) {
    return !!ws.querySelector("#strength-scale");
  }

  function chosen(ws) {
    return Array.prototype.findIndex.call(points(ws), function (p) { return p.checked; });
  }

  function choose(ws, i) {
    var all = points(ws);
    if (i < 0 || i >= all.length) { say(ws, "The scale has points 1 to " + all.length + "."); return; }
    all[i].checked = true;
    say(ws, all[i].parentNode.querySelector("span").textContent + ".");
  }

  function move(ws, step) {
    var i = chosen(ws), middle = Math.floor(points(ws).length / 2);
    choose(ws, i < 0 ? middle : Math.max(0, Math.min(points(ws).length - 1, i + step)));
  }

  function flag(ws, num) {
    var box = ws.querySelector('.response[data-num="' + num + '"] .unsafe-box');
    if (!box) return;
    box.checked = !box.checked;
    var name = isPair(ws) ? (num === "1" ? "A" : "B") : num;
    say(ws, "Response " + name + (box.checked ? " flagged unsafe." : " no longer flagged."));
  }

  // Keys of a pairwise page; true when the key was one of them.
  function pairKey(ws, e) {
    if (/^[1-9]$/.test(e.key)) { choose(ws, parseInt(e.key, 10) - 1); return true; }
    switch (e.key) {
      case "ArrowLeft": move(ws, -1); return true;
      case "ArrowRight": move(ws, 1); return true;
      case "=": choose(ws, Math.floor(points(ws).length / 2)); return true;
      case "Enter":
        if (chosen(ws) < 0) { say(ws, "Choose a point on the scale first: keys 1 to " + points(ws).length + "."); return true; }
        ws.querySelector("#rank-form").requestSubmit();
        return true;
    }
    return false;
  }

  function toggleHelp(ws, show) {
    var help = ws.querySelector("#keys-help"), button = ws.querySelector("#keys-button");
    if (!help) return;
    var visible = show === undefined ? help.hidden : show;
    help.hidden = !visible;
    if (button) button.setAttribute("aria-expanded", visible ? "true" : "false");
  }

  function fold(ws) {
    ws.querySelectorAll(".response-text").forEach(function (text) {
      if (text.textContent.length < 900) return;
      text.classList.add("folded");
      var button = document.createElement("button");
      button.type = "button";
      button.className = "fold-toggle";
      button.setAttribute("aria-controls", text.id);
      button.setAttribute("aria-expanded", "false");
      button.textContent = "Show all";
      button.addEventListener("click", function () {
        var folded = text.classList.toggle("folded");
        button.setAttribute("aria-expanded", folded ? "false" : "true");
        button.textContent = folded ? "Show all" : "Show less";
      });
      text.insertAdjacentElement("afterend", button);
    });
  }

  function init(root) {
    var ws = root && root.id === "workspace" ? root : root && root.querySelector && root.querySelector("#workspace");
    // A pending workspace is replaced by the leased task (htmx POST on load).
    if (!ws || ws.dataset.ready || ws.hasAttribute("data-pending")) return;
    ws.dataset.ready = "1";
    ws.t0 = Date.now();
    ws.active = 0;
    flagMode = false;
    var form = ws.querySelector("#rank-form");
    if (!form) return;
    if (!isPair(ws)) initRanking(ws);
    var keysButton = ws.querySelector("#keys-button");
    if (keysButton) keysButton.addEventListener("click", function () { toggleHelp(ws); });
    fold(ws);
    tick();
  }

  function initRanking(ws) {
    ws.querySelector(".ranking").hidden = false;
    ws.querySelectorAll(".nojs-rank").forEach(function (label) {
      label.hidden = true;
      label.querySelector("select").disabled = true;
    });
    ws.querySelectorAll(".chip").forEach(function (chip) {
      chip.dataset.tie = "0";
      chip.addEventListener("click", function (e) {
        if (e.target.closest(".tie-toggle")) return;
        pick(ws, chip);
      });
      chip.querySelector(".tie-toggle").addEventListener("click", function () {
        chip.dataset.tie = chip.dataset.tie === "1" ? "0" : "1";
        sync(ws);
      });
    });
    if (window.Sortable) {
      ["#ranked", "#pool"].forEach(function (sel) {
        window.Sortable.create(ws.querySelector(sel), {
          group: "ranking", animation: 120, filter: ".tie-toggle", preventOnFilter: false,
          onSort: function () { sync(ws); }
        });
      });
    }
    sync(ws);
  }

  function tick() {
    var ws = current();
    if (!ws || !ws.t0) return;
    var elapsed = parseInt(ws.dataset.elapsed || "0", 10) + Math.floor((Date.now() - ws.t0) / 1000);
    var timer = ws.querySelector("#ws-timer");
    if (timer) timer.textContent = Math.floor(elapsed / 60) + ":" + String(elapsed % 60).padStart(2, "0");
    var left = parseInt(ws.dataset.secondsLeft || "0", 10) - Math.floor((Date.now() - ws.t0) / 1000);
    var expiry = ws.querySelector("#ws-expiry");
    if (expiry && left <= 0 && !expiry.classList.contains("expired")) {
      expiry.classList.add("expired");
      expiry.setAttribute("role", "status");
      expiry.textContent = "Your lease has expired: you may still submit, and the ranking is kept if the task still needs rankings.";
    }
    var input = ws.querySelector("#active-seconds");
    if (input) input.value = String(ws.active);
  }

  setInterval(function () {
    var ws = current();
    if (!ws || !ws.t0) return;
    if (document.visibilityState === "visible" && Date.now() - lastInput < IDLE_MS) ws.active += 1;
    tick();
  }, 1000);

  ["keydown", "pointerdown", "pointermove", "wheel", "scroll", "input"].forEach(function (type) {
    document.addEventListener(type, function () { lastInput = Date.now(); }, { passive: true, capture: true });
  });

  document.addEventListener("keydown", function (e) {
    var ws = current();
    if (!ws) return;
    var t = e.target;
    var typing = t.matches && t.matches("input[type=text], textarea, select");
    if (e.key === "Escape") {
      if (typing) t.blur();
      toggleHelp(ws, false);
      flagMode = false;
      return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    var pair = isPair(ws);
    if (flagMode && pair && /^[ab12]$/i.test(e.key)) {
      e.preventDefault();
      flagMode = false;
      flag(ws, /^[a1]$/i.test(e.key) ? "1" : "2");
      return;
    }
    if (flagMode && /^[1-9]$/.test(e.key)) {
      e.preventDefault();
      flagMode = false;
      flag(ws, e.key);
      return;
    }
    flagMode = false;
    if (pair && !(e.key === "Enter" && t.closest && t.closest("button, a, summary")) && pairKey(ws, e)) {
      e.preventDefault();
      return;
    }
    if (/^[1-9]$/.test(e.key)) { e.preventDefault(); pick(ws, chipOf(ws, e.key)); return; }
    switch (e.key) {
      case "=": e.preventDefault(); tie(ws); return;
      case "Backspace": case "u": e.preventDefault(); undo(ws); return;
      case "f": e.preventDefault(); flagMode = true; say(ws, pair ? "Flag which response as unsafe? Press a or b." : "Flag which response as unsafe? Press its number."); return;
      case "b": e.preventDefault(); var all = ws.querySelector("#all-bad"); all.checked = !all.checked; say(ws, all.checked ? (pair ? "Both responses flagged bad." : "All responses flagged bad.") : "All-bad flag removed."); return;
      case "r": e.preventDefault(); ws.querySelector("#rationale").focus(); return;
      case "s": e.preventDefault(); ws.querySelector("#skip-reason").focus(); return;
      case "?": e.preventDefault(); toggleHelp(ws); return;
      case "Enter":
        if (t.closest && t.closest("button, a, summary")) return;
        e.preventDefault();
        if (t.classList && t.classList.contains("chip") && t.parentNode.id === "pool") { pick(ws, t); return; }
        var left = ws.querySelectorAll("#pool .chip").length;
        if (left) { say(ws, "Rank every response first: " + left + " left."); return; }
        ws.querySelector("#rank-form").requestSubmit();
        return;
    }
  });

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (e) { init(e.detail.elt); });
  document.addEventListener("htmx:afterSwap", function () { init(document); });
})();
