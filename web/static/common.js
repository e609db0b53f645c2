// What both pages share: element building (text only ever as textContent) and JSON
// requests whose errors carry the server's one-line detail and the HTTP status.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(url, options = {}) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return body;
}

// A path that wraps only after a "/" where it can (a name is cut only when it alone is wider
// than the line): text nodes with a <wbr> after each slash.
function pathText(path) {
  const parts = path.split("/");
  const nodes = [];
  parts.forEach((part, i) => {
    nodes.push(document.createTextNode(i < parts.length - 1 ? part + "/" : part));
    if (i < parts.length - 1) nodes.push(document.createElement("wbr"));
  });
  return nodes;
}

// ---------------------------------------------------------------- the full-size viewer
// Images at full size in a modal dialog (made on first use): Left/Right (or the buttons) step
// through them, Esc closes it and focus goes back to where it came from.
// items: [{src, alt, caption}]
let viewing = null;

function viewerDialog() {
  let dialog = $("viewer");
  if (dialog) return dialog;
  dialog = el(
    "dialog",
    { id: "viewer", class: "viewer", "aria-labelledby": "viewer-caption" },
    el("img", { id: "viewer-image", alt: "", onclick: () => zoomViewer() }),
    el("p", { id: "viewer-caption" }),
    el(
      "div",
      { class: "decide" },
      el("button", { id: "viewer-previous", type: "button", text: "← Previous", onclick: () => stepViewer(-1) }),
      el("button", { id: "viewer-next", type: "button", text: "Next →", onclick: () => stepViewer(1) }),
      el("button", { id: "viewer-zoom", type: "button", text: "Actual size", "aria-pressed": "false", onclick: () => zoomViewer() }),
      el("button", { id: "viewer-close", type: "button", text: "Close (Esc)", onclick: () => dialog.close() }),
    ),
  );
  dialog.addEventListener("keydown", (event) => {
    if (event.key === "ArrowRight") stepViewer(1);
    else if (event.key === "ArrowLeft") stepViewer(-1);
  });
  dialog.addEventListener("close", () => {
    zoomViewer(false);
    if (viewing && viewing.from) viewing.from.focus();
    viewing = null;
  });
  document.body.append(dialog);
  return dialog;
}

function openViewer(items, index) {
  const dialog = viewerDialog();
  viewing = { items, index, from: document.activeElement };
  const several = items.length > 1;
  $("viewer-previous").hidden = !several;
  $("viewer-next").hidden = !several;
  showInViewer();
  dialog.showModal();
  (several ? $("viewer-next") : $("viewer-close")).focus();
}

function showInViewer() {
  const item = viewing.items[viewing.index];
  $("viewer-image").src = item.src;
  $("viewer-image").alt = item.alt;
  const where = viewing.items.length > 1 ? `${viewing.index + 1} of ${viewing.items.length}: ` : "";
  $("viewer-caption").replaceChildren(...pathText(where + item.caption));
}

// fit to the window, or every pixel (the dialog scrolls): the button, or a click on the image
function zoomViewer(on = !$("viewer").classList.contains("zoomed")) {
  $("viewer").classList.toggle("zoomed", on);
  $("viewer-zoom").setAttribute("aria-pressed", String(on));
  $("viewer-zoom").textContent = on ? "Fit to the window" : "Actual size";
}

function stepViewer(delta) {
  if (!viewing) return;
  viewing.index = (viewing.index + delta + viewing.items.length) % viewing.items.length;
  showInViewer();
}
