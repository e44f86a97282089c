// The live alert queue: open incidents of the officer's jurisdiction, by priority then age.
// Loaded once from /api/v1/incidents, then kept current by the WebSocket: each message is a
// whole row; the one with the highest version wins; a closed incident leaves the queue.

import { actionBar, isOpen } from "./actions.js";
import { api } from "./api.js";
import {
  countdown,
  fmtAgo,
  fmtTime,
  h,
  initPage,
  laterOf,
  ms,
  now,
  place,
  setConnection,
  toast,
  whatHappened,
  who,
} from "./common.js";
import { label, onLangChange, t } from "./i18n.js";
import { LiveFeed } from "./live.js";

const LIST_LIMIT = 1000;
const CATCH_UP_LIMIT = 5000; // the server sends at most this many on reconnect

const rows = new Map(); // incident_id -> row
const els = new Map(); // incident_id -> <article>
let cursor = null; // newest updated_at seen: where a reconnect catches up from
let officer = null;
let orderQueued = false;

const container = document.getElementById("queue");
const empty = document.getElementById("empty");
const count = document.querySelector("[data-testid=queue-count]");

// ---------------------------------------------------------------- sound

const sound = { on: localStorage.getItem("pingan.sound") !== "off", ctx: null };

function unlockAudio() {
  // Browsers allow audio only after a gesture on the page: the first click or key unlocks it.
  try {
    sound.ctx ??= new AudioContext();
    sound.ctx.resume();
  } catch {
    sound.ctx = null;
  }
}
addEventListener("pointerdown", unlockAudio, { once: true });
addEventListener("keydown", unlockAudio, { once: true });

function beep(priority) {
  const ctx = sound.ctx;
  if (!sound.on || !ctx || ctx.state !== "running") return;
  const tones = priority <= 1 ? [988, 784, 988] : priority === 2 ? [784, 659] : [659];
  tones.forEach((f, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    const at = ctx.currentTime + i * 0.18;
    osc.frequency.value = f;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.3, at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.16);
    osc.connect(gain).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + 0.17);
  });
}

function paintSound() {
  const btn = document.getElementById("sound");
  btn.textContent = t(sound.on ? "sound.on" : "sound.off");
  btn.setAttribute("aria-pressed", String(sound.on));
}

document.getElementById("sound").addEventListener("click", () => {
  sound.on = !sound.on;
  localStorage.setItem("pingan.sound", sound.on ? "on" : "off");
  paintSound();
});

// ---------------------------------------------------------------- rows

function byPriorityThenAge(a, b) {
  return a.priority - b.priority || ms(a.opened_at) - ms(b.opened_at) || (a.case_number < b.case_number ? -1 : 1);
}

function renderRow(row) {
  const cd = countdown(row);
  const since = row.pressed_at || row.opened_at;
  const people = [];
  if (row.acknowledged_by) people.push(`${t("f.acknowledged")}: ${who(row.acknowledged_by)}`);
  if (row.on_scene_by) people.push(`${t("f.on_scene")}: ${who(row.on_scene_by)}`);
  if (row.assigned_to) people.push(`${t("f.assigned")}: ${who(row.assigned_to)}`);
  return h(
    "article",
    {
      class: `row prio-${row.priority} st-${row.status}`,
      "data-testid": "incident-row",
      "data-incident-id": row.incident_id,
      "data-status": row.status,
      "data-priority": row.priority,
      "data-version": row.version,
    },
    h("div", { class: "prio", title: t("f.priority") }, label("priority", row.priority)),
    h(
      "div",
      { class: "main" },
      h(
        "div",
        { class: "line1" },
        h("a", { class: "what", href: `/incidents/${row.incident_id}`, "data-testid": "incident-link" }, whatHappened(row)),
        row.is_major ? h("span", { class: "tag tag-major" }, t("major")) : null,
        row.major_id ? h("a", { class: "tag", href: `/incidents/${row.major_id}` }, t("member_of")) : null,
        row.event_count > 1 ? h("span", { class: "tag" }, t("ago.events", { n: row.event_count })) : null,
        h("span", { class: "case", "data-testid": "case-number" }, row.case_number || ""),
      ),
      h(
        "div",
        { class: "where", "data-testid": "where" },
        h("span", { class: "address" }, row.address || row.device_id || ""),
        h("span", { class: "grid" }, place(row)),
      ),
      row.resident_note ? h("div", { class: "note", "data-testid": "resident-note" }, row.resident_note) : null,
      people.length ? h("div", { class: "meta" }, people.join(" · ")) : null,
    ),
    h(
      "div",
      { class: "state" },
      h("span", { class: `status st-${row.status}`, "data-testid": "status" }, label("status", row.status)),
      h("span", { class: "level", "data-testid": "level" }, label("lvl", row.level)),
      h("span", { class: "age", title: fmtTime(since), "data-testid": "age" }, fmtAgo(since)),
      h("span", { class: `countdown${cd.overdue ? " overdue" : cd.soon ? " soon" : ""}`, "data-testid": "countdown" }, cd.text),
    ),
    actionBar(row, officer, { compact: true }),
  );
}

const NEW_FOR_MS = 3000; // how long a row that just arrived counts as new

function upsert(row, { live, force = false }) {
  cursor = laterOf(cursor, row.updated_at);
  const id = row.incident_id;
  const old = rows.get(id);
  if (old && (force ? old.version > row.version : old.version >= row.version)) return;
  if (!isOpen(row)) {
    if (old) {
      rows.delete(id);
      els.get(id)?.remove();
      els.delete(id);
      if (live) toast(t("queue.closed", { case: row.case_number || id }));
      queueOrder();
    }
    return;
  }
  rows.set(id, row);
  const el = renderRow(row);
  const prev = els.get(id);
  if (prev) {
    prev.replaceWith(el);
    // A row that just arrived stays "new" through its first steps (opened, then notified
    // a moment later); after that a change of status or level is shown as such.
    if (Number(prev.dataset.newUntil || 0) > Date.now()) {
      el.classList.add("new");
      el.dataset.newUntil = prev.dataset.newUntil;
    } else if (old && (old.status !== row.status || old.level !== row.level)) el.classList.add("changed");
  } else if (live) {
    el.classList.add("new");
    el.dataset.newUntil = String(Date.now() + NEW_FOR_MS);
    beep(row.priority);
    toast(t("queue.new", { what: whatHappened(row) }), "alert");
  }
  els.set(id, el);
  queueOrder();
}

function queueOrder() {
  if (orderQueued) return;
  orderQueued = true;
  queueMicrotask(() => {
    orderQueued = false;
    const sorted = [...rows.values()].sort(byPriorityThenAge);
    sorted.forEach((row, i) => {
      const el = els.get(row.incident_id);
      if (container.children[i] !== el) container.insertBefore(el, container.children[i] || null);
    });
    empty.hidden = rows.size > 0;
    count.textContent = t("queue.count", { n: rows.size });
    document.title = `${rows.size ? `(${rows.size}) ` : ""}${t("queue.title")} · ${t("app.name")}`;
  });
}

function renderAll() {
  for (const [id, row] of rows) {
    const el = renderRow(row);
    els.get(id)?.replaceWith(el);
    els.set(id, el);
  }
  paintSound();
  queueOrder();
}

function tick() {
  for (const [id, el] of els) {
    const row = rows.get(id);
    if (!row) continue;
    const cd = countdown(row);
    const c = el.querySelector(".countdown");
    c.textContent = cd.text;
    c.classList.toggle("overdue", cd.overdue);
    c.classList.toggle("soon", cd.soon && !cd.overdue);
    el.querySelector(".age").textContent = fmtAgo(row.pressed_at || row.opened_at);
  }
}

async function loadList() {
  // With nothing in the database yet there is no cursor: catch up from a minute before now.
  const before = new Date(now() - 60000).toISOString();
  const body = await api(`/api/v1/incidents?state=open&limit=${LIST_LIMIT}`);
  const fresh = new Set(body.items.map((r) => r.incident_id));
  for (const id of [...rows.keys()]) {
    if (!fresh.has(id)) {
      rows.delete(id);
      els.get(id)?.remove();
      els.delete(id);
    }
  }
  for (const row of body.items) {
    upsert(row, { live: false, force: true }); // the list is the truth at this moment
  }
  cursor = laterOf(cursor, body.cursor || before);
  queueOrder();
}

async function main() {
  const page = await initPage("queue", { live: true });
  officer = page.officer;
  paintSound();
  await loadList();
  const live = new LiveFeed({
    since: () => cursor,
    incident: (row) => upsert(row, { live: true }),
    caughtUp: (n) => {
      if (n >= CATCH_UP_LIMIT) loadList(); // more changed than one catch-up carries
    },
    resync: () => loadList(),
    status: (s) => setConnection(page.connection, s),
  });
  window.pingan = { live, rows, cursor: () => cursor };
  live.start();
  setInterval(tick, 1000);
  onLangChange(renderAll);
}

main().catch((err) => {
  if (err.status !== 401) toast(err.message || String(err), "error");
});
