// Modals opened by views.open / views.push for the current person: inputs, Submit with the
// errors cycle, Close. Input values are read from the DOM at submit by the collectors that
// blocks.js registers for each input block.

import { h, renderBlocks, textObject } from "./blocks.js";
import { plainText } from "./mrkdwn.js";

function collect(ui) {
  const values = {};
  for (const [blockId, read] of ui.collectors) values[blockId] = read();
  return values;
}

/** Press the modal's Close (X, Cancel or Esc). */
export async function closeModal(post, v) {
  await post("close", { view_id: v.id });
}

/** Draw the person's top modal; redrawn only when the view, its values or its errors change,
 *  so what is being typed is never overwritten by a live update. */
export function drawModal(ui, post) {
  const v = ui.snap.modal;
  const root = document.querySelector("#modal-root");
  if (!v) {
    ui.modalKey = "";
    root.hidden = true;
    root.replaceChildren();
    return;
  }
  const key = JSON.stringify([v.id, v.hash, v.errors, v.values]);
  if (key === ui.modalKey) return;
  ui.modalKey = key;
  ui.collectors = new Map();
  const ctx = {
    ...ui.ctx, surface: "modal", values: v.values, errors: v.errors, collectors: ui.collectors,
    act: (block, el, value) => post("click_view", {
      view_id: v.id, action_id: el.action_id, block_id: block.block_id, value, values: collect(ui),
    }),
  };
  const submit = async (e) => {
    const button = e.currentTarget;
    button.disabled = true;
    button.classList.add("busy");
    await post("submit", { view_id: v.id, values: collect(ui) });
    button.disabled = false;
    button.classList.remove("busy");
  };
  const body = renderBlocks(v.blocks, ctx);
  const errors = Object.keys(v.errors || {}).length;
  root.replaceChildren(h("div", { class: "modal", role: "dialog", "aria-modal": "true", "aria-labelledby": "modal-title", "data-view-id": v.id },
    h("div", { class: "modal-header" },
      h("span", { class: "avatar bot small", "aria-hidden": "true" }, "h"),
      h("h2", { class: "modal-title", id: "modal-title" }, plainText(v.title)),
      v.depth > 1 ? h("span", { class: "chip" }, `${v.depth} deep`) : null,
      h("button", { class: "modal-x", "aria-label": "Close", title: "Close", onclick: () => closeModal(post, v) }, "×")),
    h("div", { class: "modal-body" },
      errors ? h("div", { class: "modal-errors", role: "alert" }, `Please fix ${errors === 1 ? "the field" : `${errors} fields`} marked below.`) : null,
      body),
    h("div", { class: "modal-footer" },
      h("button", { class: "sk-button modal-cancel", onclick: () => closeModal(post, v) }, textObject(v.close || { type: "plain_text", text: "Cancel" }, ui.ctx)),
      v.submit ? h("button", { class: "sk-button primary modal-submit", onclick: submit }, plainText(v.submit)) : null)));
  root.hidden = false;
  const first = root.querySelector(".has-error input, .has-error textarea, .has-error select") || root.querySelector(".modal-body input, .modal-body textarea");
  if (first) first.focus();
}
