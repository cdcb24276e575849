// The emulator's page: one workspace member's view of Slack, kept live from
// /_emulator/events (server-sent snapshots). Every action goes through /_emulator/*,
// which makes the emulator send the app the same signed requests Slack would.

import { h, renderBlocks } from "./blocks.js";
import { mrkdwn } from "./mrkdwn.js";
import { closeModal, drawModal } from "./modal.js";

const ui = {
  snap: null,
  json: "",
  ctx: null,
  place: null, // {kind: "channel", id} or {kind: "home"}
  drawnPlace: "",
  drawn: { me: "", main: "" }, // what was last drawn, to skip redraws that change nothing
  expanded: new Set(), // thread parents shown open
  dismissed: new Set(), // ephemeral ts the person dismissed
  seen: {}, // channel id -> how many items the person has seen there
  choices: new Map(), // what a select in a message shows until the message changes
  stuck: true, // the message list follows the newest message
  rendered: new Map(), // "channel|ts" -> {key, el}: message elements reused while unchanged
  modalKey: "",
  collectors: new Map(),
};
window.hitlEmulator = ui;

const $ = (sel) => document.querySelector(sel);
const SLACKBOT = { id: "USLACKBOT", name: "slackbot", real_name: "Slackbot", is_bot: true, groups: [] };

// -- talking to the emulator ----------------------------------------------------------------

function setStatus(text, bad) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("bad", Boolean(bad));
  s.classList.remove("flash");
  void s.offsetWidth; // restart the highlight animation
  s.classList.add("flash");
}

async function refresh() {
  const resp = await fetch("/_emulator/state", { cache: "no-store" });
  if (resp.ok) render(await resp.json());
}

async function post(path, body) {
  let data;
  try {
    const resp = await fetch(`/_emulator/${path}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    data = await resp.json();
  } catch (e) {
    data = { ok: false, error: String(e) };
  }
  if (!data.ok) setStatus(`⚠ ${data.error}`, true);
  else if (data.summary) setStatus(data.summary, data.timed_out || (typeof data.status === "number" && data.status !== 200));
  await refresh();
  return data;
}

function connect() {
  const live = $("#live");
  if (!("EventSource" in window)) {
    setInterval(refresh, 700);
    refresh();
    return;
  }
  const events = new EventSource("/_emulator/events");
  events.onopen = () => { live.className = "live on"; live.title = "Live: updates as they happen"; };
  events.onerror = () => { live.className = "live off"; live.title = "Disconnected: reconnecting…"; };
  events.onmessage = (e) => render(JSON.parse(e.data));
}

// -- state ---------------------------------------------------------------------------------

function lookups(snap) {
  const users = { USLACKBOT: SLACKBOT };
  for (const u of snap.users) users[u.id] = u;
  const channels = {};
  for (const c of snap.channels) channels[c.id] = c;
  const groups = {};
  for (const g of snap.usergroups) groups[g.id] = g;
  return { users, channels, groups, people: snap.users.filter((u) => !u.is_bot) };
}

function render(snap) {
  const json = JSON.stringify(snap);
  if (json === ui.json) return;
  const first = !ui.snap;
  ui.json = json;
  ui.snap = snap;
  ui.ctx = lookups(snap);
  if (first && snap.last) setStatus(snap.last.summary);
  else if (first) setStatus("Ready: click a button on a card, or type /hitl help below");
  draw();
}

function choosePlace() {
  const channels = ui.snap.channels;
  if (ui.place && (ui.place.kind === "home" || channels.some((c) => c.id === ui.place.id))) return;
  const preferred = channels.find((c) => c.name === "approvals") || channels[0];
  ui.place = preferred ? { kind: "channel", id: preferred.id } : { kind: "home" };
}

function itemsIn(channel) {
  const mine = ui.snap.ephemerals.filter((e) => e.channel === channel.id && !ui.dismissed.has(e.ts));
  const parents = new Set(channel.messages.map((m) => m.ts));
  const top = mine.filter((e) => !e.thread_ts || !parents.has(e.thread_ts));
  const inThreads = {};
  for (const e of mine) {
    if (e.thread_ts && parents.has(e.thread_ts)) (inThreads[e.thread_ts] ||= []).push(e);
  }
  const items = [...channel.messages, ...top].sort((a, b) => parseFloat(a.ts) - parseFloat(b.ts));
  return { items, inThreads };
}

function draw() {
  choosePlace();
  drawMe();
  drawSidebar();
  drawMain();
  drawModal(ui, post);
}

// -- who am I ------------------------------------------------------------------------------

function avatar(name, app) {
  const letter = (name || "?").trim().charAt(0).toUpperCase();
  let hash = 0;
  for (const ch of name || "") hash = (hash * 31 + ch.charCodeAt(0)) % 360;
  const style = app ? null : `background: hsl(${hash}, 45%, 42%)`;
  return h("div", { class: `avatar${app ? " bot" : ""}`, style, "aria-hidden": "true" }, app ? "h" : letter);
}

function groupChips(user) {
  const chips = user.groups.map((g) => h("span", { class: "chip group", title: g.name }, `@${g.handle}`));
  if (user.is_admin) chips.push(h("span", { class: "chip admin" }, "admin"));
  if (!chips.length) chips.push(h("span", { class: "chip none" }, "no user groups"));
  return chips;
}

function drawMe() {
  const { me } = ui.snap;
  const key = JSON.stringify([me, ui.snap.users]);
  if (key === ui.drawn.me) return;
  ui.drawn.me = key;
  const select = $("#user-switcher");
  const options = ui.ctx.people.map((u) => {
    const groups = u.groups.map((g) => `@${g.handle}`).join(" ");
    return h("option", { value: u.id }, `${u.real_name} (@${u.name})${groups ? ` · ${groups}` : ""}${u.is_admin ? " · admin" : ""}`);
  });
  select.replaceChildren(...options);
  select.value = me.id;
  $("#me").replaceChildren(
    avatar(me.real_name, false),
    h("div", { class: "me-text" },
      h("div", { class: "me-name" }, me.real_name, h("span", { class: "me-handle" }, ` @${me.name} · ${me.id}`)),
      h("div", { class: "chips" }, groupChips(me))));
}

async function switchUser(userId) {
  const data = await post("user", { user: userId });
  if (data.ok) {
    const me = data.state.me;
    const groups = me.groups.map((g) => `@${g.handle}`).join(", ") || "no user groups";
    setStatus(`Now acting as ${me.real_name} (@${me.name}; ${groups})`);
  }
}

// -- sidebar -------------------------------------------------------------------------------

function unread(channel) {
  const { items } = itemsIn(channel);
  const here = ui.place && ui.place.kind === "channel" && ui.place.id === channel.id;
  if (here) ui.seen[channel.id] = items.length;
  return Math.max(0, items.length - (ui.seen[channel.id] || 0));
}

function navItem(label, icon, active, onclick, badge, data) {
  return h("button", { class: `nav-item${active ? " active" : ""}${badge ? " unread" : ""}`, onclick, ...data },
    h("span", { class: "nav-icon" }, icon), h("span", { class: "nav-label" }, label),
    badge ? h("span", { class: "badge" }, String(badge)) : null);
}

function go(place) {
  ui.place = place;
  draw();
  if (place.kind === "home") post("home", {});
  else $("#composer-input").focus();
}

function drawSidebar() {
  const here = ui.place;
  const channels = ui.snap.channels.filter((c) => !c.is_im);
  const dms = ui.snap.channels.filter((c) => c.is_im);
  const item = (c) => navItem(c.name, c.is_im ? "●" : c.is_private ? "🔒" : "#",
    here.kind === "channel" && here.id === c.id, () => go({ kind: "channel", id: c.id }), unread(c),
    { "data-channel": c.id, "aria-label": `${c.is_im ? "" : "#"}${c.name}` });
  $("#nav").replaceChildren(...[
    h("div", { class: "nav-section" }, "Channels"), ...channels.map(item),
    dms.length ? h("div", { class: "nav-section" }, "Direct messages") : null, ...dms.map(item),
    h("div", { class: "nav-section" }, "Apps"),
    navItem("hitl", "⌂", here.kind === "home", () => go({ kind: "home" }), 0, { "data-home": "1", "aria-label": "hitl Home" }),
  ].filter(Boolean));
}

// -- messages ------------------------------------------------------------------------------

function time(ts) {
  return new Date(parseFloat(ts) * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function messageCtx(channelId, m) {
  const key = (block, el) => `${channelId}|${m.ts}|${block.block_id}|${el.action_id}`;
  return {
    ...ui.ctx, surface: "message",
    chosen: (block, el) => ui.choices.get(key(block, el)),
    act: (block, el, value) => {
      if (value !== undefined) ui.choices.set(key(block, el), value);
      return post("click", {
        channel: channelId, ts: m.ts, action_id: el.action_id, block_id: block.block_id, value,
      });
    },
  };
}

function authorOf(m) {
  if (m.user === "USLACKBOT") return { name: "Slackbot", bot: true };
  if (m.bot || m.user === ui.snap.bot_user) return { name: "hitl", bot: true, app: true };
  const u = ui.ctx.users[m.user];
  return { name: u ? u.real_name : m.user, bot: false };
}

function fileEl(f) {
  const label = `File: ${f.title || f.name}`;
  // Only files the emulator itself serves (same origin) are loaded; nothing from elsewhere.
  if (f.path && f.path.startsWith("/files/") && /^image\//.test(f.mimetype || "")) {
    const img = h("img", { class: "file-image", alt: f.title || f.name, title: f.title || f.name });
    img.addEventListener("load", () => {
      const list = $("#messages");
      if (ui.stuck) list.scrollTop = list.scrollHeight; // keep the newest in view as it grows
    });
    img.src = f.path;
    return h("figure", { class: "file" }, img, h("figcaption", null, label));
  }
  return h("span", { class: "chip" }, label);
}

function messageEl(m, channelId, threadEphemerals) {
  const author = authorOf(m);
  const body = m.blocks && m.blocks.length
    ? renderBlocks(m.blocks, messageCtx(channelId, m))
    : h("div", { class: "mrkdwn" }, mrkdwn(m.text, ui.ctx));
  const replies = [...(m.replies || []), ...(threadEphemerals || [])]
    .sort((a, b) => parseFloat(a.ts) - parseFloat(b.ts));
  let thread = null;
  if (replies.length) {
    const open = ui.expanded.has(m.ts);
    const n = m.reply_count || 0;
    const extra = (threadEphemerals || []).length;
    const label = `${n} ${n === 1 ? "reply" : "replies"}${extra ? ` · ${extra} only visible to you` : ""}`;
    thread = h("div", { class: "thread-wrap" },
      h("button", {
        class: "thread-link", "aria-expanded": String(open),
        onclick: () => { if (open) ui.expanded.delete(m.ts); else ui.expanded.add(m.ts); draw(); },
      }, open ? `▾ Hide ${label}` : `▸ ${label}`),
      open ? h("div", { class: "thread" }, replies.map((r) => messageEl(r, channelId, null))) : null);
  }
  return h("div", { class: `message${m.ephemeral ? " ephemeral" : ""}`, "data-ts": m.ts },
    avatar(author.name, Boolean(author.app)),
    h("div", { class: "message-main" },
      h("div", { class: "message-meta" },
        h("span", { class: "author" }, author.name),
        author.app ? h("span", { class: "app-badge" }, "APP") : null,
        h("span", { class: "time", title: m.ts }, time(m.ts)),
        m.edited ? h("span", { class: "edited" }, "(edited)") : null),
      m.ephemeral
        ? h("div", { class: "only-you" }, h("span", { class: "eye", "aria-hidden": "true" }), "Only visible to you",
          h("button", { class: "link", onclick: () => { ui.dismissed.add(m.ts); draw(); } }, "Dismiss"))
        : null,
      body,
      (m.files || []).length ? h("div", { class: "files" }, m.files.map(fileEl)) : null,
      (m.reactions || []).length ? h("div", { class: "reactions" }, m.reactions.map((r) => h("span", { class: "chip reaction" }, mrkdwn(`:${r.name}: ${r.count}`, ui.ctx)))) : null,
      thread));
}

// Put `nodes` in `parent` in order, moving only what changed: a message that did not change
// keeps its element, so a click aimed at it (or an open menu, a chosen option) survives.
function reconcile(parent, nodes) {
  nodes.forEach((node, i) => {
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  });
  while (parent.children.length > nodes.length) parent.lastElementChild.remove();
}

function drawChannel(list, channel) {
  const { items, inThreads } = itemsIn(channel);
  $("#channel-title").replaceChildren(channel.is_im ? "hitl" : `${channel.is_private ? "🔒" : "#"} ${channel.name}`);
  $("#channel-info").textContent = channel.is_im
    ? "Your direct messages with the app"
    : `${channel.messages.length} message${channel.messages.length === 1 ? "" : "s"} · you are ${ui.snap.me.real_name}`;
  if (!items.length) {
    list.replaceChildren(h("div", { class: "empty" }, `Nothing in #${channel.name} yet.`));
    return;
  }
  const keep = new Map();
  const nodes = items.map((m) => {
    const id = `${channel.id}|${m.ts}`;
    const key = JSON.stringify([m, inThreads[m.ts] || [], ui.expanded.has(m.ts), ui.snap.me.id, ui.snap.users]);
    const hit = ui.rendered.get(id);
    const entry = hit && hit.key === key ? hit : { key, el: messageEl(m, channel.id, inThreads[m.ts]) };
    keep.set(id, entry);
    return entry.el;
  });
  ui.rendered = keep;
  reconcile(list, nodes);
  $("#composer-input").placeholder = `Message ${channel.is_im ? "hitl" : `#${channel.name}`}: slash commands such as /hitl help`;
}

function drawHome(list) {
  const v = ui.snap.home;
  $("#channel-title").replaceChildren("hitl · Home");
  $("#channel-info").textContent = "The app's Home tab, as published for you (views.publish)";
  if (!v) {
    list.replaceChildren(h("div", { class: "empty" }, "hitl has not published a Home tab for you yet. Opening this tab sent it app_home_opened."));
    return;
  }
  const ctx = {
    ...ui.ctx, surface: "home", values: v.values,
    act: (block, el, value) => post("click_view", { view_id: v.id, action_id: el.action_id, block_id: block.block_id, value }),
  };
  list.replaceChildren(h("div", { class: "home" }, renderBlocks(v.blocks, ctx)));
}

function drawMain() {
  const list = $("#messages");
  const key = ui.place.kind === "home" ? "home" : ui.place.id;
  // Redraw only when what this place shows changed: a click stays on the element it aimed at.
  const shown = ui.place.kind === "home" ? ui.snap.home : ui.snap.channels.find((c) => c.id === ui.place.id);
  const content = JSON.stringify([key, shown, ui.snap.ephemerals, ui.snap.users, ui.snap.me.id,
    [...ui.expanded], [...ui.dismissed]]);
  if (content === ui.drawn.main) return;
  ui.drawn.main = content;
  const samePlace = key === ui.drawnPlace;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  const top = list.scrollTop;
  $("#composer").hidden = ui.place.kind === "home";
  if (ui.place.kind === "home") drawHome(list);
  else drawChannel(list, ui.snap.channels.find((c) => c.id === ui.place.id));
  // A channel opens at its newest message and follows new ones; Home, like Slack's, opens at
  // its top and stays where it was scrolled as the app republishes it.
  const home = ui.place.kind === "home";
  ui.stuck = !home && (!samePlace || atBottom);
  if (ui.stuck) list.scrollTop = list.scrollHeight;
  else list.scrollTop = home && !samePlace ? 0 : top;
  ui.drawnPlace = key;
}

// -- wiring --------------------------------------------------------------------------------

function wire() {
  $("#user-switcher").addEventListener("change", (e) => switchUser(e.target.value));
  $("#composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("#composer-input");
    const text = input.value.trim();
    if (!text) return;
    if (!text.startsWith("/")) {
      setStatus("Only slash commands reach the app here: try /hitl help", true);
      return;
    }
    input.value = "";
    post("command", { channel: ui.place.id, text });
  });
  document.addEventListener("click", (e) => {
    for (const menu of document.querySelectorAll(".overflow-menu")) {
      if (!menu.parentElement.contains(e.target)) menu.hidden = true;
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && ui.snap && ui.snap.modal && !document.querySelector(".confirm-overlay")) closeModal(post, ui.snap.modal);
  });
}

wire();
refresh();
connect();
