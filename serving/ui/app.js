// The search page: builds V2 inference requests (JSON header + binary tensor data) for the search model and
// shows its hits as cards. No framework, no build step; every request goes to the server that served the page.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, views: [], file: null, busy: false };
const AUDIO_SUFFIXES = [".m4a", ".mp3", ".wav", ".ogg", ".oga", ".flac", ".aac"];

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorOf(response) {
  // the API's own message ({"error": ...}), else the status line
  try {
    const body = await response.json();
    if (body && body.error) return `${response.status}: ${body.error}`;
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

async function loadInfo() {
  const response = await fetch("/ui/info");
  if (!response.ok) throw new Error(await errorOf(response));
  const info = await response.json();
  state.model = info.search_model;
  state.views = info.views;
  const select = $("gallery");
  for (const view of info.views) select.add(new Option(view, view));
  const params = new URLSearchParams(location.search);
  const wanted = params.get("gallery") || (info.views.includes("av") ? "av" : info.views[0]);
  if (info.views.includes(wanted)) select.value = wanted;
  $("top-k").max = info.max_top_k;
  const sizes = info.views.map((v) => `${v} ${info.gallery[v].items} items / ${info.gallery[v].entries} entries`);
  $("facts").textContent = `model ${String(info.weights_sha256 || "?").slice(0, 12)}`;
  $("facts").append(document.createElement("br"), sizes.join(" · "));
  $("facts").title = `weights sha256 ${info.weights_sha256}`;
  return params;
}

// --- the request: one row, any of TEXT, VIDEO, AUDIO as BYTES with the binary tensor extension ---------------

function bytesElement(data) {
  // a V2 BYTES element: 4-byte little-endian length, then the bytes
  const out = new Uint8Array(4 + data.length);
  new DataView(out.buffer).setUint32(0, data.length, true);
  out.set(data, 4);
  return out;
}

function inferBody(inputs, parameters) {
  const parts = [];
  const header = { inputs: [], parameters };
  for (const [name, data] of inputs) {
    const element = bytesElement(data);
    header.inputs.push({ name, datatype: "BYTES", shape: [1], parameters: { binary_data_size: element.length } });
    parts.push(element);
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  return { body: new Blob([json, ...parts]), headerLength: json.length };
}

async function search(inputs) {
  if (!inputs.length) {
    showError("give a caption, a video or an audio file");
    return;
  }
  const parameters = { top_k: Number($("top-k").value) || 10, gallery: $("gallery").value };
  const filter = $("filter").value.trim();
  if (filter) parameters.filter = filter; // a boolean expression over the gallery's fields, checked by the server
  const { body, headerLength } = inferBody(inputs, parameters);
  setBusy(true, "searching…");
  showError("");
  const started = performance.now();
  try {
    const response = await fetch(`/v2/models/${encodeURIComponent(state.model)}/infer`, {
      method: "POST", body,
      headers: { "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(headerLength) },
    });
    if (!response.ok) throw new Error(await errorOf(response));
    const hits = hitsOf(await response.json());
    render(hits);
    const ms = Math.round(performance.now() - started);
    const what = inputs.map(([name]) => name.toLowerCase()).join(" + ");
    const where = parameters.filter ? ` where ${parameters.filter}` : "";
    setBusy(false, `${hits.length} results for ${what} in the ${parameters.gallery} gallery${where}, ${ms} ms`);
    document.body.dataset.searchMs = String(ms);
  } catch (err) {
    setBusy(false, "");
    showError(err.message);
  }
}

function hitsOf(result) {
  const out = {};
  for (const o of result.outputs) out[o.name] = o.data;
  const hits = [];
  for (let i = 0; i < out.IDS.length; i++) {
    if (!out.IDS[i]) continue; // padding: fewer entries than top_k
    hits.push({ id: out.IDS[i], score: out.SCORES[i], start: out.START[i], end: out.END[i],
                modalities: out.MODALITIES[i], uri: out.MEDIA_URIS[i], caption: out.CAPTIONS ? out.CAPTIONS[i] : "" });
  }
  return hits;
}

// --- results ---------------------------------------------------------------------------------------------

const seconds = (s) => (s < 0 ? "?" : `${s.toFixed(1)} s`);
const isAudio = (uri) => AUDIO_SUFFIXES.some((suffix) => uri.toLowerCase().endsWith(suffix));

function render(hits) {
  const list = $("results");
  list.replaceChildren();
  hits.forEach((hit, rank) => list.append(card(hit, rank + 1)));
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function card(hit, rank) {
  const node = el("article", "card");
  node.dataset.id = hit.id;
  if (hit.uri) {
    const player = el(isAudio(hit.uri) ? "audio" : "video");
    player.controls = true;
    player.preload = "metadata";
    const fragment = hit.start >= 0 ? `#t=${hit.start}${hit.end > hit.start ? `,${hit.end}` : ""}` : "";
    player.addEventListener("loadedmetadata", () => { node.dataset.media = "loaded"; });
    player.addEventListener("error", () => { node.dataset.media = "failed"; });
    player.src = `/ui/media/${encodeURIComponent(hit.id)}${fragment}`;
    node.append(player);
  } else {
    node.append(el("div", "nomedia", "no media recorded"));
  }
  const meta = el("div", "meta");
  meta.append(el("span", "rank", `#${rank}`), el("span", "score", `score ${hit.score.toFixed(4)}`),
              el("span", "id", hit.id), el("span", "range", `${seconds(hit.start)} – ${seconds(hit.end)} · ${hit.modalities}`));
  if (hit.caption) meta.append(el("span", "caption", hit.caption));
  if (hit.uri) {
    meta.append(el("span", "uri", hit.uri));
    const more = el("button", "more", "more like this");
    more.type = "button";
    more.addEventListener("click", () => moreLikeThis(hit));
    meta.append(more);
  }
  node.append(meta);
  return node;
}

async function moreLikeThis(hit) {
  // the hit's media file as the query: video for a video file (and its sound where the entry embedded audio),
  // audio for an audio file
  setBusy(true, `fetching the media of ${hit.id}…`);
  const response = await fetch(`/ui/media/${encodeURIComponent(hit.id)}`);
  if (!response.ok) {
    setBusy(false, "");
    showError(await errorOf(response));
    return;
  }
  const data = new Uint8Array(await response.arrayBuffer());
  const inputs = isAudio(hit.uri) ? [["AUDIO", data]] : [["VIDEO", data]];
  if (!isAudio(hit.uri) && hit.modalities.includes("a")) inputs.push(["AUDIO", data]);
  setBusy(false, "");
  await search(inputs);
}

// --- the form --------------------------------------------------------------------------------------------

function setBusy(busy, message) {
  state.busy = busy;
  $("go").disabled = busy;
  $("status").textContent = message;
}

function setFile(file) {
  state.file = file;
  $("use").hidden = !file;
  if (!file) {
    $("drop-label").textContent = "drop a video or audio file here, or click to pick one";
    $("file").value = "";
    return;
  }
  const audio = file.type.startsWith("audio/") || isAudio(file.name);
  $("as-video").checked = !audio;
  $("as-audio").checked = true;
  $("drop-label").textContent = `${file.name} (${(file.size / 1048576).toFixed(1)} MiB)`;
}

async function formInputs() {
  const inputs = [];
  const text = $("text").value.trim();
  if (text) inputs.push(["TEXT", new TextEncoder().encode(text)]);
  if (state.file && ($("as-video").checked || $("as-audio").checked)) {
    const data = new Uint8Array(await state.file.arrayBuffer());
    if ($("as-video").checked) inputs.push(["VIDEO", data]);
    if ($("as-audio").checked) inputs.push(["AUDIO", data]);
  }
  return inputs;
}

function wire() {
  $("query").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!state.busy) await search(await formInputs());
  });
  $("file").addEventListener("change", () => setFile($("file").files[0] || null));
  $("clear").addEventListener("click", () => setFile(null));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) setFile(event.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file").click(); });
}

async function start() {
  wire();
  try {
    const params = await loadInfo();
    if (params.get("k")) $("top-k").value = params.get("k");
    if (params.get("filter")) $("filter").value = params.get("filter");
    if (params.get("q")) {  // a link such as /ui/?q=a+dog+barks&k=5&gallery=av runs its search
      $("text").value = params.get("q");
      await search(await formInputs());
    }
  } catch (err) {
    $("facts").textContent = "";
    showError(err.message);
  }
  document.body.dataset.ready = "true";
}

start();
