// One incident: what happened where, its clocks, the actions, and the full record:
// timeline, notifications with their delivery, the device's recent history, members of a
// major incident and the deadlines in force. Live: refetched when the incident changes.

import { actionBar } from "./actions.js";
import { api } from "./api.js";
import { countdown, fill, fmtTime, gridName, h, initPage, place, setConnection, whatHappened, who } from "./common.js";
import { label, onLangChange, t } from "./i18n.js";
import { LiveFeed } from "./live.js";

const root = document.getElementById("incident");
const pageError = document.getElementById("page-error");
const incidentId = decodeURIComponent(location.pathname.split("/").pop() || "");
let officer = null;
let inc = null;
let refetchTimer = null;

function section(titleKey, testid, ...content) {
  return h("section", { class: "card", "data-testid": testid }, h("h2", { text: t(titleKey) }), ...content);
}

function table(headers, rows, testid) {
  if (!rows.length) return h("p", { class: "muted", text: t("incident.none") });
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { "data-testid": testid },
      h("thead", {}, h("tr", {}, headers.map((k) => h("th", { text: t(k) })))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => (c instanceof Node ? h("td", {}, c) : h("td", { text: c ?? "" })))))),
    ),
  );
}

const DETAIL_LABELS = {
  officers: (v) => (Array.isArray(v) ? v.map(who).join(", ") : String(v)),
  assignee: (v) => who(v),
  type: (v) => label("event", v),
  level: (v) => label("level", v),
  from_level: (v) => label("level", v),
  to_level: (v) => label("level", v),
  actor_level: (v) => label("level", v),
  outcome: (v) => label("outcome", v),
  referral: (v) => label("referral", v),
  kind: (v) => label("nk", v),
  priority: (v) => label("priority", v),
};
const DETAIL_SKIP = new Set(["referred_to", "event_id"]);
// Keys shown first, in this order ("from" before "to"); the rest follow as they come.
const DETAIL_ORDER = ["type", "priority", "from_level", "to_level", "level", "actor_level", "reason", "outcome", "referral"];

function detailRank(key) {
  const i = DETAIL_ORDER.indexOf(key);
  return i < 0 ? DETAIL_ORDER.length : i;
}

/** A timeline entry's detail as readable "key: value" pairs (all text, never markup). */
function detailText(detail) {
  if (!detail || typeof detail !== "object") return detail ? String(detail) : "";
  return Object.entries(detail)
    .filter(([k, v]) => !DETAIL_SKIP.has(k) && v !== null && v !== "")
    .sort(([a], [b]) => detailRank(a) - detailRank(b))
    .map(([k, v]) => {
      const shown = DETAIL_LABELS[k] ? DETAIL_LABELS[k](v) : Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : String(v);
      return `${t(`dk.${k}`)}: ${shown}`;
    })
    .join(" · ");
}

function when(at, by) {
  if (!at) return "–";
  return by ? `${fmtTime(at)} (${t("f.by", { who: who(by) })})` : fmtTime(at);
}

function render() {
  if (!inc) return;
  const cd = countdown(inc);
  const outcome = inc.outcome
    ? `${label("outcome", inc.outcome)}${inc.referral ? ` · ${label("referral", inc.referral)}` : ""}`
    : "";
  const facts = [
    ["f.case", inc.case_number],
    ["f.device", `${inc.device_id || ""}${inc.device_kind ? ` (${label("kind", inc.device_kind)})` : ""}`],
    ["f.address", inc.address],
    ["f.building", inc.building],
    ["f.grid", `${gridName(inc)} (${inc.grid_code})`],
    ["f.note", inc.resident_note],
    ["f.events", String(inc.event_count ?? "")],
    ["f.pressed", fmtTime(inc.pressed_at)],
    ["f.received", fmtTime(inc.received_at)],
    ["f.opened", fmtTime(inc.opened_at)],
    ["f.notified", fmtTime(inc.first_notified_at) || "–"],
    ["f.acknowledged", when(inc.acknowledged_at, inc.acknowledged_by) + (inc.ack_level ? ` · ${label("level", inc.ack_level)}` : "")],
    ["f.on_scene", when(inc.on_scene_at, inc.on_scene_by)],
    ["f.closed", when(inc.closed_at, inc.closed_by)],
    ["f.outcome", outcome],
    ["f.assigned", who(inc.assigned_to)],
  ].filter(([, v]) => v);

  const head = h(
    "section",
    { class: `card incident-head prio-${inc.priority}` },
    h(
      "div",
      { class: "line1" },
      h("span", { class: "prio-badge" }, label("priority", inc.priority)),
      h("h1", { class: "what", "data-testid": "incident-what" }, whatHappened(inc)),
      inc.is_major ? h("span", { class: "tag tag-major" }, t("major")) : null,
      h("span", { class: `status st-${inc.status}`, "data-testid": "status" }, label("status", inc.status)),
      h("span", { class: "level", "data-testid": "level" }, label("lvl", inc.level)),
      h("span", { class: `countdown${cd.overdue ? " overdue" : cd.soon ? " soon" : ""}`, "data-testid": "countdown" }, cd.text),
    ),
    h("div", { class: "where" }, h("span", { class: "address" }, inc.address || ""), h("span", { class: "grid" }, place(inc))),
    inc.resident_note ? h("div", { class: "note", "data-testid": "resident-note" }, inc.resident_note) : null,
    actionBar(inc, officer, { onDone: () => refetchSoon() }), // the socket may be down: do not wait for it
  );

  const details = h(
    "section",
    { class: "card" },
    h("dl", { class: "facts", "data-testid": "facts" }, facts.map(([k, v]) => [h("dt", { text: t(k) }), h("dd", { text: v })])),
  );

  const timeline = section(
    "incident.timeline",
    "timeline",
    h(
      "ol",
      { class: "timeline" },
      (inc.timeline || []).map((e) =>
        h(
          "li",
          { class: `tl tl-${e.kind}`, "data-testid": "timeline-entry", "data-kind": e.kind },
          h("time", { datetime: e.at, text: fmtTime(e.at) }),
          h("strong", { text: label("tl", e.kind) }),
          h("span", { class: "actor", text: who(e.actor) }),
          h("span", { class: "detail", text: detailText(e.detail) }),
        ),
      ),
    ),
  );

  const notifications = section(
    "incident.notifications",
    "notifications",
    table(
      ["f.time", "f.officer", "f.kind", "f.level", "f.reason", "f.status", "f.sent", "f.attempts", "f.error"],
      (inc.notifications || []).map((n) => [
        fmtTime(n.created_at),
        who(n.officer_id),
        label("nk", n.kind),
        label("level", n.level),
        n.reason,
        h("span", { class: `ns ns-${n.status}`, text: label("ns", n.status) }),
        fmtTime(n.sent_at),
        String(n.attempts ?? ""),
        n.last_error || "",
      ]),
      "notifications-table",
    ),
  );

  const history = section(
    "incident.history",
    "device-history",
    table(
      ["f.occurred", "f.type", "f.received", "f.battery"],
      (inc.device_history || []).map((e) => [
        fmtTime(e.occurred_at),
        label("event", e.type),
        fmtTime(e.received_at),
        e.battery === null || e.battery === undefined ? "" : `${e.battery}%`,
      ]),
      "history-table",
    ),
  );

  const members = inc.members?.length
    ? section(
        "incident.members",
        "members",
        table(
          ["f.case", "f.device", "f.status"],
          inc.members.map((m) => [
            h("a", { href: `/incidents/${m.incident_id}`, text: m.case_number || m.incident_id }),
            m.device_id || "",
            label("status", m.status),
          ]),
          "members-table",
        ),
      )
    : null;

  const levels = inc.policy?.levels || [];
  const policy = section(
    "incident.policy",
    "policy",
    table(
      ["f.level", "incident.ack_s", "incident.arrive_s", "incident.remind_s"],
      levels.map((lv) => [label("level", lv.level), `${lv.ack_s} s`, `${lv.arrive_s} s`, lv.remind_s ? `${lv.remind_s} s` : "–"]),
      "policy-table",
    ),
  );

  document.title = `${inc.case_number || t("incident.title")} · ${t("app.name")}`;
  fill(root, head, h("div", { class: "cols" }, details, history), timeline, notifications, members, policy);
}

async function load() {
  try {
    inc = await api(`/api/v1/incidents/${encodeURIComponent(incidentId)}`);
    pageError.hidden = true;
    render();
  } catch (err) {
    if (err.status === 401) return;
    pageError.textContent = err.message;
    pageError.hidden = false;
    if (err.status === 403 || err.status === 404) {
      inc = null;
      root.replaceChildren();
    }
  }
}

function refetchSoon() {
  clearTimeout(refetchTimer);
  refetchTimer = setTimeout(load, 150);
}

async function main() {
  const page = await initPage("queue", { live: true });
  officer = page.officer;
  await load();
  const live = new LiveFeed({
    since: () => null, // this page refetches the incident instead of catching up
    incident: (row) => {
      if (row.incident_id === incidentId && (!inc || row.version > inc.version)) refetchSoon();
    },
    opened: (again) => {
      if (again) refetchSoon(); // whatever changed while the socket was down
    },
    ping: (msg) => {
      if (inc && msg.type === "ping") refetchSoon(); // delivery status of notifications changes without a new version
    },
    status: (s) => setConnection(page.connection, s),
  });
  window.pingan = { live };
  live.start();
  setInterval(() => {
    const c = root.querySelector(".incident-head .countdown");
    if (c && inc) {
      const cd = countdown(inc);
      c.textContent = cd.text;
      c.classList.toggle("overdue", cd.overdue);
    }
  }, 1000);
  onLangChange(render);
}

main().catch((err) => {
  if (err.status !== 401) {
    pageError.textContent = err.message || String(err);
    pageError.hidden = false;
  }
});
