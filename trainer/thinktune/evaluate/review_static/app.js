// thinktune expert review page (served by thinktune/evaluate/review_server.py).
// Every change is POSTed at once, one field per request, in order (a queue, so a later value never lands before
// an earlier one); the server stores it in SQLite before answering. window.reviewPending counts requests in
// flight (tests wait for 0). Answers are known only by letter: the server maps letters to models.
"use strict";

const LABELS = { accuracy: "准确性 Accuracy", fluency: "流畅性 Fluency", professionalism: "专业性 Professionalism" };
const state = { reviewer: "", data: null, index: 0, cursor: 0, queue: Promise.resolve(), timers: new Map() };
window.reviewPending = 0;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

function setStatus(text, error = false) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

// ---------------------------------------------------------------------------------------------------------
// Loading and saving

async function load(reviewer, index) {
  const r = await fetch(`/api/items?reviewer=${encodeURIComponent(reviewer)}`);
  const body = await r.json();
  if (!r.ok) {
    setStatus(body.error, true);
    return;
  }
  state.data = body;
  state.reviewer = body.reviewer;
  state.index = Math.min(Math.max(index || 0, 0), body.items.length - 1);
  localStorage.setItem("thinktune-reviewer", body.reviewer);
  document.getElementById("reviewer").value = body.reviewer;
  setStatus(`store: ${body.store}`);
  render();
}

function post(payload) {
  return fetch("/api/save", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
    keepalive: true,
  });
}

// Saves go out one after another (state.queue), except when the page is going away: a request still waiting in
// the queue then would never start, so it starts at once (keepalive lets it outlive the page).
function send(payload, now = false) {
  window.reviewPending += 1;
  setStatus("saving…");
  const started = now ? post(payload) : null;
  state.queue = state.queue
    .then(async () => {
      const r = await (started || post(payload));
      const body = await r.json();
      if (!r.ok) throw new Error(body.error);
      const what = payload.field === "preference" ? "preference" : `${payload.slot} ${payload.field}`;
      setStatus(`saved ${new Date(body.saved).toLocaleTimeString()} · ${what}`);
    })
    .catch((e) => setStatus(`NOT saved: ${e.message}`, true))
    .finally(() => {
      window.reviewPending -= 1;
      renderNav();
    });
}

function save(item, slot, field, value, now = false) {
  if (field === "preference") item.preference = value;
  else item.answers.find((a) => a.slot === slot).saved[field] = value;
  send({ reviewer: state.reviewer, item: item.id, slot, field, value }, now);
}

// now: the page is going away (pagehide), so the comments' requests must start before it does
function flushComments(now = false) {
  for (const [key, fn] of state.timers) {
    clearTimeout(fn.timer);
    fn(now);
    state.timers.delete(key);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Rendering

function isDone(item) {
  const scored = item.answers.every((a) => state.data.criteria.every((c) => a.saved[c]));
  return scored && (item.answers.length < 2 || Boolean(item.preference));
}

function renderNav() {
  if (!state.data) return;
  const nav = document.getElementById("items");
  nav.replaceChildren(
    ...state.data.items.map((item, i) => {
      const b = el("button", { type: "button", textContent: String(i + 1), title: item.id });
      b.classList.toggle("done", isDone(item));
      b.classList.toggle("current", i === state.index);
      b.addEventListener("click", () => go(i));
      return b;
    }),
  );
  const done = state.data.items.filter(isDone).length;
  document.getElementById("progress").textContent = `${done}/${state.data.items.length} items done`;
}

function radioGroup(item, slot, field, legend, values, current, extraClass = "") {
  const fs = el("fieldset", { class: `score ${extraClass}`, "data-slot": slot, "data-field": field });
  fs.append(el("legend", { textContent: legend }));
  for (const [value, text] of values) {
    const input = el("input", { type: "radio", name: `${slot || "item"}-${field}`, value });
    input.checked = current === value;
    input.addEventListener("change", () => save(item, slot, field, value));
    fs.append(el("label", {}, input, text));
  }
  return fs;
}

function textBlock(text) {
  return el("div", { class: "text", textContent: text || "(empty)" });
}

function renderAnswer(item, answer) {
  const d = state.data;
  const scores = [];
  for (let v = d.scoreMin; v <= d.scoreMax; v++) scores.push([String(v), String(v)]);
  const section = el(
    "section",
    { class: "answer", "data-slot": answer.slot },
    el("h2", { textContent: `Answer ${answer.slot}` }),
    el(
      "details",
      { class: "thinking" },
      el("summary", { textContent: `思考过程 Thinking (${answer.thinking.length} characters)` }),
      textBlock(answer.thinking),
    ),
    el("div", { class: "text body", textContent: answer.answer || "(no answer after </think>)" }),
  );
  for (const c of d.criteria) section.append(radioGroup(item, answer.slot, c, LABELS[c] || c, scores, answer.saved[c]));
  for (const r of d.rubric) {
    const field = `rubric_${r.key}`;
    section.append(
      radioGroup(item, answer.slot, field, r.label, [["yes", "yes"], ["no", "no"]], answer.saved[field], "rubric"),
    );
  }
  const ta = el("textarea", { placeholder: "comment 评语", value: answer.saved.comment || "" });
  ta.dataset.slot = answer.slot;
  const key = `${item.id}\u0000${answer.slot}`;
  const commit = (now = false) => {
    state.timers.delete(key);
    if ((answer.saved.comment || "") !== ta.value) save(item, answer.slot, "comment", ta.value, now);
  };
  ta.addEventListener("input", () => {
    const prev = state.timers.get(key);
    if (prev) clearTimeout(prev.timer);
    commit.timer = setTimeout(commit, 400);
    state.timers.set(key, commit);
  });
  ta.addEventListener("change", () => commit());
  section.append(el("label", { class: "comment" }, "Comment", ta));
  return section;
}

function render() {
  flushComments();
  const item = state.data.items[state.index];
  const main = document.getElementById("main");
  const blocks = [
    el("p", { class: "hint", textContent: `Item ${state.index + 1} of ${state.data.items.length} · ${item.id}` }),
    el("div", { class: "question", textContent: item.question }),
    el(
      "div",
      { class: "reference" },
      el("strong", { textContent: "参考答案 Reference answer" }),
      textBlock(item.referenceAnswer),
      el(
        "details",
        {},
        el("summary", { textContent: `Reference reasoning (${item.referenceThinking.length} characters)` }),
        textBlock(item.referenceThinking),
      ),
    ),
    el("div", { class: "answers" }, ...item.answers.map((a) => renderAnswer(item, a))),
  ];
  if (item.answers.length > 1) {
    const letters = item.answers.map((a) => a.slot);
    const values = [[letters[0], `${letters[0]} better`], ["tie", "tie"], [letters[1], `${letters[1]} better`]];
    blocks.push(radioGroup(item, "", "preference", "Which answer is better? 哪个回答更好", values, item.preference, "preference"));
  }
  main.replaceChildren(...blocks);
  const url = new URL(location.href);
  url.searchParams.set("reviewer", state.reviewer);
  url.searchParams.set("item", String(state.index + 1));
  history.replaceState(null, "", url);
  const groups = fieldsets();
  const firstOpen = groups.findIndex((fs) => !fs.querySelector("input:checked"));
  moveCursor(firstOpen === -1 ? 0 : firstOpen);
  renderNav();
}

// ---------------------------------------------------------------------------------------------------------
// Keyboard

function fieldsets() {
  return [...document.querySelectorAll("#main fieldset.score")];
}

function moveCursor(i) {
  const groups = fieldsets();
  if (!groups.length) return;
  state.cursor = Math.min(Math.max(i, 0), groups.length - 1);
  groups.forEach((fs, j) => fs.classList.toggle("cursor", j === state.cursor));
  const fs = groups[state.cursor];
  (fs.querySelector("input:checked") || fs.querySelector("input")).focus();
}

function choose(value) {
  const fs = fieldsets()[state.cursor];
  const input = fs && [...fs.querySelectorAll("input")].find((x) => x.value === value);
  if (!input) return false;
  input.checked = true;
  save(state.data.items[state.index], fs.dataset.slot, fs.dataset.field, value);
  moveCursor(state.cursor + 1);
  return true;
}

function go(i) {
  if (!state.data) return;
  state.index = Math.min(Math.max(i, 0), state.data.items.length - 1);
  render();
  window.scrollTo(0, 0);
}

document.addEventListener("focusin", (e) => {
  const fs = e.target.closest && e.target.closest("#main fieldset.score");
  if (!fs) return;
  const i = fieldsets().indexOf(fs);
  if (i !== state.cursor) {
    state.cursor = i;
    fieldsets().forEach((f, j) => f.classList.toggle("cursor", j === i));
  }
});

document.addEventListener("keydown", (e) => {
  if (!state.data || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t.tagName === "TEXTAREA") {
    if (e.key === "Escape") {
      t.dispatchEvent(new Event("change"));
      moveCursor(state.cursor);
    }
    return;
  }
  if (t.tagName === "INPUT" && t.type !== "radio") return;
  const fs = fieldsets()[state.cursor];
  const kind = fs ? fs.dataset.field : "";
  let handled = true;
  if (/^[1-9]$/.test(e.key) && state.data.criteria.includes(kind)) handled = choose(e.key);
  else if ((e.key === "y" || e.key === "n") && kind.startsWith("rubric_")) handled = choose(e.key === "y" ? "yes" : "no");
  else if (e.key === "a" || e.key === "b" || e.key === "t") {
    const pref = fieldsets().findIndex((f) => f.dataset.field === "preference");
    if (pref === -1) handled = false;
    else {
      moveCursor(pref);
      handled = choose(e.key === "t" ? "tie" : e.key.toUpperCase());
    }
  } else if (e.key === "ArrowDown" || e.key === "j") moveCursor(state.cursor + 1);
  else if (e.key === "ArrowUp" || e.key === "k") moveCursor(state.cursor - 1);
  else if (e.key === "ArrowRight") go(state.index + 1);
  else if (e.key === "ArrowLeft") go(state.index - 1);
  else if (e.key === "c") {
    const slot = (fs && fs.dataset.slot) || "A";
    const ta = document.querySelector(`#main textarea[data-slot="${slot}"]`);
    if (ta) ta.focus();
    else handled = false;
  } else handled = false;
  if (handled) e.preventDefault();
});

// the comment typed in the last 400 ms goes out with the page (fetch keepalive outlives it)
window.addEventListener("pagehide", () => flushComments(true));

document.getElementById("who").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = document.getElementById("reviewer").value.trim();
  if (name) load(name, 0);
});

const params = new URLSearchParams(location.search);
const initial = params.get("reviewer") || localStorage.getItem("thinktune-reviewer");
if (initial) load(initial, Number(params.get("item") || 1) - 1);
else document.getElementById("reviewer").focus();
