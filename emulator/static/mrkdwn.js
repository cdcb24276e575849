// Slack mrkdwn to DOM nodes. Text only ever reaches the page through text nodes
// (createTextNode/textContent): agent text can never become markup, whatever it contains.

const EMOJI = {
  white_check_mark: "✅", heavy_check_mark: "✔️", x: "❌", warning: "⚠️", no_entry: "⛔",
  no_entry_sign: "🚫", hourglass: "⌛", hourglass_flowing_sand: "⏳", robot_face: "🤖",
  speech_balloon: "💬", handshake: "🤝", lock: "🔒", unlock: "🔓", bell: "🔔", eyes: "👀",
  rotating_light: "🚨", question: "❓", exclamation: "❗", information_source: "ℹ️",
  memo: "📝", email: "📧", envelope: "✉️", moneybag: "💰", money_with_wings: "💸",
  wastebasket: "🗑️", link: "🔗", mag: "🔍", bar_chart: "📊", chart_with_upwards_trend: "📈",
  clock3: "🕒", stopwatch: "⏱️", pause_button: "⏸️", arrow_forward: "▶️", tada: "🎉",
  thumbsup: "👍", "+1": "👍", thumbsdown: "👎", "-1": "👎", fire: "🔥", package: "📦",
  scales: "⚖️", shield: "🛡️", busts_in_silhouette: "👥", bust_in_silhouette: "👤",
  large_green_circle: "🟢", large_yellow_circle: "🟡", red_circle: "🔴", white_circle: "⚪",
  arrow_up: "⬆️", arrow_down: "⬇️", repeat: "🔁", zap: "⚡", gear: "⚙️", pushpin: "📌",
  pencil2: "✏️", raising_hand: "🙋", grey_question: "❔", double_vertical_bar: "⏸️",
  arrow_double_up: "⏫", leftwards_arrow_with_hook: "↩️", alarm_clock: "⏰", bird: "🐦",
};
// Every shortcode the builders in blocks/ write is in this table (tests/test_blocks_wording.py).

const SAFE_SCHEMES = /^(https?:|mailto:)/i;

export function decodeEntities(s) {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

export function emojify(s) {
  return s.replace(/:([a-z0-9_+-]+):/g, (whole, name) => EMOJI[name] || whole);
}

function textNode(s) {
  return document.createTextNode(emojify(decodeEntities(s)));
}

function el(tag, className, children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children || []) node.append(child);
  return node;
}

// -- <...> tokens: mentions, links, dates, special commands --------------------------------

function angle(inner, ctx) {
  const bar = inner.indexOf("|");
  const target = bar >= 0 ? inner.slice(0, bar) : inner;
  const label = bar >= 0 ? inner.slice(bar + 1) : null;
  if (target.startsWith("@")) {
    const user = ctx.users[target.slice(1)];
    const name = user ? user.name : (label || target.slice(1));
    return el("span", "mention", [textNode(`@${name}`)]);
  }
  if (target.startsWith("#")) {
    const channel = ctx.channels[target.slice(1)];
    const name = channel ? channel.name : (label || target.slice(1));
    return el("span", "mention", [textNode(`#${name}`)]);
  }
  if (target.startsWith("!")) {
    const [command, arg] = target.slice(1).split("^");
    if (command === "date") return textNode(label || arg || "");
    if (command === "subteam") {
      const group = ctx.groups[arg];
      return el("span", "mention", [textNode(group ? `@${group.handle}` : (label || "@group"))]);
    }
    if (["here", "channel", "everyone"].includes(command)) {
      return el("span", "mention broadcast", [textNode(`@${command}`)]);
    }
    return textNode(label || "");
  }
  const href = decodeEntities(target);
  if (!SAFE_SCHEMES.test(href)) return textNode(label || target);
  const a = el("a", null, [textNode(label || target)]);
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.title = href;
  return a;
}

// -- inline formatting -------------------------------------------------------------------

const PATTERNS = [
  { kind: "code", re: /`([^`\n]+)`/ },
  { kind: "angle", re: /<([^<>\n]+)>/ },
  { kind: "b", re: /(^|[^\w*])\*(\S(?:[^*\n]*?\S)?)\*(?![\w*])/ },
  { kind: "i", re: /(^|[^\w_])_(\S(?:[^_\n]*?\S)?)_(?![\w_])/ },
  { kind: "s", re: /(^|[^\w~])~(\S(?:[^~\n]*?\S)?)~(?![\w~])/ },
];

function earliest(s) {
  let best = null;
  for (const { kind, re } of PATTERNS) {
    const m = re.exec(s);
    if (!m) continue;
    const lead = kind === "code" || kind === "angle" ? 0 : m[1].length;
    const start = m.index + lead;
    if (!best || start < best.start) {
      best = { kind, start, end: m.index + m[0].length, inner: kind === "code" || kind === "angle" ? m[1] : m[2] };
    }
  }
  return best;
}

function inline(s, ctx, out) {
  while (s) {
    const m = earliest(s);
    if (!m) {
      out.push(textNode(s));
      return;
    }
    if (m.start > 0) out.push(textNode(s.slice(0, m.start)));
    if (m.kind === "code") {
      out.push(el("code", null, [document.createTextNode(decodeEntities(m.inner))]));
    } else if (m.kind === "angle") {
      out.push(angle(m.inner, ctx));
    } else {
      const tag = { b: "strong", i: "em", s: "del" }[m.kind];
      const children = [];
      inline(m.inner, ctx, children);
      out.push(el(tag, null, children));
    }
    s = s.slice(m.end);
  }
}

// -- blocks of lines: code blocks and quotes ---------------------------------------------

function lines(s, ctx, out) {
  const rows = s.split("\n");
  let i = 0;
  while (i < rows.length) {
    if (rows[i].startsWith(">") || rows[i].startsWith("&gt;")) {
      const quoted = [];
      while (i < rows.length && (rows[i].startsWith(">") || rows[i].startsWith("&gt;"))) {
        quoted.push(rows[i].replace(/^(>|&gt;) ?/, ""));
        i += 1;
      }
      const children = [];
      inline(quoted.join("\n"), ctx, children);
      out.push(el("blockquote", null, children));
      continue;
    }
    const plain = [];
    while (i < rows.length && !(rows[i].startsWith(">") || rows[i].startsWith("&gt;"))) {
      plain.push(rows[i]);
      i += 1;
    }
    inline(plain.join("\n"), ctx, out);
  }
}

/** A DocumentFragment for `text` in Slack mrkdwn; ctx maps ids to users, channels, groups. */
export function mrkdwn(text, ctx) {
  const frag = document.createDocumentFragment();
  const parts = String(text || "").split(/```/);
  parts.forEach((part, n) => {
    if (n % 2 === 1 && n < parts.length - 1) {
      const pre = el("pre", null, [document.createTextNode(decodeEntities(part.replace(/^\n/, "")))]);
      frag.append(pre);
    } else {
      const nodes = [];
      lines(n % 2 === 1 ? "```" + part : part, ctx, nodes);
      frag.append(...nodes);
    }
  });
  return frag;
}

/** A plain_text object's text: literal, with emoji shortcodes drawn when emoji is on. */
export function plainText(obj) {
  const s = String((obj && obj.text) || "");
  return document.createTextNode(obj && obj.emoji === false ? s : emojify(s));
}
