// The review page: the groups of copies `semhash duplicates` finds, a page at a time, side
// by side, largest reclaimable first. With `semhash serve --review` each group can be
// decided (keep the suggestion, not duplicates, skip); the decisions are stored in the
// index and `semhash duplicates` honours them. The page never moves or deletes a file.
// Plain DOM, no build step; text from the index is only ever set as textContent.
"use strict";

const PAGE = 20;
let review = false;
let shown = []; // the groups on this page

function size(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let n = bytes;
  let unit = 0;
  while (n >= 1000 && unit < units.length - 1) {
    n /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${n.toFixed(1)} ${units[unit]}`;
}

function name(path) {
  return path.split("/").pop();
}

function folder(path) {
  return path.slice(0, Math.max(0, path.lastIndexOf("/"))) || "/";
}

// ---------------------------------------------------------------- the URL holds the view
function view() {
  const params = new URLSearchParams(window.location.search);
  const offset = Number(params.get("offset"));
  return {
    tier: params.get("tier") === "exact" ? "exact" : "near",
    keep: ["largest", "oldest", "newest", "shortest-path", "original-format", "oldest-capture"].includes(params.get("keep")) ? params.get("keep") : "largest",
    offset: Number.isInteger(offset) && offset >= 0 ? offset : 0,
    folder: params.get("folder") || "",
    label: params.get("label") || "",
  };
}

// the listing's parameters (the groups, whatever the page): for /api/duplicates, accept, plan
function listing(v, withFilters = true) {
  const params = new URLSearchParams({ tier: v.tier, keep: v.keep });
  if (withFilters && v.folder) params.set("folder", v.folder);
  if (withFilters && v.label) params.set("label", v.label);
  return params;
}

function go(changes) {
  const next = { ...view(), ...changes };
  const params = listing(next);
  params.set("offset", String(next.offset));
  history.pushState({}, "", `?${params}`);
  load();
}

// ---------------------------------------------------------------- showing the groups
function memberCard(member, role, group) {
  const pixels = member.width ? `${member.width}×${member.height}` : "size unknown";
  // the capture time the photo's EXIF gives, else the file's modification time
  const when = member.taken_at != null
    ? `taken ${new Date(member.taken_at * 1000).toISOString().slice(0, 16).replace("T", " ")}`
    : member.mtime ? `modified ${new Date(member.mtime * 1000).toISOString().slice(0, 10)}` : "";
  const kind = [member.format, member.camera].filter(Boolean).join(" · ");
  const badge = role === "keeper" ? "keep" : member.tier;
  const chosen = group.decision === "keep" && group.decided_keeper === member.path;
  return el(
    "li",
    { class: `member ${role}${chosen ? " chosen" : ""}` },
    el(
      "a",
      {
        href: `/api/images/${member.id}/file`, target: "_blank", rel: "noopener", "aria-label": `Open ${member.path} full size`,
        onclick: (event) => {
          event.preventDefault();
          viewGroup(group, member);
        },
      },
      el("img", { src: `/api/images/${member.id}/thumbnail?size=192`, alt: "", loading: "lazy" }),
    ),
    el(
      "span",
      { class: "facts" },
      el("span", { class: `tier tier-${badge}`, text: role === "keeper" ? "suggested keeper" : member.tier }),
      el("span", { text: role === "keeper" ? "" : `distance ${member.distance}` }),
    ),
    el("span", { class: "file-name", title: member.path }, ...pathText(name(member.path))),
    el("span", { class: "fact", text: `${size(member.size)} · ${pixels}${kind ? " · " + kind : ""}${when ? " · " + when : ""}${member.label ? " · label " + member.label : ""}` }),
    el("span", { class: "fact folder" }, ...pathText(folder(member.path))),
  );
}

function groupSection(group, number) {
  const heading = el("h3", {
    text: `Group ${number} · ${1 + group.duplicates.length} images · ${size(group.reclaimable_bytes)} reclaimable`,
  });
  const state = el("p", { class: "decision", text: decisionText(group) });
  const list = el(
    "ul",
    { class: "members" },
    memberCard(group.keeper, "keeper", group),
    ...group.duplicates.map((m) => memberCard(m, "duplicate", group)),
  );
  const section = el("section", { class: "group-review", "data-key": group.key, "aria-label": `Group ${number}` }, heading, state, list);
  if (review) {
    const buttons = el(
      "div",
      { class: "decide" },
      el("button", { type: "button", text: "Keep the suggested one", onclick: () => decide(group, "keep", group.keeper.path) }),
      el("button", { type: "button", text: "Not duplicates", onclick: () => decide(group, "not_duplicates") }),
      el("button", { type: "button", text: "Skip", onclick: () => decide(group, "skip") }),
    );
    section.append(buttons);
  }
  return section;
}

function decisionText(group) {
  if (group.decision === "keep") return `Decided: keep ${name(group.decided_keeper || "")}`;
  if (group.decision === "skip") return "Decided: skipped for now";
  return "Not decided yet";
}

async function decide(group, decision, keeper = null) {
  try {
    await api("/api/duplicates/decisions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key: group.key, decision, keeper }),
    });
    await load();
  } catch (e) {
    $("totals").textContent = e.message;
    $("totals").classList.add("error");
  }
}

async function acceptPage() {
  for (const group of shown.filter((g) => !g.decision)) {
    await api("/api/duplicates/decisions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key: group.key, decision: "keep", keeper: group.keeper.path }),
    });
  }
  await load();
}

// every undecided group of the folder (and label) chosen, in one request and one transaction
async function acceptFiltered() {
  try {
    const done = await api(`/api/duplicates/accept?${listing(view())}`, { method: "POST" });
    await load();
    $("totals").textContent += ` Kept the suggestion for ${done.decided.toLocaleString()} more groups.`;
  } catch (e) {
    $("totals").textContent = e.message;
    $("totals").classList.add("error");
  }
}

function fillChoices(select, all, entries, chosen) {
  const options = [el("option", { value: "", text: all })];
  for (const [value, count] of entries) options.push(el("option", { value, text: `${value} (${count.toLocaleString()})` }));
  if (chosen && !entries.some(([value]) => value === chosen)) options.push(el("option", { value: chosen, text: chosen }));
  select.replaceChildren(...options);
  select.value = chosen;
}

async function load() {
  const v = view();
  $("tier").value = v.tier;
  $("keep").value = v.keep;
  $("totals").classList.remove("error");
  try {
    const params = listing(v);
    params.set("offset", String(v.offset));
    params.set("limit", String(PAGE));
    const data = await api(`/api/duplicates?${params}`);
    shown = data.groups;
    fillChoices($("folder"), "all folders", data.folders.map((f) => [f.folder, f.groups]), v.folder);
    fillChoices($("label"), "all labels", data.labels.map((l) => [l.label, l.groups]), v.label);
    $("label-choice").hidden = data.labels.length === 0 && !v.label;
    const t = data.totals;
    const where = [v.folder ? `in ${v.folder}` : "", v.label ? `labelled ${v.label}` : ""].filter(Boolean).join(", ");
    $("totals").textContent =
      `${t.groups.toLocaleString()} groups${where ? " " + where : ""} among ${t.images.toLocaleString()} images: ` +
      `${t.redundant_files.toLocaleString()} redundant files, ${size(t.reclaimable_bytes)} reclaimable` +
      (t.hidden_by_decisions ? `; ${t.hidden_by_decisions.toLocaleString()} marked not duplicates` : "") + ".";
    $("groups").replaceChildren(...shown.map((g, i) => groupSection(g, v.offset + i + 1)));
    $("accept-page").hidden = !review || !shown.some((g) => !g.decision);
    $("accept-filtered").hidden = !review || !(v.folder || v.label) || t.groups === 0;
    $("accept-filtered").textContent = `Keep the suggestion for every undecided group of the ${t.groups.toLocaleString()} ${where}`;
    $("bulk").hidden = $("accept-page").hidden && $("accept-filtered").hidden;
    $("plan").href = `/api/duplicates/plan?${listing(v, false)}`;
    const pages = Math.max(1, Math.ceil(t.groups / PAGE));
    $("page-of").textContent = `page ${Math.floor(v.offset / PAGE) + 1} of ${pages}`;
    $("previous").disabled = v.offset === 0;
    $("next").disabled = v.offset + PAGE >= t.groups;
  } catch (e) {
    $("groups").replaceChildren();
    $("totals").textContent = e.message;
    $("totals").classList.add("error");
  }
}

// the full-size viewer (common.js) over one group's images
function viewGroup(group, member) {
  const members = [group.keeper, ...group.duplicates];
  const items = members.map((m) => ({
    src: `/api/images/${m.id}/file`,
    alt: m.path,
    caption:
      `${m.path} · ${size(m.size)} · ${m.width ? `${m.width}×${m.height}` : "size unknown"}` +
      (m.tier === "keeper" ? " · suggested keeper" : ` · ${m.tier}, distance ${m.distance}`),
  }));
  openViewer(items, members.findIndex((m) => m.id === member.id));
}

async function start() {
  try {
    const s = await api("/api/status");
    review = s.review;
    $("summary").textContent = `${s.count.toLocaleString()} images · model ${s.model || "none"}`;
    $("mode").textContent = review
      ? "Review mode: your decisions are stored in the index; `semhash duplicates` honours them. Nothing here moves or deletes a file: `semhash duplicates --decided --move-to DIR` (or `--plan` with the plan downloaded below) moves the duplicates of the groups decided here, keeping the image chosen, and can be undone."
      : "Read-only: start the server with `semhash serve --review` to record decisions.";
  } catch (e) {
    $("summary").textContent = "The index cannot be read.";
  }
  $("tier").addEventListener("change", () => go({ tier: $("tier").value, offset: 0 }));
  $("keep").addEventListener("change", () => go({ keep: $("keep").value, offset: 0 }));
  $("folder").addEventListener("change", () => go({ folder: $("folder").value, offset: 0 }));
  $("label").addEventListener("change", () => go({ label: $("label").value, offset: 0 }));
  $("accept-filtered").addEventListener("click", acceptFiltered);
  $("previous").addEventListener("click", () => go({ offset: Math.max(0, view().offset - PAGE) }));
  $("next").addEventListener("click", () => go({ offset: view().offset + PAGE }));
  $("accept-page").addEventListener("click", acceptPage);
  window.addEventListener("popstate", load);
  await load();
}

start();
