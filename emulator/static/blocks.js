// Block Kit to DOM: messages, modals and the Home tab. Interactive elements call ctx.act.
//
// ctx: { users, channels, groups  (id -> object, for mentions)
//        act(block, element, value)  (a button press or a choice)
//        surface: "message" | "modal" | "home"
//        chosen(block, element)  (a message select's last choice, kept across redraws)
//        values, errors  (modal state: what was sent last, inline errors by block id)
//        collectors: Map block_id -> () => ({action_id: raw})  (filled for input blocks) }

import { mrkdwn, plainText } from "./mrkdwn.js";

let uid = 0;

export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

export function textObject(obj, ctx) {
  if (!obj) return document.createTextNode("");
  return obj.type === "mrkdwn" ? mrkdwn(obj.text, ctx) : plainText(obj);
}

function optionLabel(opt) {
  return String((opt.text && opt.text.text) || opt.value || "");
}

function allOptions(el) {
  const out = [...(el.options || [])];
  for (const group of el.option_groups || []) out.push(...(group.options || []));
  return out;
}

// -- a confirmation dialog (an element's `confirm` object) ---------------------------------

export function confirmDialog(confirm, ctx) {
  return new Promise((resolve) => {
    const done = (ok) => { overlay.remove(); resolve(ok); };
    const overlay = h("div", { class: "overlay confirm-overlay" },
      h("div", { class: "modal confirm", role: "alertdialog" },
        h("div", { class: "modal-header" }, h("h2", { class: "modal-title" }, textObject(confirm.title, ctx))),
        // laid out as message text: its line breaks kept (a batch's list, one request a line)
        h("div", { class: "modal-body mrkdwn" }, textObject(confirm.text, ctx)),
        h("div", { class: "modal-footer" },
          h("button", { class: "sk-button", onclick: () => done(false) }, textObject(confirm.deny || { type: "plain_text", text: "Cancel" }, ctx)),
          h("button", { class: `sk-button ${confirm.style === "danger" ? "danger" : "primary"}`, onclick: () => done(true) },
            textObject(confirm.confirm || { type: "plain_text", text: "Yes" }, ctx)))));
    document.body.append(overlay);
  });
}

async function act(block, el, value, ctx) {
  if (el.confirm && !(await confirmDialog(el.confirm, ctx))) return;
  ctx.act(block, el, value);
}

// -- interactive elements in actions blocks and accessories ------------------------------

function overflowMenu(block, el, ctx) {
  const wrap = h("span", { class: "overflow" });
  const menu = h("div", { class: "overflow-menu", hidden: true },
    allOptions(el).map((opt) => h("button", {
      class: "overflow-item",
      onclick: () => { menu.hidden = true; act(block, el, opt.value, ctx); },
    }, optionLabel(opt))));
  const toggle = h("button", {
    class: "sk-button overflow-toggle", "aria-label": "More actions", title: "More actions",
    onclick: (e) => { e.stopPropagation(); menu.hidden = !menu.hidden; },
  }, "⋯");
  wrap.append(toggle, menu);
  return wrap;
}

function selectElement(block, el, ctx, options, placeholder) {
  const select = h("select", { class: "sk-select", "aria-label": placeholder || "Choose" },
    h("option", { value: "", disabled: true, selected: true }, placeholder || "Select an option"),
    options.map(([value, label]) => h("option", { value }, label)));
  const chosen = ctx.chosen ? ctx.chosen(block, el) : undefined;
  const initial = chosen || (el.initial_option ? el.initial_option.value : el.initial_user || el.initial_channel || el.initial_conversation);
  if (initial) select.value = initial;
  select.addEventListener("change", () => act(block, el, select.value, ctx));
  return select;
}

export function element(block, el, ctx) {
  const kind = el.type;
  if (kind === "button") {
    const style = el.style === "primary" || el.style === "danger" ? el.style : "";
    return h("button", {
      class: `sk-button ${style}`.trim(), "data-action-id": el.action_id,
      onclick: () => {
        if (el.url && /^https?:/i.test(el.url)) window.open(el.url, "_blank", "noopener");
        act(block, el, undefined, ctx);
      },
    }, plainText(el.text));
  }
  if (kind === "overflow") return overflowMenu(block, el, ctx);
  if (kind === "static_select" || kind === "external_select") {
    return selectElement(block, el, ctx, allOptions(el).map((o) => [o.value, optionLabel(o)]), el.placeholder && el.placeholder.text);
  }
  if (kind === "users_select") {
    return selectElement(block, el, ctx, ctx.people.map((u) => [u.id, u.real_name]), el.placeholder && el.placeholder.text);
  }
  if (kind === "channels_select" || kind === "conversations_select") {
    return selectElement(block, el, ctx, Object.values(ctx.channels).map((c) => [c.id, `#${c.name}`]), el.placeholder && el.placeholder.text);
  }
  if (kind === "datepicker" || kind === "timepicker") {
    const input = h("input", { class: "sk-select", type: kind === "datepicker" ? "date" : "time", value: el.initial_date || el.initial_time || "" });
    input.addEventListener("change", () => act(block, el, input.value, ctx));
    return input;
  }
  if (kind === "image") return imageAlt(el);
  return h("span", { class: "sk-unsupported" }, `[${kind}]`);
}

function imageAlt(el) {
  return h("span", { class: "img-alt", title: el.image_url || "" }, `Image: ${el.alt_text || "no description"}`);
}

// -- input blocks (modals, and rarely messages) --------------------------------------------

function stateOf(ctx, block, el) {
  const entry = ((ctx.values || {})[block.block_id] || {})[el.action_id];
  return entry || null;
}

function inputControl(block, el, ctx, id) {
  const kind = el.type;
  const state = stateOf(ctx, block, el);
  const placeholder = el.placeholder ? el.placeholder.text : "";
  const action = el.action_id;
  if (["plain_text_input", "number_input", "email_text_input", "url_text_input"].includes(kind)) {
    const initial = state ? state.value : el.initial_value;
    const multiline = kind === "plain_text_input" && el.multiline;
    const control = multiline
      ? h("textarea", { id, class: "sk-text", rows: 5, placeholder })
      : h("input", { id, class: "sk-text", type: "text", placeholder, inputmode: kind === "number_input" ? "decimal" : null });
    control.value = initial === null || initial === undefined ? "" : String(initial);
    return [control, () => ({ [action]: control.value })];
  }
  if (kind === "static_select" || kind === "users_select" || kind === "channels_select" || kind === "conversations_select") {
    const options = kind === "static_select"
      ? allOptions(el).map((o) => [o.value, optionLabel(o)])
      : kind === "users_select" ? ctx.people.map((u) => [u.id, u.real_name])
        : Object.values(ctx.channels).map((c) => [c.id, `#${c.name}`]);
    const select = h("select", { id, class: "sk-select" },
      h("option", { value: "" }, placeholder || "Select an option"),
      options.map(([value, label]) => h("option", { value }, label)));
    let initial = el.initial_option ? el.initial_option.value : el.initial_user || el.initial_channel || el.initial_conversation;
    if (state) initial = state.selected_option ? state.selected_option.value : state.selected_user || state.selected_channel || state.selected_conversation || "";
    select.value = initial || "";
    return [select, () => ({ [action]: select.value || null })];
  }
  if (kind === "radio_buttons" || kind === "checkboxes" || kind === "multi_static_select") {
    const many = kind !== "radio_buttons";
    let chosen = new Set((el.initial_options || []).map((o) => o.value));
    if (el.initial_option) chosen = new Set([el.initial_option.value]);
    if (state) {
      chosen = new Set(many ? (state.selected_options || []).map((o) => o.value)
        : state.selected_option ? [state.selected_option.value] : []);
    }
    if (kind === "multi_static_select") {
      const select = h("select", { id, class: "sk-select", multiple: true },
        allOptions(el).map((o) => h("option", { value: o.value, selected: chosen.has(o.value) }, optionLabel(o))));
      return [select, () => ({ [action]: [...select.selectedOptions].map((o) => o.value) })];
    }
    const name = `${id}-group`;
    const inputs = [];
    const group = h("div", { id, class: "sk-choices", role: many ? "group" : "radiogroup" },
      allOptions(el).map((o, n) => {
        const input = h("input", { type: many ? "checkbox" : "radio", name, value: o.value, id: `${id}-${n}`, checked: chosen.has(o.value) });
        inputs.push(input);
        return h("label", { class: "sk-choice", for: `${id}-${n}` }, input,
          h("span", null, textObject(o.text, ctx),
            o.description ? h("span", { class: "sk-choice-description" }, textObject(o.description, ctx)) : null));
      }));
    const collect = () => {
      const picked = inputs.filter((i) => i.checked).map((i) => i.value);
      return { [action]: many ? picked : (picked[0] || null) };
    };
    return [group, collect];
  }
  if (kind === "datepicker" || kind === "timepicker") {
    const input = h("input", { id, class: "sk-text", type: kind === "datepicker" ? "date" : "time" });
    input.value = (state && (state.selected_date || state.selected_time)) || el.initial_date || el.initial_time || "";
    return [input, () => ({ [action]: input.value || null })];
  }
  return [h("span", { class: "sk-unsupported" }, `[${kind} input]`), () => ({})];
}

function inputBlock(block, ctx) {
  const el = block.element || {};
  const id = `in-${++uid}`;
  const [control, collect] = inputControl(block, el, ctx, id);
  if (ctx.collectors) ctx.collectors.set(block.block_id, collect);
  const error = (ctx.errors || {})[block.block_id];
  return h("div", { class: `sk-input${error ? " has-error" : ""}`, "data-block-id": block.block_id },
    h("label", { class: "sk-label", for: id }, plainText(block.label),
      block.optional ? h("span", { class: "sk-optional" }, " (optional)") : null),
    control,
    block.hint ? h("div", { class: "sk-hint" }, plainText(block.hint)) : null,
    error ? h("div", { class: "input-error", role: "alert" }, error) : null);
}

// -- rich_text (what people type in Slack), drawn simply -------------------------------------

function richInline(node, ctx) {
  const style = node.style || {};
  let out;
  if (node.type === "text") out = document.createTextNode(node.text || "");
  else if (node.type === "link") {
    out = h("a", { target: "_blank", rel: "noopener noreferrer" }, node.text || node.url);
    if (/^(https?:|mailto:)/i.test(node.url || "")) out.href = node.url;
  } else if (node.type === "user") out = h("span", { class: "mention" }, `@${(ctx.users[node.user_id] || { name: node.user_id }).name}`);
  else if (node.type === "channel") out = h("span", { class: "mention" }, `#${(ctx.channels[node.channel_id] || { name: node.channel_id }).name}`);
  else if (node.type === "usergroup") out = h("span", { class: "mention" }, `@${(ctx.groups[node.usergroup_id] || { handle: node.usergroup_id }).handle}`);
  else if (node.type === "broadcast") out = h("span", { class: "mention broadcast" }, `@${node.range}`);
  else if (node.type === "emoji") out = mrkdwn(`:${node.name}:`, ctx);
  else out = document.createTextNode("");
  if (style.code) out = h("code", null, out);
  if (style.strike) out = h("del", null, out);
  if (style.italic) out = h("em", null, out);
  if (style.bold) out = h("strong", null, out);
  return out;
}

function richText(block, ctx) {
  const part = (el) => {
    const inner = (el.elements || []).map((x) => (x.type && x.type.startsWith("rich_text_") ? part(x) : richInline(x, ctx)));
    if (el.type === "rich_text_list") return h(el.style === "ordered" ? "ol" : "ul", null, inner.map((x) => h("li", null, x)));
    if (el.type === "rich_text_preformatted") return h("pre", null, inner);
    if (el.type === "rich_text_quote") return h("blockquote", null, inner);
    return h("div", null, inner);
  };
  return h("div", { class: "sk-rich mrkdwn" }, part(block));
}

// -- blocks -------------------------------------------------------------------------------

function block(b, ctx) {
  switch (b.type) {
    case "header":
      return h("div", { class: "sk-header" }, plainText(b.text));
    case "section": {
      const body = h("div", { class: "sk-section-body" },
        b.text ? h("div", { class: "mrkdwn" }, textObject(b.text, ctx)) : null,
        b.fields ? h("div", { class: "sk-fields" }, b.fields.map((f) => h("div", { class: "sk-field mrkdwn" }, textObject(f, ctx)))) : null);
      const accessory = b.accessory
        ? h("div", { class: "sk-accessory" }, b.accessory.type === "image" ? imageAlt(b.accessory) : element(b, b.accessory, ctx))
        : null;
      return h("div", { class: "sk-section" }, body, accessory);
    }
    case "context":
      return h("div", { class: "sk-context" },
        (b.elements || []).map((e) => (e.type === "image" ? imageAlt(e) : h("span", { class: "mrkdwn" }, textObject(e, ctx)))));
    case "divider":
      return h("hr", { class: "sk-divider" });
    case "actions":
      return h("div", { class: "sk-actions" }, (b.elements || []).map((e) => element(b, e, ctx)));
    case "input":
      return inputBlock(b, ctx);
    case "image":
      return h("div", { class: "sk-image" }, b.title ? h("div", { class: "sk-image-title" }, plainText(b.title)) : null, imageAlt(b));
    case "rich_text":
      return richText(b, ctx);
    default:
      return h("div", { class: "sk-unsupported" }, `[unsupported block: ${b.type}]`);
  }
}

export function renderBlocks(blocks, ctx) {
  return h("div", { class: "blocks" }, (blocks || []).map((b) => h("div", { class: `block block-${b.type}`, "data-block-id": b.block_id || null }, block(b, ctx))));
}
