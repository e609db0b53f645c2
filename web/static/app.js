// The semhash page: search the index by an image file, browse it by clicking matches,
// look at the largest buckets and the evaluation report. Plain DOM, no build step, no
// network but this server. Text from the index is only ever set as textContent.
"use strict";

let lastSearch = null; // {kind: "upload", file} | {kind: "id", id} | {kind: "code", code} | {kind: "bucket", code}
let codeBits = null; // the index's code length, from /api/status
let queryPreviewUrl = null;
let searchCounter = 0;

function plural(n, one, many) {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

// "Show at most": 1 to 1000; anything else is put back in range, and the page says so
function limitValue() {
  const input = $("limit");
  let limit = Math.round(Number(input.value));
  if (!Number.isFinite(limit) || limit < 1 || limit > 1000) {
    limit = Number.isFinite(limit) && limit > 1000 ? 1000 : 1;
    input.value = String(limit);
    input.dataset.corrected = "1";
  }
  return limit;
}

const MAX_ROWS = 10000; // what the API answers at most: offset + limit

function settings(search) {
  const radius = Number($("radius").value);
  return `radius=${radius}&limit=${limitValue()}` + (search.offset ? `&offset=${search.offset}` : "");
}

// ---------------------------------------------------------------- the address bar
// Every search but an upload (a file cannot go in a URL) is in the URL: links can be shared
// and Back/Forward step through the searches.
function searchToQuery(search) {
  const params = new URLSearchParams();
  if (search.kind === "id") params.set("id", String(search.id));
  else if (search.kind === "code") params.set("code", search.code);
  else if (search.kind === "bucket") params.set("bucket", search.code);
  else return null;
  params.set("radius", $("radius").value);
  params.set("limit", String(limitValue()));
  if (search.offset) params.set("offset", String(search.offset));
  return "?" + params.toString();
}

function searchFromLocation() {
  const params = new URLSearchParams(window.location.search);
  const radius = Number(params.get("radius"));
  if (params.has("radius") && Number.isInteger(radius) && radius >= 0 && radius <= 4) {
    $("radius").value = String(radius);
    $("radius-value").textContent = String(radius);
  }
  if (params.has("limit")) $("limit").value = params.get("limit");
  const offset = /^[0-9]+$/.test(params.get("offset") || "") ? Math.min(Number(params.get("offset")), MAX_ROWS - 1) : 0;
  const id = params.get("id");
  if (id !== null && /^[0-9]+$/.test(id)) return { kind: "id", id: Number(id), offset };
  const code = params.get("code");
  if (code !== null && /^[0-9]+$/.test(code)) return { kind: "code", code, offset };
  const bucket = params.get("bucket");
  if (bucket !== null && /^[0-9]+$/.test(bucket)) return { kind: "bucket", code: bucket };
  return null;
}

// ---------------------------------------------------------------- one box: id, path or code
// "code:…" / "id:…" say which; else bits as long as the index's codes are a code, digits an
// id, anything else a path (as results show it).
async function findText(text) {
  const t = text.trim();
  if (!t) return;
  const prefixed = /^(id|code|path):\s*(.*)$/i.exec(t);
  const kind = prefixed ? prefixed[1].toLowerCase() : null;
  const value = prefixed ? prefixed[2].trim() : t;
  if (kind === "code" || (!kind && codeBits && value.length === codeBits && /^[01]+$/.test(value))) {
    if (!/^[0-9]+$/.test(value)) return say(`A code is ${codeBits} bits (0 and 1) or a decimal number, not "${value}".`, true);
    return runSearch({ kind: "code", code: value });
  }
  if ((kind === "id" || !kind) && /^#?[0-9]+$/.test(value)) return runSearch({ kind: "id", id: Number(value.replace("#", "")) });
  if (kind === "id") return say(`An id is a number, not "${value}".`, true);
  try {
    const row = await api(`/api/images?path=${encodeURIComponent(value)}`);
    runSearch({ kind: "id", id: row.id });
  } catch (e) {
    clearResults();
    say(e.message, true);
  }
}

function remember(search) {
  const query = searchToQuery(search);
  if (query === null) {
    history.pushState({ upload: search.file.name }, "", window.location.pathname);
  } else if (query !== window.location.search) {
    history.pushState({}, "", query);
  }
}

// ---------------------------------------------------------------- header
async function loadStatus() {
  try {
    const s = await api("/api/status");
    const parts = [plural(s.count, "image", "images")];
    if (s.labels) parts.push(plural(s.labels, "label", "labels"));
    if (s.model) parts.push(`model ${s.model} (${s.bits} bits)`);
    parts.push(`generation ${s.generation}`);
    $("summary").textContent = parts.join(" · ");
    codeBits = s.bits;
    if (s.empty) {
      disableSearch("The index is empty: run `semhash index DIR` to add images, then reload this page.");
    } else if (!s.model_available) {
      say(`Search by image is unavailable: ${s.model_error}. Click a bucket to browse.`, true);
    }
    return s;
  } catch (e) {
    $("summary").textContent = "The index cannot be read.";
    disableSearch(e.message);
    return null;
  }
}

function disableSearch(text) {
  $("drop").classList.add("disabled");
  $("file").disabled = true;
  $("find-text").disabled = true;
  say(text, true);
}

// ---------------------------------------------------------------- searching
async function runSearch(search, fromHistory = false) {
  lastSearch = search;
  const mine = ++searchCounter;
  if (!fromHistory) remember(search);
  const corrected = $("limit").dataset.corrected;
  delete $("limit").dataset.corrected;
  const note = corrected ? ` ("Show at most" is 1 to 1000: set to ${$("limit").value}.)` : "";
  say("Searching…" + note);
  try {
    let results;
    if (search.kind === "upload") {
      const form = new FormData();
      form.append("files", search.file, search.file.name);
      results = await api(`/api/search/upload?${settings(search)}`, { method: "POST", body: form });
    } else if (search.kind === "id") {
      results = await api(`/api/search/id/${search.id}?${settings(search)}`);
    } else if (search.kind === "code") {
      results = await api(`/api/search/code?code=${search.code}&${settings(search)}`);
    } else {
      $("pager").hidden = true;
      const bucket = await api(`/api/buckets/${search.code}?radius=${$("radius").value}&limit=${limitValue()}`);
      if (mine === searchCounter) {
        showBucket(bucket);
        if (note) say($("message").textContent + note);
      }
      return;
    }
    if (mine === searchCounter) {
      showResult(results[0], search);
      if (note) say($("message").textContent + note);
    }
  } catch (e) {
    if (mine !== searchCounter) return;
    clearResults();
    say(e.status === 422 || e.status === 413 ? `Bad file: ${e.message}` : e.message, true);
  }
}

function clearResults() {
  $("results").replaceChildren();
  $("query").hidden = true;
  $("pager").hidden = true;
}

// "Show at most" matches a page; Previous/Next step through them (each page in the URL)
function showPager(search, result) {
  const offset = search.offset || 0;
  const limit = limitValue();
  const reachable = Math.min(result.total, MAX_ROWS);
  $("pager").hidden = result.total <= limit && offset === 0;
  const last = offset + result.matches.length;
  $("page-of").textContent = `matches ${result.matches.length ? offset + 1 : 0}–${last} of ${result.total.toLocaleString()}` +
    (result.total > MAX_ROWS ? ` (the first ${MAX_ROWS.toLocaleString()} can be paged through)` : "");
  $("previous").disabled = offset === 0;
  $("next").disabled = last >= reachable;
}

function turnPage(direction) {
  if (!lastSearch || lastSearch.kind === "bucket") return;
  const limit = limitValue();
  const offset = Math.max(0, Math.min((lastSearch.offset || 0) + direction * limit, MAX_ROWS - limit));
  runSearch({ ...lastSearch, offset });
  $("search-heading").scrollIntoView({ block: "start" });
}

let queryFull = null; // the query's image at full size: {src, alt, caption}

function showQuery(imageUrl, name, bits, countText, fullUrl = imageUrl) {
  $("query").hidden = false;
  $("query-open").hidden = !imageUrl;
  $("query-image").src = imageUrl || "data:,";
  queryFull = fullUrl ? { src: fullUrl, alt: `Query: ${name}`, caption: name } : null;
  $("query-image").alt = `Query: ${name}`;
  $("query-name").replaceChildren(...pathText(name));
  $("query-bits").textContent = bits;
  $("query-count").textContent = countText;
}

function showResult(result, search) {
  const radius = Number($("radius").value);
  const shown = result.matches.length;
  const offset = search.offset || 0;
  const showing = offset ? ` (showing matches ${offset + 1}–${offset + shown})` : ` (showing the nearest ${shown.toLocaleString()})`;
  let count = `${plural(result.total, "match", "matches")}: copies, or similar within radius ${radius}`;
  if (shown < result.total) count += showing;
  const image = search.kind === "upload" ? queryPreviewUrl : search.kind === "id" ? `/api/images/${search.id}/thumbnail?size=192` : "";
  if (search.kind === "code") count = `${plural(result.total, "image", "images")} within radius ${radius} of this code` + (shown < result.total ? showing : "");
  showQuery(image, result.query, result.bits, count, search.kind === "id" ? `/api/images/${search.id}/file` : image);
  showPager(search, result);
  if (result.note) count += ` (${result.note})`;
  const results = $("results");
  results.replaceChildren();
  if (result.total === 0) {
    say(`No copy, and no indexed image within radius ${radius}. ` + (result.hint ? `Note: ${result.hint}.` : "Try a larger radius."));
    return;
  }
  say(count + ". Click a match to search from it." + (result.hint ? ` Note: ${result.hint}.` : ""));
  // matches come exact, then near, then similar: one section per tier and distance
  const groups = new Map();
  for (const match of result.matches) {
    const key = `${match.tier} ${match.distance}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(match);
  }
  for (const matches of groups.values()) {
    const { tier, distance } = matches[0];
    const heading = el("h3", { text: `${TIER_TITLES[tier] || tier}${tier === "exact" ? "" : ` · distance ${distance}`} · ${plural(matches.length, "image", "images")}` });
    const list = el("ul", { class: "grid" }, ...matches.map((m) => el("li", {}, matchCard(m, `distance ${m.distance}`))));
    results.append(el("section", { class: "group", "aria-label": `${TIER_TITLES[tier] || tier}, distance ${distance}` }, heading, list));
  }
}

const TIER_TITLES = { exact: "Exact copies (the same bytes)", near: "Near-duplicates (copies)", similar: "Similar" };

function showBucket(bucket) {
  showQuery(
    bucket.members.length ? bucket.members[0].thumbnail_url + "?size=192" : "",
    `Bucket ${bucket.bits}`,
    bucket.bits,
    `${plural(bucket.size, "image", "images")} share this code` +
      (bucket.members.length < bucket.size ? ` (showing the first ${bucket.members.length.toLocaleString()} by path)` : ""),
    bucket.members.length ? bucket.members[0].file_url : "",
  );
  const results = $("results");
  results.replaceChildren();
  say(`Bucket ${bucket.bits}: ${plural(bucket.size, "image", "images")}. Click one to search from it.`);
  const list = el("ul", { class: "grid" }, ...bucket.members.map((m) => el("li", {}, matchCard(m, "distance 0"))));
  results.append(el("section", { class: "group", "aria-label": "Bucket members" }, el("h3", { text: "Members" }), list));
  $("search-heading").scrollIntoView({ block: "start" });
}

function matchCard(match, distanceText) {
  const label = match.label === null ? "no label" : `label ${match.label}`;
  return el(
    "button",
    {
      type: "button",
      class: "match",
      "data-id": String(match.id),
      "aria-label": `Search from ${match.path} (${match.tier || "similar"}, ${distanceText}, ${label})`,
      onclick: () => runSearch({ kind: "id", id: match.id }),
    },
    el("img", { src: `/api/images/${match.id}/thumbnail`, alt: "", loading: "lazy" }),
    el("span", { class: "facts" },
      el("span", { class: `tier tier-${match.tier || "similar"}`, text: match.tier || "similar" }),
      el("span", { class: "distance", text: distanceText }), el("span", { class: "label", text: label })),
    el("span", { class: "path" }, ...pathText(match.path)),
  );
}

function searchFile(file) {
  if (!file) return;
  if (queryPreviewUrl) URL.revokeObjectURL(queryPreviewUrl);
  queryPreviewUrl = URL.createObjectURL(file);
  runSearch({ kind: "upload", file });
}

// ---------------------------------------------------------------- buckets and report
async function loadBuckets() {
  try {
    const data = await api("/api/buckets?n=12");
    const facts = [`${plural(data.images, "image", "images")} in ${plural(data.buckets, "bucket", "buckets")}`];
    if (data.purity !== null) facts.push(`bucket purity ${data.purity.toFixed(3)}`);
    if (data.coverage !== null) facts.push(`coverage ${(100 * data.coverage).toFixed(0)}%`);
    $("buckets-summary").textContent = facts.join(" · ") + ".";
    const shared = data.largest.filter((b) => b.size > 1);
    if (!shared.length) $("buckets-summary").textContent += " Every image has a code of its own: no bucket holds two.";
    const body = $("buckets").querySelector("tbody");
    body.replaceChildren(
      ...shared.map((b) =>
        el(
          "tr",
          {},
          el("td", {}, el("code", { text: b.bits })),
          el("td", { text: b.size.toLocaleString() }),
          el("td", { text: b.purity === null ? "–" : b.purity.toFixed(3) }),
          el("td", { text: b.majority_label === null ? "–" : `${b.majority_label} (${(100 * b.majority_share).toFixed(0)}%)` }),
          el("td", {}, el("button", { type: "button", text: "Show", "aria-label": `Show the ${b.size} images of bucket ${b.bits}`, onclick: () => runSearch({ kind: "bucket", code: b.bits }) })),
        ),
      ),
    );
    $("buckets").hidden = shared.length === 0;
  } catch (e) {
    $("buckets-summary").textContent = e.message;
  }
}

async function loadReport() {
  try {
    const report = await api("/api/report");
    $("report-summary").textContent = `Report ${report.name} for model ${report.model}, written ${report.written_at}.`;
    if (report.headline) {
      $("report-headline").textContent = report.headline;
      $("report-headline").hidden = false;
    }
    $("figures").replaceChildren(
      ...report.figures.map((f) => {
        const caption = f.name.replace(/\.png$/, "").replaceAll("_", " ");
        const open = el("button", { type: "button", class: "figure-open", "aria-label": `Open the figure ${caption} full size` },
          el("img", { src: f.url, alt: `Report figure: ${caption}`, loading: "lazy" }));
        return el("figure", {}, open, el("figcaption", { text: caption }));
      }),
    );
    const items = report.figures.map((f) => {
      const caption = f.name.replace(/\.png$/, "").replaceAll("_", " ");
      return { src: f.url, alt: `Report figure: ${caption}`, caption };
    });
    $("figures").querySelectorAll(".figure-open").forEach((button, i) => button.addEventListener("click", () => openViewer(items, i)));
  } catch (e) {
    $("report-summary").textContent = e.status === 404 ? `${e.message}.` : `The report cannot be read: ${e.message}`;
  }
}

// ---------------------------------------------------------------- wiring
function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => searchFile(event.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      if (!$("file").disabled) drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (!$("file").disabled && event.dataTransfer.files.length) searchFile(event.dataTransfer.files[0]);
  });
  $("radius").addEventListener("input", () => {
    $("radius-value").textContent = $("radius").value;
  });
  $("radius").addEventListener("change", () => lastSearch && runSearch({ ...lastSearch, offset: 0 }));
  $("limit").addEventListener("change", () => lastSearch && runSearch({ ...lastSearch, offset: 0 }));
  $("previous").addEventListener("click", () => turnPage(-1));
  $("next").addEventListener("click", () => turnPage(1));
  $("query-open").addEventListener("click", () => queryFull && openViewer([queryFull], 0));
  $("controls").addEventListener("submit", (event) => event.preventDefault());
  $("find").addEventListener("submit", (event) => {
    event.preventDefault();
    findText($("find-text").value);
  });
  window.addEventListener("popstate", (event) => {
    const search = searchFromLocation();
    if (search) {
      runSearch(search, true);
    } else {
      lastSearch = null;
      clearResults();
      say(event.state && event.state.upload ? `To search by ${event.state.upload} again, drop it here again.` : "");
    }
  });
}

wire();
loadStatus().then((s) => {
  if (s && !s.empty) {
    const shared = searchFromLocation(); // a link to a search: run it
    if (shared) runSearch(shared, true);
    loadBuckets();
    loadReport();
  } else {
    $("buckets-summary").textContent = "No buckets: the index is empty.";
    $("report-summary").textContent = "No report: the index is empty.";
  }
});
