// The live feed: /api/v1/ws with the session cookie. Reconnects by itself with backoff
// (0.5 s doubling to 5 s), asks for what it missed with ?since=<newest updated_at seen>,
// and treats 45 s without any message (the server pings every 15 s) as a dead connection.

import { api, toLogin } from "./api.js";
import { setServerTime } from "./common.js";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 5000;
const SILENCE_MS = 45000;

export class LiveFeed {
  /**
   * handlers: {since() -> ISO|null, incident(row, {catchUp}), caughtUp(count), resync(),
   *            status("connecting"|"connected"|"reconnecting"), opened(isReconnect)}
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.ws = null;
    this.delay = FIRST_DELAY_MS;
    this.everOpened = false;
    this.timer = null;
    this.watchdog = null;
    this.stopped = false;
    this.connects = 0; // for tests and the curious: how many sockets this page opened
    addEventListener("online", () => this.reconnectNow());
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.drop();
  }

  url() {
    const u = new URL("/api/v1/ws", location.href);
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const since = this.handlers.since?.();
    if (since) u.searchParams.set("since", since); // encoded: '+' of the offset becomes %2B
    return u.toString();
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.status(this.everOpened ? "reconnecting" : "connecting");
    let opened = false;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    this.connects += 1;
    ws.onopen = () => {
      opened = true;
      this.delay = FIRST_DELAY_MS;
      const again = this.everOpened;
      this.everOpened = true;
      this.status("connected");
      this.alive();
      this.handlers.opened?.(again);
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.alive();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.dispatch(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.watchdog);
      if (ev.code === 4001) {
        toLogin(); // the session ended
        return;
      }
      if (!opened) this.checkSession();
      this.later();
    };
    ws.onerror = () => {}; // a close event follows
  }

  dispatch(msg) {
    switch (msg.type) {
      case "hello":
      case "ping":
        if (msg.server_time) setServerTime(msg.server_time);
        this.handlers.ping?.(msg);
        break;
      case "incident":
        if (msg.incident) this.handlers.incident?.(msg.incident, { catchUp: Boolean(msg.catch_up) });
        break;
      case "caught_up":
        this.handlers.caughtUp?.(msg.count);
        break;
      case "resync":
        this.handlers.resync?.();
        break;
      default:
        break;
    }
  }

  alive() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      this.drop();
      this.later();
    }, SILENCE_MS);
  }

  /** Forget the current socket without waiting for its close handshake. */
  drop() {
    clearTimeout(this.watchdog);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close();
      } catch {
        // already closing
      }
    }
  }

  later() {
    if (this.stopped || this.timer) return;
    this.status(this.everOpened ? "reconnecting" : "connecting");
    const wait = this.delay * (0.9 + Math.random() * 0.2);
    this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    this.timer = setTimeout(() => this.connect(), Math.min(wait, MAX_DELAY_MS));
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    this.delay = FIRST_DELAY_MS;
    this.connect();
  }

  /** A refused handshake may mean the session ended: api() goes to /login on a 401. */
  checkSession() {
    api("/api/v1/me").catch(() => {});
  }

  status(s) {
    this.handlers.status?.(s);
  }
}
