// Texts of the duty desk in Chinese (zh-CN) and English. The language follows the browser
// (navigator.language) until the officer picks one; the choice is kept in localStorage.

const STORAGE_KEY = "pingan.lang";
export const LANGS = ["zh-CN", "en"];

const zh = {
  "app.name": "平安调度",
  "nav.queue": "告警队列",
  "nav.stats": "统计",
  "nav.devices": "设备",
  "lang.other": "English",
  "signout": "退出",
  "sound.on": "声音：开",
  "sound.off": "声音：关",
  "conn.connecting": "连接中…",
  "conn.connected": "实时已连接",
  "conn.reconnecting": "重新连接中…",
  "loading": "加载中…",
  "error.network": "网络错误，请重试",

  "login.title": "值班台登录",
  "login.officer": "警员编号",
  "login.password": "密码",
  "login.submit": "登录",
  "login.bad": "警员编号或密码错误",
  "login.hint": "请使用本人账号登录，仅显示本辖区告警。",

  "queue.title": "实时告警",
  "queue.count": "{n} 起未结",
  "queue.empty": "本辖区当前没有未结告警",
  "queue.closed": "已结案：{case}",
  "queue.new": "新告警：{what}",

  "f.case": "案件编号",
  "f.priority": "优先级",
  "f.status": "状态",
  "f.level": "当前层级",
  "f.device": "设备",
  "f.address": "地址",
  "f.building": "楼栋",
  "f.grid": "网格",
  "f.note": "居民备注",
  "f.events": "事件数",
  "f.pressed": "按下时间",
  "f.received": "收到时间",
  "f.opened": "立案时间",
  "f.notified": "首次通知",
  "f.acknowledged": "确认",
  "f.on_scene": "到场",
  "f.closed": "结案",
  "f.outcome": "处置结果",
  "f.assigned": "指派给",
  "f.by": "由 {who}",
  "f.time": "时间",
  "f.actor": "操作人",
  "f.detail": "详情",
  "f.officer": "警员",
  "f.kind": "类型",
  "f.reason": "原因",
  "f.sent": "发送时间",
  "f.attempts": "尝试",
  "f.error": "错误",
  "f.type": "类型",
  "f.occurred": "发生时间",
  "f.battery": "电量",
  "f.last_seen": "最后在线",
  "f.unit": "单位",
  "f.online": "在线",
  "f.total": "合计",

  "ago.events": "{n} 次触发",
  "deadline.ack": "确认剩余 {t}",
  "deadline.arrival": "到场剩余 {t}",
  "deadline.overdue.ack": "确认超时 {t}",
  "deadline.overdue.arrival": "到场超时 {t}",
  "major": "重大事件",
  "member_of": "属于重大事件",

  "priority.1": "一级",
  "priority.2": "二级",
  "priority.3": "三级",
  "priority.4": "四级",
  "priority.5": "五级",

  "status.opened": "已立案",
  "status.notified": "已通知",
  "status.acknowledged": "已确认",
  "status.on_scene": "已到场",
  "status.resolved": "已处置",
  "status.false_alarm": "误报",
  "status.referred": "已移交",
  "status.cancelled": "居民撤销",

  "level.grid": "网格",
  "level.community": "社区",
  "level.street": "街道",
  "level.district": "区",
  "level.city": "市",

  "lvl.grid": "网格级",
  "lvl.community": "社区级",
  "lvl.street": "街道级",
  "lvl.district": "区级",
  "lvl.city": "市级",

  "event.alarm.panic": "紧急求助",
  "event.alarm.fire": "火警",
  "event.alarm.gas": "燃气泄漏",
  "event.alarm.fall": "跌倒",
  "event.alarm.medical": "医疗求助",
  "event.alarm.intrusion": "入侵",
  "event.alarm.cancel": "撤销",
  "event.device.tamper": "设备被拆",
  "event.device.fault": "设备故障",
  "event.device.low_battery": "电量低",
  "event.device.heartbeat": "心跳",

  "kind.panic_button": "一键报警按钮",
  "kind.pendant": "随身呼叫器",
  "kind.alarm_column": "报警立柱",
  "kind.smoke_detector": "烟感",
  "kind.gas_detector": "燃气探测器",
  "kind.fall_detector": "跌倒探测器",
  "kind.door_sensor": "门磁",

  "action.acknowledge": "确认接警",
  "action.on_scene": "已到场",
  "action.resolve": "结案",
  "action.take_over": "接管",
  "action.assign": "指派",
  "action.note": "备注",
  "action.details": "详情",
  "action.done": "已提交：{action}",

  "outcome.resolved": "已处置",
  "outcome.false_alarm": "误报",
  "outcome.referred": "移交",
  "outcome.cancelled": "居民撤销",
  "referral.110": "110 公安",
  "referral.119": "119 消防",
  "referral.120": "120 急救",

  "dialog.resolve": "结案",
  "dialog.assign": "指派",
  "dialog.note": "添加备注",
  "dialog.outcome": "处置结果",
  "dialog.referral": "移交至",
  "dialog.text": "说明",
  "dialog.assignee": "警员",
  "dialog.off_shift": "不在班",
  "dialog.submit": "提交",
  "dialog.cancel": "取消",

  "incident.title": "事件详情",
  "incident.back": "返回队列",
  "incident.timeline": "时间线",
  "incident.notifications": "通知与送达",
  "incident.history": "设备近期记录",
  "incident.members": "关联事件",
  "incident.policy": "处置时限",
  "incident.none": "无",
  "incident.ack_s": "确认时限",
  "incident.arrive_s": "到场时限",
  "incident.remind_s": "提醒间隔",

  "tl.opened": "立案",
  "tl.event_joined": "再次触发",
  "tl.joined_major": "并入重大事件",
  "tl.notifications_queued": "发出通知",
  "tl.notifications_sent": "通知已送达",
  "dk.channel": "渠道",
  "dk.level": "层级",
  "dk.from_level": "从",
  "dk.to_level": "至",
  "dk.actor_level": "确认方",
  "dk.reason": "原因",
  "dk.text": "内容",
  "dk.note": "说明",
  "dk.outcome": "结果",
  "dk.referral": "移交",
  "dk.officers": "通知对象",
  "dk.kind": "类型",
  "dk.assignee": "指派给",
  "dk.event_id": "事件",
  "dk.type": "类型",
  "dk.priority": "优先级",
  "dk.policy": "时限来源",
  "dk.grace_s": "撤销时限(秒)",
  "dk.major_id": "重大事件",
  "dk.incident_id": "事件",
  "dk.code": "代码",
  "tl.notified": "已通知",
  "tl.reminded": "提醒",
  "tl.escalated": "升级",
  "tl.acknowledged": "确认接警",
  "tl.on_scene": "到场",
  "tl.closed": "结案",
  "tl.cancelled": "居民撤销",
  "tl.cancel_refused": "撤销未生效",
  "tl.note": "备注",
  "tl.taken_over": "接管",
  "tl.assigned": "指派",
  "tl.member_added": "并入重大事件",
  "tl.major_incident": "重大事件",

  "nk.incident_opened": "新告警",
  "nk.major_incident": "重大事件",
  "nk.reminder": "提醒",
  "nk.escalated": "升级",
  "nk.moved_on": "已上报上级",
  "nk.acknowledged": "已确认",
  "nk.on_scene": "已到场",
  "nk.taken_over": "已接管",
  "nk.assigned": "指派",
  "nk.closed": "已结案",
  "nk.cancelled": "已撤销",
  "nk.cancel_refused": "撤销未生效",
  "ns.pending": "待发送",
  "ns.sent": "已送达",
  "ns.failed": "发送失败",

  "stats.title": "响应统计",
  "stats.unit": "单位",
  "stats.from": "开始日期",
  "stats.to": "结束日期",
  "stats.show": "查询",
  "stats.csv": "下载 CSV",
  "stats.incidents": "事件数",
  "stats.closed": "已结",
  "stats.open": "未结",
  "stats.resolved": "已处置",
  "stats.false_alarms": "误报",
  "stats.cancelled": "撤销",
  "stats.rate": "处置率",
  "stats.measure": "指标",
  "stats.chart.times": "各下级单位{m}（秒）",
  "stats.chart.counts": "各下级单位事件数",
  "stats.table": "明细",
  "stats.ack_levels": "各层级确认数",
  "stats.empty": "该时段没有事件",
  "m.to_notify": "通知用时",
  "m.to_acknowledge": "确认用时",
  "m.to_arrive": "到场用时",
  "m.to_resolve": "结案用时",

  "devices.title": "设备状态",
  "devices.state": "筛选",
  "devices.cells": "各网格设备",
  "devices.list": "设备列表",
  "devices.shown": "显示 {n} 台",
  "devices.truncated": "仅显示前 {n} 台",
  "devices.never": "从未上线",
  "devices.inactive": "已停用",
  "state.all": "全部",
  "state.online": "在线",
  "state.offline": "离线",
  "state.low_battery": "电量低",
  "state.inactive": "已停用",
};

const en = {
  "app.name": "Ping'an Dispatch",
  "nav.queue": "Alert queue",
  "nav.stats": "Statistics",
  "nav.devices": "Devices",
  "lang.other": "中文",
  "signout": "Sign out",
  "sound.on": "Sound: on",
  "sound.off": "Sound: off",
  "conn.connecting": "Connecting…",
  "conn.connected": "Live",
  "conn.reconnecting": "Reconnecting…",
  "loading": "Loading…",
  "error.network": "Network error, please retry",

  "login.title": "Duty desk sign-in",
  "login.officer": "Officer ID",
  "login.password": "Password",
  "login.submit": "Sign in",
  "login.bad": "Unknown officer or wrong password",
  "login.hint": "Sign in with your own account; you see your jurisdiction's alerts only.",

  "queue.title": "Live alerts",
  "queue.count": "{n} open",
  "queue.empty": "No open alerts in your jurisdiction",
  "queue.closed": "Closed: {case}",
  "queue.new": "New alert: {what}",

  "f.case": "Case",
  "f.priority": "Priority",
  "f.status": "Status",
  "f.level": "Level",
  "f.device": "Device",
  "f.address": "Address",
  "f.building": "Building",
  "f.grid": "Grid cell",
  "f.note": "Resident note",
  "f.events": "Events",
  "f.pressed": "Pressed",
  "f.received": "Received",
  "f.opened": "Opened",
  "f.notified": "First notified",
  "f.acknowledged": "Acknowledged",
  "f.on_scene": "On scene",
  "f.closed": "Closed",
  "f.outcome": "Outcome",
  "f.assigned": "Assigned to",
  "f.by": "by {who}",
  "f.time": "Time",
  "f.actor": "Actor",
  "f.detail": "Detail",
  "f.officer": "Officer",
  "f.kind": "Kind",
  "f.reason": "Reason",
  "f.sent": "Sent",
  "f.attempts": "Attempts",
  "f.error": "Error",
  "f.type": "Type",
  "f.occurred": "Occurred",
  "f.battery": "Battery",
  "f.last_seen": "Last seen",
  "f.unit": "Unit",
  "f.online": "Online",
  "f.total": "Total",

  "ago.events": "{n} events",
  "deadline.ack": "ack in {t}",
  "deadline.arrival": "arrive in {t}",
  "deadline.overdue.ack": "ack overdue {t}",
  "deadline.overdue.arrival": "arrival overdue {t}",
  "major": "Major incident",
  "member_of": "Part of a major incident",

  "priority.1": "P1",
  "priority.2": "P2",
  "priority.3": "P3",
  "priority.4": "P4",
  "priority.5": "P5",

  "status.opened": "Opened",
  "status.notified": "Notified",
  "status.acknowledged": "Acknowledged",
  "status.on_scene": "On scene",
  "status.resolved": "Resolved",
  "status.false_alarm": "False alarm",
  "status.referred": "Referred",
  "status.cancelled": "Cancelled",

  "level.grid": "Grid",
  "level.community": "Community",
  "level.street": "Street",
  "level.district": "District",
  "level.city": "City",

  "lvl.grid": "Grid level",
  "lvl.community": "Community level",
  "lvl.street": "Street level",
  "lvl.district": "District level",
  "lvl.city": "City level",

  "event.alarm.panic": "Panic",
  "event.alarm.fire": "Fire",
  "event.alarm.gas": "Gas leak",
  "event.alarm.fall": "Fall",
  "event.alarm.medical": "Medical",
  "event.alarm.intrusion": "Intrusion",
  "event.alarm.cancel": "Cancel",
  "event.device.tamper": "Tamper",
  "event.device.fault": "Device fault",
  "event.device.low_battery": "Low battery",
  "event.device.heartbeat": "Heartbeat",

  "kind.panic_button": "Panic button",
  "kind.pendant": "Pendant",
  "kind.alarm_column": "Alarm column",
  "kind.smoke_detector": "Smoke detector",
  "kind.gas_detector": "Gas detector",
  "kind.fall_detector": "Fall detector",
  "kind.door_sensor": "Door sensor",

  "action.acknowledge": "Acknowledge",
  "action.on_scene": "On scene",
  "action.resolve": "Resolve",
  "action.take_over": "Take over",
  "action.assign": "Assign",
  "action.note": "Note",
  "action.details": "Details",
  "action.done": "Done: {action}",

  "outcome.resolved": "Resolved",
  "outcome.false_alarm": "False alarm",
  "outcome.referred": "Referred",
  "outcome.cancelled": "Cancelled",
  "referral.110": "110 police",
  "referral.119": "119 fire service",
  "referral.120": "120 ambulance",

  "dialog.resolve": "Resolve",
  "dialog.assign": "Assign",
  "dialog.note": "Add a note",
  "dialog.outcome": "Outcome",
  "dialog.referral": "Referred to",
  "dialog.text": "Text",
  "dialog.assignee": "Officer",
  "dialog.off_shift": "off shift",
  "dialog.submit": "Submit",
  "dialog.cancel": "Cancel",

  "incident.title": "Incident",
  "incident.back": "Back to the queue",
  "incident.timeline": "Timeline",
  "incident.notifications": "Notifications and delivery",
  "incident.history": "Recent device history",
  "incident.members": "Member incidents",
  "incident.policy": "Deadlines",
  "incident.none": "none",
  "incident.ack_s": "Acknowledge within",
  "incident.arrive_s": "Arrive within",
  "incident.remind_s": "Remind every",

  "tl.opened": "Opened",
  "tl.event_joined": "Pressed again",
  "tl.joined_major": "Joined a major incident",
  "tl.notifications_queued": "Notifications queued",
  "tl.notifications_sent": "Notifications delivered",
  "dk.channel": "channel",
  "dk.level": "level",
  "dk.from_level": "from",
  "dk.to_level": "to",
  "dk.actor_level": "by level",
  "dk.reason": "reason",
  "dk.text": "text",
  "dk.note": "note",
  "dk.outcome": "outcome",
  "dk.referral": "referral",
  "dk.officers": "officers",
  "dk.kind": "kind",
  "dk.assignee": "assignee",
  "dk.event_id": "event",
  "dk.type": "type",
  "dk.priority": "priority",
  "dk.policy": "policy",
  "dk.grace_s": "grace (s)",
  "dk.major_id": "major incident",
  "dk.incident_id": "incident",
  "dk.code": "code",
  "tl.notified": "Notified",
  "tl.reminded": "Reminded",
  "tl.escalated": "Escalated",
  "tl.acknowledged": "Acknowledged",
  "tl.on_scene": "On scene",
  "tl.closed": "Closed",
  "tl.cancelled": "Cancelled by the resident",
  "tl.cancel_refused": "Cancel refused",
  "tl.note": "Note",
  "tl.taken_over": "Taken over",
  "tl.assigned": "Assigned",
  "tl.member_added": "Joined a major incident",
  "tl.major_incident": "Major incident",

  "nk.incident_opened": "New alert",
  "nk.major_incident": "Major incident",
  "nk.reminder": "Reminder",
  "nk.escalated": "Escalated",
  "nk.moved_on": "Moved on",
  "nk.acknowledged": "Acknowledged",
  "nk.on_scene": "On scene",
  "nk.taken_over": "Taken over",
  "nk.assigned": "Assigned",
  "nk.closed": "Closed",
  "nk.cancelled": "Cancelled",
  "nk.cancel_refused": "Cancel refused",
  "ns.pending": "pending",
  "ns.sent": "delivered",
  "ns.failed": "failed",

  "stats.title": "Response statistics",
  "stats.unit": "Unit",
  "stats.from": "From",
  "stats.to": "To",
  "stats.show": "Show",
  "stats.csv": "Download CSV",
  "stats.incidents": "Incidents",
  "stats.closed": "Closed",
  "stats.open": "Open",
  "stats.resolved": "Resolved",
  "stats.false_alarms": "False alarms",
  "stats.cancelled": "Cancelled",
  "stats.rate": "Resolution rate",
  "stats.measure": "Measure",
  "stats.chart.times": "{m} per child unit (seconds)",
  "stats.chart.counts": "Incidents per child unit",
  "stats.table": "Details",
  "stats.ack_levels": "Acknowledged per level",
  "stats.empty": "No incidents in this period",
  "m.to_notify": "Time to notify",
  "m.to_acknowledge": "Time to acknowledge",
  "m.to_arrive": "Time to arrive",
  "m.to_resolve": "Time to resolve",

  "devices.title": "Devices",
  "devices.state": "Show",
  "devices.cells": "Per grid cell",
  "devices.list": "Devices",
  "devices.shown": "{n} shown",
  "devices.truncated": "only the first {n} are shown",
  "devices.never": "never",
  "devices.inactive": "inactive",
  "state.all": "All",
  "state.online": "Online",
  "state.offline": "Offline",
  "state.low_battery": "Low battery",
  "state.inactive": "Inactive",
};

const DICTS = { "zh-CN": zh, en };

function initialLang() {
  let saved = null;
  try {
    saved = localStorage.getItem(STORAGE_KEY);
  } catch {
    // storage disabled: follow the browser
  }
  if (LANGS.includes(saved)) return saved;
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

let lang = initialLang();
const listeners = [];
document.documentElement.lang = lang;

export function getLang() {
  return lang;
}

/** Switches the language, remembers it and re-renders every text. */
export function setLang(next) {
  if (!LANGS.includes(next) || next === lang) return;
  lang = next;
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // not remembered; still switched
  }
  document.documentElement.lang = next;
  applyI18n();
  for (const fn of listeners) fn(next);
}

export function toggleLang() {
  setLang(lang === "zh-CN" ? "en" : "zh-CN");
}

export function onLangChange(fn) {
  listeners.push(fn);
}

/** The text for `key`, with `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  const s = DICTS[lang][key] ?? en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** The label of an enumerated value (status, level, kind...), or the raw value. */
export function label(group, value) {
  if (value === null || value === undefined || value === "") return "";
  const key = `${group}.${value}`;
  return DICTS[lang][key] ?? en[key] ?? String(value);
}

/** Fills every [data-i18n] element (and placeholder / title / aria-label variants). */
export function applyI18n(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  const title = document.querySelector("title[data-title]");
  if (title) document.title = `${t(title.dataset.title)} · ${t("app.name")}`;
}

/** A unit's name in the current language. */
export function unitName(unit) {
  if (!unit) return "";
  return lang === "en" && unit.name_en ? unit.name_en : unit.name;
}
