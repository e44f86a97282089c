// Response statistics of a unit and period: totals, per child unit, two charts drawn as
// inline SVG, a table, and the same numbers as CSV from the API.

import { api, query } from "./api.js";
import { fmtPercent, fmtSeconds, h, initPage, unitSelect } from "./common.js";
import { label, onLangChange, t, unitName } from "./i18n.js";

const MEASURES = ["to_notify", "to_acknowledge", "to_arrive", "to_resolve"];
const form = document.getElementById("controls");
const out = document.getElementById("stats");
const csv = document.getElementById("csv");
const pageError = document.getElementById("page-error");
let unitsByCode = new Map();
let unitSel = null;
let data = null;

// ---------------------------------------------------------------- dates

function pad(n) {
  return String(n).padStart(2, "0");
}

function dateValue(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** Local midnight of a yyyy-mm-dd (plus days) as ISO 8601 with this browser's UTC offset. */
function localMidnight(value, plusDays = 0) {
  const [y, m, d] = value.split("-").map(Number);
  const dt = new Date(y, m - 1, d + plusDays);
  const off = -dt.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const a = Math.abs(off);
  return `${dateValue(dt)}T00:00:00${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

function params() {
  const f = new FormData(form);
  return {
    unit: unitSel.value,
    from: localMidnight(String(f.get("from"))),
    to: localMidnight(String(f.get("to")), 1), // the "to" day is included
  };
}

// ---------------------------------------------------------------- charts

const SVG_W = 900;
const LEFT = 180;
const RIGHT = 90;

function svg(attrs, ...children) {
  return h("svg:svg", { role: "img", ...attrs }, ...children);
}

/** About how wide a legend text is at 12px: CJK characters are square, Latin about half. */
function textWidth(s) {
  let w = 0;
  for (const ch of s) w += ch.charCodeAt(0) > 0x2e80 ? 12 : 6.5;
  return w;
}

/** An axis for values up to v: a round step (1, 2 or 5 times a power of ten), about 4 ticks. */
function niceAxis(v, { integer = false } = {}) {
  if (!(v > 0)) return { max: 1, step: integer ? 1 : 0.25 };
  const raw = v / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  let step = (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  if (integer) step = Math.max(1, Math.round(step));
  return { max: Math.ceil(v / step - 1e-9) * step, step };
}

function axis({ max, step }, top, height) {
  const parts = [];
  for (let v = 0; v <= max + step / 2; v += step) {
    const x = LEFT + ((SVG_W - LEFT - RIGHT) * v) / max;
    parts.push(
      h("svg:line", { x1: x, x2: x, y1: top, y2: top + height, class: "grid-line" }),
      h("svg:text", { x, y: top + height + 15, "text-anchor": "middle", class: "tick", text: String(Math.round(v * 100) / 100) }),
    );
  }
  return parts;
}

function rowLabel(row, y) {
  return h("svg:text", { x: LEFT - 8, y, "text-anchor": "end", "dominant-baseline": "middle", class: "row-label", text: nameOf(row.unit) });
}

/** Grouped bars: p50 and p90 of one measure per unit. */
function timesChart(rows, measure) {
  const rowH = 34;
  const top = 28;
  const values = rows.map((r) => r.response_times_s?.[measure] || {});
  const ax = niceAxis(Math.max(0, ...values.map((v) => v.p90 ?? v.p50 ?? 0)));
  const max = ax.max;
  const w = SVG_W - LEFT - RIGHT;
  const height = rows.length * rowH;
  const parts = [
    h("svg:title", { text: t("stats.chart.times", { m: t(`m.${measure}`) }) }),
    h("svg:rect", { x: LEFT, y: 6, width: 12, height: 10, class: "bar-p50" }),
    h("svg:text", { x: LEFT + 16, y: 15, class: "legend", text: "p50" }),
    h("svg:rect", { x: LEFT + 60, y: 6, width: 12, height: 10, class: "bar-p90" }),
    h("svg:text", { x: LEFT + 76, y: 15, class: "legend", text: "p90" }),
    ...axis(ax, top, height),
  ];
  rows.forEach((row, i) => {
    const y = top + i * rowH;
    const v = values[i];
    parts.push(rowLabel(row, y + rowH / 2));
    for (const [k, dy, cls] of [["p90", 5, "bar-p90"], ["p50", 17, "bar-p50"]]) {
      const val = v[k];
      if (val === null || val === undefined) continue;
      const bw = Math.max(1, (val / max) * w);
      parts.push(
        h("svg:rect", { x: LEFT, y: y + dy - 1, width: bw, height: 11, class: cls, "data-testid": "chart-bar" },
          h("svg:title", { text: `${nameOf(row.unit)} ${k}: ${fmtSeconds(val)} (n=${v.n})` })),
        h("svg:text", { x: LEFT + bw + 4, y: y + dy + 8, class: "bar-value", text: fmtSeconds(val) }),
      );
    }
    if (!v.n) parts.push(h("svg:text", { x: LEFT + 4, y: y + rowH / 2 + 4, class: "bar-value", text: "–" }));
  });
  return svg({ viewBox: `0 0 ${SVG_W} ${top + height + 22}`, class: "chart", "data-testid": "chart-times" }, ...parts);
}

/** Stacked bars: resolved, false alarms, cancelled, open per unit; the rate at the end. */
function countsChart(rows) {
  const rowH = 28;
  const top = 28;
  const ax = niceAxis(Math.max(1, ...rows.map((r) => r.incidents || 0)), { integer: true });
  const max = ax.max;
  const w = SVG_W - LEFT - RIGHT;
  const height = rows.length * rowH;
  const series = [
    ["resolved", "seg-resolved"],
    ["false_alarms", "seg-false"],
    ["cancelled", "seg-cancelled"],
    ["open", "seg-open"],
  ];
  const parts = [h("svg:title", { text: t("stats.chart.counts") })];
  let lx = LEFT;
  for (const [k, cls] of series) {
    parts.push(
      h("svg:rect", { x: lx, y: 6, width: 12, height: 10, class: cls }),
      h("svg:text", { x: lx + 16, y: 15, class: "legend", text: t(`stats.${k}`) }),
    );
    lx += 28 + textWidth(t(`stats.${k}`));
  }
  parts.push(...axis(ax, top, height));
  rows.forEach((row, i) => {
    const y = top + i * rowH;
    parts.push(rowLabel(row, y + rowH / 2));
    let x = LEFT;
    for (const [k, cls] of series) {
      const n = row[k] || 0;
      if (!n) continue;
      const bw = (n / max) * w;
      parts.push(
        h("svg:rect", { x, y: y + 6, width: bw, height: rowH - 12, class: cls, "data-testid": "chart-bar" },
          h("svg:title", { text: `${nameOf(row.unit)} · ${t(`stats.${k}`)}: ${n}` })),
      );
      x += bw;
    }
    parts.push(h("svg:text", { x: x + 4, y: y + rowH / 2 + 4, class: "bar-value", text: `${row.incidents || 0} · ${fmtPercent(row.resolution_rate)}` }));
  });
  return svg({ viewBox: `0 0 ${SVG_W} ${top + height + 22}`, class: "chart", "data-testid": "chart-counts" }, ...parts);
}

// ---------------------------------------------------------------- page

function nameOf(code) {
  const u = unitsByCode.get(code);
  return u ? unitName(u) : code;
}

function tile(key, value, testid) {
  return h("div", { class: "tile", "data-testid": testid }, h("div", { class: "tile-value", text: value }), h("div", { class: "tile-label", text: t(key) }));
}

function render() {
  if (!data) return;
  const measure = new FormData(form).get("measure");
  const total = data.total;
  const rows = data.children.length ? data.children : total.incidents ? [total] : [];
  const rt = total.response_times_s || {};
  const tiles = h(
    "div",
    { class: "tiles" },
    tile("stats.incidents", String(total.incidents ?? 0), "tile-incidents"),
    tile("stats.rate", fmtPercent(total.resolution_rate), "tile-rate"),
    tile("stats.open", String(total.open ?? 0), "tile-open"),
    tile("stats.false_alarms", String(total.false_alarms ?? 0), "tile-false"),
    ...MEASURES.map((m) => tile(`m.${m}`, `p50 ${fmtSeconds(rt[m]?.p50)}`, `tile-${m}`)),
  );
  const levels = Object.entries(data.acknowledged_at_level || {});
  const tableRows = [total, ...data.children];
  const tbl = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { "data-testid": "stats-table" },
      h(
        "thead",
        {},
        h("tr", {}, [
          h("th", { text: t("f.unit") }),
          h("th", { text: t("stats.incidents") }),
          h("th", { text: t("stats.open") }),
          h("th", { text: t("stats.resolved") }),
          h("th", { text: t("stats.false_alarms") }),
          h("th", { text: t("stats.rate") }),
          ...MEASURES.map((m) => h("th", { text: `${t(`m.${m}`)} p50 / p90 / p99 (n)` })),
        ]),
      ),
      h(
        "tbody",
        {},
        tableRows.map((r, i) =>
          h("tr", { class: i === 0 ? "total" : null }, [
            h("td", { text: i === 0 ? `${nameOf(r.unit)} (${t("f.total")})` : nameOf(r.unit) }),
            h("td", { class: "num", text: String(r.incidents ?? 0) }),
            h("td", { class: "num", text: String(r.open ?? 0) }),
            h("td", { class: "num", text: String(r.resolved ?? 0) }),
            h("td", { class: "num", text: String(r.false_alarms ?? 0) }),
            h("td", { class: "num", text: fmtPercent(r.resolution_rate) }),
            ...MEASURES.map((m) => {
              const v = r.response_times_s?.[m];
              return h("td", { class: "num", text: v ? `${fmtSeconds(v.p50)} / ${fmtSeconds(v.p90)} / ${fmtSeconds(v.p99)} (${v.n})` : "–" });
            }),
          ]),
        ),
      ),
    ),
  );
  out.replaceChildren(
    tiles,
    rows.length
      ? h(
          "div",
          { class: "charts" },
          h("section", { class: "card" }, h("h2", { text: t("stats.chart.times", { m: t(`m.${measure}`) }) }), timesChart(rows, measure)),
          h("section", { class: "card" }, h("h2", { text: t("stats.chart.counts") }), countsChart(rows)),
        )
      : h("p", { class: "empty", "data-testid": "stats-empty", text: t("stats.empty") }),
    h(
      "section",
      { class: "card" },
      h("h2", { text: t("stats.table") }),
      tbl,
      levels.length
        ? h("p", { class: "muted" }, `${t("stats.ack_levels")}: ${levels.map(([lv, n]) => `${label("level", lv)} ${n}`).join(" · ")}`)
        : null,
    ),
  );
}

async function load() {
  const p = params();
  history.replaceState(null, "", `/stats${query({ unit: p.unit, from: form.from.value, to: form.to.value })}`);
  csv.href = `/api/v1/stats/response-times${query({ ...p, format: "csv" })}`;
  try {
    data = await api(`/api/v1/stats/response-times${query(p)}`);
    pageError.hidden = true;
    render();
  } catch (err) {
    if (err.status === 401) return;
    pageError.textContent = err.message;
    pageError.hidden = false;
  }
}

async function main() {
  const page = await initPage("stats");
  unitsByCode = new Map(page.units.map((u) => [u.code, u]));
  const url = new URLSearchParams(location.search);
  const start = unitsByCode.has(url.get("unit")) ? url.get("unit") : page.officer.unit_code;
  unitSel = unitSelect(page.units, start, { name: "unit", "data-testid": "stats-unit" });
  document.getElementById("unit-slot").replaceWith(unitSel);
  const today = new Date();
  const weekAgo = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6);
  form.from.value = /^\d{4}-\d{2}-\d{2}$/.test(url.get("from") || "") ? url.get("from") : dateValue(weekAgo);
  form.to.value = /^\d{4}-\d{2}-\d{2}$/.test(url.get("to") || "") ? url.get("to") : dateValue(today);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });
  unitSel.addEventListener("change", load);
  form.measure.addEventListener("change", render);
  onLangChange(render);
  await load();
}

main().catch((err) => {
  if (err.status !== 401) {
    pageError.textContent = err.message || String(err);
    pageError.hidden = false;
  }
});
