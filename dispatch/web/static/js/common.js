// What every page shares: building DOM safely, the page header, formatting, toasts.
// Texts from the server only ever go in through textContent (never innerHTML).

import { api } from "./api.js";
import { applyI18n, getLang, label, onLangChange, t, toggleLang, unitName } from "./i18n.js";

/**
 * h("div", {class: "x", "data-testid": "y", text: "..."}, child, "text", null) -> Element.
 * Strings become text nodes; attributes are set with setAttribute; on* keys add listeners.
 */
export function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// ---------------------------------------------------------------- time

let skewMs = 0; // server clock minus this browser's clock, from the WebSocket hello

export function setServerTime(iso) {
  const server = Date.parse(iso);
  if (!Number.isNaN(server)) skewMs = server - Date.now();
}

export function now() {
  return Date.now() + skewMs;
}

export function ms(iso) {
  return iso ? Date.parse(iso) : NaN;
}

/** The later of two ISO times (null-safe). */
export function laterOf(a, b) {
  if (!a) return b || null;
  if (!b) return a;
  return ms(b) > ms(a) ? b : a;
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return new Intl.DateTimeFormat(getLang(), {
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  }).format(d);
}

export function fmtAgo(iso) {
  const t0 = ms(iso);
  if (Number.isNaN(t0)) return "";
  const s = Math.round((t0 - now()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(getLang(), { numeric: "auto", style: "short" });
  const a = Math.abs(s);
  if (a < 60) return rtf.format(s, "second");
  if (a < 3600) return rtf.format(Math.trunc(s / 60), "minute");
  if (a < 86400) return rtf.format(Math.trunc(s / 3600), "hour");
  return rtf.format(Math.trunc(s / 86400), "day");
}

/** 75 -> "1:15", 3725 -> "1:02:05", 200000 -> "2d 7h". */
export function fmtClock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s >= 86400) return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** Seconds for statistics: "8.2 s", "3.5 min", "1.2 h". */
export function fmtSeconds(v) {
  if (v === null || v === undefined) return "–";
  if (v < 100) return `${v.toFixed(1)} s`;
  if (v < 6000) return `${(v / 60).toFixed(1)} min`;
  return `${(v / 3600).toFixed(1)} h`;
}

export function fmtPercent(v) {
  return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`;
}

/** The text and state of a deadline countdown ("ack in 0:45" / "ack overdue 0:12"). */
export function countdown(row) {
  if (!row.deadline_at || row.awaiting === "none" || row.closed_at) return { text: "", overdue: false, soon: false };
  const left = (ms(row.deadline_at) - now()) / 1000;
  const kind = row.awaiting === "arrival" ? "arrival" : "ack";
  if (left < 0) return { text: t(`deadline.overdue.${kind}`, { t: fmtClock(-left) }), overdue: true, soon: true };
  return { text: t(`deadline.${kind}`, { t: fmtClock(left) }), overdue: false, soon: left < 30 };
}

/** "紧急求助 · 一键报警按钮" */
export function whatHappened(row) {
  const what = label("event", row.event_type) || row.category || "";
  const kind = label("kind", row.device_kind);
  return kind ? `${what} · ${kind}` : what;
}

export function gridName(row) {
  return getLang() === "en" && row.grid_name_en ? row.grid_name_en : row.grid_name || row.grid_code || "";
}

/** Replaces an element's children, leaving out null / false (as h() does). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let placeUnits = null; // code -> unit, of the officer's subtree
let placeRoot = null;

/**
 * Where a grid cell is, as seen from the officer's unit: the units between (a district and a
 * street for a city desk) and the cell's name. A unit whose name the next one already starts
 * with is left out ("春晖社区" before "春晖社区第1网格").
 */
export function place(row) {
  const cell = gridName(row);
  if (!placeUnits || !row.grid_code) return cell;
  const names = [];
  for (const len of [6, 9, 12]) {
    const code = row.grid_code.slice(0, len);
    const u = placeUnits.get(code);
    if (!u || code === placeRoot) continue; // only the officer's subtree is in the map
    names.push(unitName(u));
  }
  names.push(cell);
  return names.filter((n, i) => !(i + 1 < names.length && names[i + 1].startsWith(n))).join(" · ");
}

// ---------------------------------------------------------------- toasts

export function toast(message, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.appendChild(box);
  }
  const el = h("div", { class: `toast toast-${kind}`, "data-testid": "toast", role: kind === "error" ? "alert" : null }, message);
  box.appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

// ---------------------------------------------------------------- the page frame

let unitsCache = null;
let officersById = new Map(); // officers of the signed-in officer's subtree, for names

export async function units() {
  unitsCache ??= api("/api/v1/units").then((b) => b.items);
  return unitsCache;
}

/** "王伟 (go-990102001001001)" for an officer of the subtree; the bare id otherwise. */
export function who(officerId) {
  const o = officerId ? officersById.get(officerId) : null;
  return o ? `${o.name} (${officerId})` : officerId || "";
}

export function officers() {
  return [...officersById.values()];
}

/** The units from a grid cell up to the officer's own unit (the cell's path in the subtree). */
export function unitsAbove(gridCode) {
  const out = [];
  let u = placeUnits?.get(gridCode);
  while (u) {
    out.push(u);
    u = u.parent_code ? placeUnits.get(u.parent_code) : null;
  }
  return out;
}

/**
 * Signs the page in (redirects to /login otherwise), draws the header and the static texts.
 * Returns {officer, units, connection} where connection is the status element (or null).
 */
export async function initPage(active, { live = false } = {}) {
  applyI18n();
  const officer = await api("/api/v1/me");
  const all = await units();
  const own = all.find((u) => u.code === officer.unit_code);
  placeUnits = new Map(all.map((u) => [u.code, u]));
  placeRoot = officer.unit_code;
  try {
    officersById = new Map((await api("/api/v1/officers")).items.map((o) => [o.officer_id, o]));
  } catch {
    officersById = new Map(); // names are a nicety: ids still work
  }
  const connection = live
    ? h("span", { class: "conn conn-connecting", "data-testid": "connection", "data-state": "connecting" })
    : null;
  const who = h("span", { class: "who", "data-testid": "officer" });
  const langBtn = h("button", { type: "button", class: "btn-ghost", "data-testid": "lang-switch", onclick: toggleLang });
  const nav = h(
    "nav",
    { class: "nav" },
    ["queue", "stats", "devices"].map((p) =>
      h("a", { href: `/${p}`, class: p === active ? "active" : null, "data-i18n": `nav.${p}`, "data-testid": `nav-${p}` }),
    ),
  );
  const signOut = h("button", {
    type: "button",
    class: "btn-ghost",
    "data-testid": "sign-out",
    "data-i18n": "signout",
    onclick: async () => {
      try {
        await api("/api/v1/auth/sign-out", { method: "POST", redirectOn401: false });
      } finally {
        location.assign("/login");
      }
    },
  });
  const header = document.getElementById("top");
  header.replaceChildren();
  append(header, [
    h("a", { class: "brand", href: "/queue" }, h("span", { class: "logo", "aria-hidden": "true" }, "安"), h("span", { "data-i18n": "app.name" })),
    nav,
    h("span", { class: "spacer" }),
    connection,
    who,
    langBtn,
    signOut,
  ]);
  const paint = () => {
    who.textContent = `${officer.name} · ${unitName(own) || officer.unit_code} · ${label("level", officer.level)}`;
    langBtn.textContent = t("lang.other");
    if (connection) connection.textContent = t(`conn.${connection.dataset.state}`);
    applyI18n(header);
  };
  paint();
  onLangChange(paint);
  return { officer, units: all, connection };
}

export function setConnection(el, state) {
  if (!el) return;
  el.dataset.state = state;
  el.className = `conn conn-${state}`;
  el.textContent = t(`conn.${state}`);
}

/** A unit <select> over the officer's subtree, indented by level. */
export function unitSelect(all, selected, attrs = {}) {
  const depth = { city: 0, district: 1, street: 2, community: 3, grid: 4 };
  const base = Math.min(...all.map((u) => depth[u.level] ?? 0));
  const sel = h("select", attrs);
  const paint = () => {
    const value = sel.value || selected;
    sel.replaceChildren(
      ...all.map((u) =>
        h(
          "option",
          { value: u.code, selected: u.code === value },
          `${"\u00a0\u00a0".repeat((depth[u.level] ?? 0) - base)}${unitName(u)} (${label("level", u.level)})`,
        ),
      ),
    );
    sel.value = value;
  };
  paint();
  onLangChange(paint);
  return sel;
}
