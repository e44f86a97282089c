// Devices of a unit: a summary per grid cell (online, offline, low battery, inactive) and
// the list, filtered by state in the page.

import { api, query } from "./api.js";
import { fmtAgo, fmtTime, h, initPage, unitSelect } from "./common.js";
import { getLang, label, onLangChange, t } from "./i18n.js";

const PAGE = 2000; // the API's largest page
const MAX_PAGES = 5;
const form = document.getElementById("controls");
const pageError = document.getElementById("page-error");
let devices = [];
let truncated = false;
let unitSel = null;

function cellName(d) {
  return getLang() === "en" && d.grid_name_en ? d.grid_name_en : d.grid_name || d.grid_code;
}

function matches(d, state) {
  switch (state) {
    case "online":
      return d.online;
    case "offline":
      return !d.online;
    case "low_battery":
      return d.low_battery;
    case "inactive":
      return !d.active;
    default:
      return true;
  }
}

function statusOf(d) {
  if (!d.active) return h("span", { class: "badge badge-off", text: t("devices.inactive") });
  return d.online
    ? h("span", { class: "badge badge-on", text: t("state.online") })
    : h("span", { class: "badge badge-offline", text: t("state.offline") });
}

function render() {
  const state = form.state.value;
  const cells = new Map();
  for (const d of devices) {
    const c = cells.get(d.grid_code) ?? { name: cellName(d), code: d.grid_code, total: 0, online: 0, offline: 0, low: 0, inactive: 0 };
    c.total += 1;
    if (d.online) c.online += 1;
    else c.offline += 1;
    if (d.low_battery) c.low += 1;
    if (!d.active) c.inactive += 1;
    cells.set(d.grid_code, c);
  }
  document.getElementById("cells").replaceChildren(
    ...[...cells.values()].map((c) =>
      h(
        "tr",
        { "data-testid": "cell-row", "data-grid": c.code },
        h("td", {}, c.name, h("span", { class: "muted", text: ` ${c.code}` })),
        h("td", { class: "num", text: String(c.total) }),
        h("td", { class: "num ok", text: String(c.online) }),
        h("td", { class: `num${c.offline ? " warn" : ""}`, text: String(c.offline) }),
        h("td", { class: `num${c.low ? " warn" : ""}`, text: String(c.low) }),
        h("td", { class: "num", text: String(c.inactive) }),
      ),
    ),
  );
  const shown = devices.filter((d) => matches(d, state));
  document.getElementById("devices").replaceChildren(
    ...shown.map((d) =>
      h(
        "tr",
        { "data-testid": "device-row", "data-device-id": d.device_id },
        h("td", { class: "mono", text: d.device_id }),
        h("td", { text: label("kind", d.kind) }),
        h("td", { text: d.address || "" }),
        h("td", { text: cellName(d) }),
        h("td", {}, statusOf(d)),
        h("td", { class: `num${d.low_battery ? " warn" : ""}`, text: d.battery === null ? "–" : `${d.battery}%` }),
        h("td", { title: fmtTime(d.last_seen_at), text: d.last_seen_at ? fmtAgo(d.last_seen_at) : t("devices.never") }),
      ),
    ),
  );
  document.getElementById("shown").textContent =
    t("devices.shown", { n: shown.length }) + (truncated ? ` · ${t("devices.truncated", { n: devices.length })}` : "");
}

async function load() {
  const unit = unitSel.value;
  history.replaceState(null, "", `/devices${query({ unit, state: form.state.value === "all" ? "" : form.state.value })}`);
  try {
    const all = [];
    truncated = false;
    for (let page = 0; page < MAX_PAGES; page++) {
      const body = await api(`/api/v1/devices${query({ unit, state: "all", limit: PAGE, offset: page * PAGE })}`);
      all.push(...body.items);
      if (body.items.length < PAGE) break;
      truncated = page === MAX_PAGES - 1;
    }
    devices = all;
    pageError.hidden = true;
    render();
  } catch (err) {
    if (err.status === 401) return;
    pageError.textContent = err.message;
    pageError.hidden = false;
  }
}

async function main() {
  const page = await initPage("devices");
  const url = new URLSearchParams(location.search);
  const codes = new Set(page.units.map((u) => u.code));
  unitSel = unitSelect(page.units, codes.has(url.get("unit")) ? url.get("unit") : page.officer.unit_code, {
    name: "unit",
    "data-testid": "devices-unit",
  });
  document.getElementById("unit-slot").replaceWith(unitSel);
  if (["online", "offline", "low_battery", "inactive"].includes(url.get("state"))) form.state.value = url.get("state");
  unitSel.addEventListener("change", load);
  form.state.addEventListener("change", () => {
    history.replaceState(null, "", `/devices${query({ unit: unitSel.value, state: form.state.value === "all" ? "" : form.state.value })}`);
    render();
  });
  form.addEventListener("submit", (ev) => ev.preventDefault());
  onLangChange(render);
  await load();
}

main().catch((err) => {
  if (err.status !== 401) {
    pageError.textContent = err.message || String(err);
    pageError.hidden = false;
  }
});
