// Calls to /api/v1 on the same origin. The session is the HttpOnly cookie set at sign-in;
// a 401 sends the officer to the sign-in page. Errors carry the server's code and message.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function toLogin() {
  const here = location.pathname + location.search;
  location.assign(here.startsWith("/login") ? "/login" : `/login?next=${encodeURIComponent(here)}`);
}

export async function api(path, { method = "GET", body, redirectOn401 = true } = {}) {
  let res;
  try {
    res = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "network", err.message || "network error");
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (res.status === 401 && redirectOn401) toLogin();
  if (!res.ok) {
    throw new ApiError(res.status, data?.code ?? `http_${res.status}`, data?.message ?? res.statusText);
  }
  return data;
}

/** Query string from an object, leaving out empty values (URLSearchParams encodes '+'). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
