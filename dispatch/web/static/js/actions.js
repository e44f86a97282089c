// Officer actions on an incident, shared by the queue and the incident page: which buttons a
// row offers, the small form for resolve / assign / note, and the call to the API.

import { api } from "./api.js";
import { h, officers, toast, unitsAbove } from "./common.js";
import { label, t } from "./i18n.js";

const LEVELS = ["grid", "community", "street", "district", "city"];
const OPEN = new Set(["opened", "notified", "acknowledged", "on_scene"]);

export function isOpen(row) {
  return OPEN.has(row.status) && !row.closed_at;
}

/** The actions that make sense for this officer on this row now. */
export function availableActions(row, officer) {
  if (!isOpen(row)) return [];
  const mine = LEVELS.indexOf(officer.level);
  const out = [];
  if (row.status === "opened" || row.status === "notified" || (row.status === "acknowledged" && row.awaiting === "ack")) {
    out.push("acknowledge");
  }
  if (row.status !== "on_scene") out.push("on_scene");
  out.push("resolve");
  if (mine > 0 && mine >= LEVELS.indexOf(row.level) && row.assigned_to !== officer.officer_id) out.push("take_over");
  if (mine > 0) out.push("assign");
  out.push("note");
  return out;
}

/** A bar of buttons; each calls the API (asking for details first where needed). */
export function actionBar(row, officer, { compact = false, onDone = null } = {}) {
  const bar = h("div", { class: "actions", "data-testid": "actions" });
  for (const action of availableActions(row, officer)) {
    const primary = action === "acknowledge" || (action === "on_scene" && row.status === "acknowledged");
    const btn = h("button", {
      type: "button",
      class: `btn btn-${action}${primary ? " btn-primary" : ""}${compact ? " btn-small" : ""}`,
      "data-testid": `action-${action}`,
      "data-action": action,
      text: t(`action.${action}`),
    });
    btn.addEventListener("click", async (ev) => {
      ev.stopPropagation();
      const body = await askFor(action, row);
      if (!body) return;
      for (const b of bar.querySelectorAll("button")) b.disabled = true;
      try {
        const res = await perform(row.incident_id, body);
        if (res && onDone) onDone(res);
      } finally {
        for (const b of bar.querySelectorAll("button")) b.disabled = false;
      }
    });
    bar.appendChild(btn);
  }
  return bar;
}

export async function perform(incidentId, body) {
  try {
    const res = await api(`/api/v1/incidents/${encodeURIComponent(incidentId)}/actions`, { method: "POST", body });
    toast(t("action.done", { action: t(`action.${body.action}`) }), "ok");
    return res;
  } catch (err) {
    toast(err.message || t("error.network"), "error");
    return null;
  }
}

// ---------------------------------------------------------------- the form

async function askFor(action, row) {
  if (action === "resolve") return resolveForm(row);
  if (action === "assign") return assignForm(row);
  if (action === "note") return simpleForm("note", "text", "textarea");
  return { action };
}

function dialogShell(titleKey) {
  const dlg = h("dialog", { class: "dialog", "data-testid": "action-dialog" });
  const form = h("form", { method: "dialog" });
  dlg.appendChild(form);
  form.appendChild(h("h3", { text: t(`dialog.${titleKey}`) }));
  document.body.appendChild(dlg);
  return { dlg, form };
}

function buttons(form) {
  form.appendChild(
    h(
      "div",
      { class: "dialog-buttons" },
      h("button", { type: "submit", value: "cancel", class: "btn", formnovalidate: true, "data-testid": "dialog-cancel", text: t("dialog.cancel") }),
      h("button", { type: "submit", value: "ok", class: "btn btn-primary", "data-testid": "dialog-submit", text: t("dialog.submit") }),
    ),
  );
}

function run(dlg, collect) {
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => {
      const ok = dlg.returnValue === "ok";
      const body = ok ? collect() : null;
      dlg.remove();
      resolve(body);
    });
    dlg.showModal();
  });
}

function resolveForm(row) {
  const { dlg, form } = dialogShell("resolve");
  const outcome = h(
    "select",
    { name: "outcome", "data-testid": "dialog-outcome" },
    ["resolved", "false_alarm", "referred"].map((o) => h("option", { value: o, text: label("outcome", o) })),
  );
  const referral = h(
    "select",
    { name: "referral", "data-testid": "dialog-referral", disabled: true },
    ["110", "119", "120"].map((r) => h("option", { value: r, text: label("referral", r) })),
  );
  outcome.addEventListener("change", () => {
    referral.disabled = outcome.value !== "referred";
  });
  const text = h("textarea", { name: "text", rows: 3, maxlength: 2000, "data-testid": "dialog-text" });
  form.append(
    h("p", { class: "muted", text: row.case_number || "" }),
    h("label", {}, h("span", { text: t("dialog.outcome") }), outcome),
    h("label", {}, h("span", { text: t("dialog.referral") }), referral),
    h("label", {}, h("span", { text: t("dialog.text") }), text),
  );
  buttons(form);
  return run(dlg, () => {
    const body = { action: "resolve", outcome: outcome.value };
    if (outcome.value === "referred") body.referral = referral.value;
    if (text.value.trim()) body.text = text.value.trim();
    return body;
  });
}

/** Officers who may take the incident: those of the units from its cell up, on shift first. */
function candidates(row) {
  const path = new Set(unitsAbove(row.grid_code).map((u) => u.code));
  return officers()
    .filter((o) => o.active !== false && path.has(o.unit_code) && o.officer_id !== row.assigned_to)
    .sort((a, b) => Number(b.on_shift) - Number(a.on_shift) || b.unit_code.length - a.unit_code.length);
}

function assignForm(row) {
  const list = candidates(row);
  if (!list.length) return simpleForm("assign", "assignee", "input"); // no directory: type the id
  const { dlg, form } = dialogShell("assign");
  const select = h(
    "select",
    { name: "assignee", required: true, "data-testid": "dialog-assignee" },
    list.map((o) =>
      h("option", { value: o.officer_id }, `${o.name} · ${o.officer_id} · ${label("level", o.level)}${o.on_shift ? "" : ` · ${t("dialog.off_shift")}`}`),
    ),
  );
  form.append(h("p", { class: "muted", text: row.case_number || "" }), h("label", {}, h("span", { text: t("dialog.assignee") }), select));
  buttons(form);
  return run(dlg, () => ({ action: "assign", assignee: select.value }));
}

function simpleForm(action, field, tag) {
  const { dlg, form } = dialogShell(action);
  const input =
    tag === "textarea"
      ? h("textarea", { name: field, rows: 4, maxlength: 2000, required: true, "data-testid": "dialog-text" })
      : h("input", { name: field, required: true, maxlength: 64, placeholder: "go-990102001001001", "data-testid": "dialog-assignee" });
  form.append(h("label", {}, h("span", { text: t(action === "assign" ? "dialog.assignee" : "dialog.text") }), input));
  buttons(form);
  return run(dlg, () => (input.value.trim() ? { action, [field]: input.value.trim() } : null));
}
