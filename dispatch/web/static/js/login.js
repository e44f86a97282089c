// Sign-in: the API sets the HttpOnly session cookie; then on to where the officer was going.

import { api } from "./api.js";
import { applyI18n, onLangChange, t, toggleLang } from "./i18n.js";

const form = document.getElementById("form");
const error = document.getElementById("error");
const lang = document.getElementById("lang");

function target() {
  const next = new URLSearchParams(location.search).get("next") || "";
  // Only a path on this site: never "//host" or "https://..."
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : "/queue";
}

function paint() {
  lang.textContent = t("lang.other");
  applyI18n();
}

lang.addEventListener("click", toggleLang);
onLangChange(paint);
paint();

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  error.hidden = true;
  const data = new FormData(form);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api("/api/v1/auth/sign-in", {
      method: "POST",
      body: { officer_id: String(data.get("officer_id")).trim(), password: String(data.get("password")) },
      redirectOn401: false,
    });
    location.assign(target());
  } catch (err) {
    error.textContent = err.status === 401 ? t("login.bad") : err.message || t("error.network");
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});

// Already signed in: go straight on.
api("/api/v1/me", { redirectOn401: false }).then(
  () => location.replace(target()),
  () => {},
);
