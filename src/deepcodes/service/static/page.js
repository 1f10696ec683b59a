// The deepcodes search page: plain JavaScript against the service's JSON endpoints.
"use strict";
let stats = null;
const $ = (id) => document.getElementById(id);

function headers(json) {
  const h = {};
  const token = sessionStorage.getItem("deepcodes-token");
  if (token) h["Authorization"] = "Bearer " + token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function call(method, path, body) {
  const reply = await fetch(path, {method, headers: headers(body !== undefined),
                                   body: body === undefined ? undefined : JSON.stringify(body)});
  if (reply.status === 401) { $("auth").style.display = "block"; throw new Error("a token is needed"); }
  if (!reply.ok) {
    let message = reply.statusText;
    try { message = (await reply.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return reply;
}

function showStatus(text) { $("status").textContent = text || ""; }

function fact(name, value) {
  const div = document.createElement("div");
  const b = document.createElement("b");
  b.textContent = name;
  div.appendChild(b);
  div.appendChild(document.createTextNode(value));
  return div;
}

async function loadStats() {
  stats = await (await call("GET", "/stats")).json();
  const idx = stats.index || {};
  const facts = $("facts");
  facts.replaceChildren(
    fact("spec", idx.spec || idx["class"] || "?"),
    fact("items", stats.ntotal.toLocaleString()),
    fact("dimension", String(idx.d)),
    fact("bytes per vector", String(idx.bytes_per_vector ?? idx.code_size)),
    fact("measured recall", stats.recall ? `${(100 * stats.recall.recall).toFixed(1)}% (${stats.recall.k}-recall@${stats.recall.k}, ${stats.recall.queries} queries)` : "not measured"));
  if (stats.recall) facts.lastChild.title = stats.recall.what;
  if (stats.shards) facts.appendChild(fact("shards", String(stats.shards)));
  $("upload-box").style.display = isImages() ? "inline" : "none";
}

function isImages() { return !!(stats && stats.gallery && stats.gallery.image_shape); }

async function imageElement(id) {
  const img = document.createElement("img");
  img.alt = "item " + id;
  const blob = await (await call("GET", `/items/${id}/image.png`)).blob();
  img.src = URL.createObjectURL(blob);
  return img;
}

function labelText(label) { return label === null || label === undefined ? "" : "label " + label; }

async function showQuery(item, picture) {
  const box = $("query");
  box.replaceChildren();
  const title = document.createElement("div");
  title.innerHTML = "<b>query</b><br>";
  title.appendChild(document.createTextNode(item ? `id ${item.id} ${item.key ? "“" + item.key + "” " : ""}${labelText(item.label)}` : "uploaded image"));
  if (picture) box.appendChild(picture);
  box.appendChild(title);
}

async function showResults(result, queryLabel) {
  const area = $("results");
  area.replaceChildren();
  const n = result.ids.length;
  if (isImages()) {
    const grid = document.createElement("div");
    grid.id = "grid";
    area.appendChild(grid);
    const cards = [];
    for (let r = 0; r < n; r++) {
      const id = result.ids[r];
      if (id < 0) continue;
      const card = document.createElement("div");
      const label = result.labels ? result.labels[r] : null;
      card.className = "card neighbour" + (queryLabel == null || label == null ? "" : (label === queryLabel ? " same" : " other"));
      const text = document.createElement("div");
      text.textContent = `#${r + 1} id ${id} · d=${result.distances[r] === null ? "∞" : +result.distances[r].toFixed(3)} ${labelText(label)}`;
      grid.appendChild(card);
      cards.push(imageElement(id).then((img) => { card.prepend(img); card.appendChild(text); }));
    }
    await Promise.all(cards);
  } else {
    const table = document.createElement("table");
    table.innerHTML = "<tr><th>rank</th><th>id</th><th>key</th><th>distance</th><th>label</th><th>same label</th></tr>";
    for (let r = 0; r < n; r++) {
      const id = result.ids[r];
      if (id < 0) continue;
      const label = result.labels ? result.labels[r] : null;
      const same = queryLabel == null || label == null ? "" : (label === queryLabel ? "yes" : "no");
      const tr = document.createElement("tr");
      tr.className = "neighbour" + (same === "yes" ? " same" : same === "no" ? " other" : "");
      for (const cell of [r + 1, id, result.keys ? (result.keys[r] ?? "") : "", result.distances[r] ?? "∞", label ?? "", same]) {
        const td = document.createElement("td");
        td.textContent = String(cell);
        tr.appendChild(td);
      }
      table.appendChild(tr);
    }
    area.appendChild(table);
  }
}

async function searchStored(id) {
  showStatus("searching…");
  try {
    const item = await (await call("GET", `/items/${id}`)).json();
    const k = Math.max(1, Math.min(100, parseInt($("k").value, 10) || 12));
    const reply = await (await call("POST", "/search", {ids: [id], k, include: ["labels", "keys"]})).json();
    await showQuery(item, isImages() ? await imageElement(id) : null);
    await showResults(reply.results[0], item.label);
    showStatus("");
  } catch (e) { showStatus("error: " + e.message); }
}

async function searchUpload(file) {
  const [h, w, c] = stats.gallery.image_shape;
  const bitmap = await createImageBitmap(file);
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  canvas.style.width = "112px"; canvas.style.height = "112px"; canvas.style.imageRendering = "pixelated";
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const scale = stats.gallery.scale / 255;
  const vector = new Array(h * w * c);
  // Grey images: the mean of R, G, B. Colour images: channel-major (all R, then G, then B), as CIFAR-10.
  for (let p = 0; p < h * w; p++) {
    if (c === 1) vector[p] = scale * (rgba[4 * p] + rgba[4 * p + 1] + rgba[4 * p + 2]) / 3;
    else for (let ch = 0; ch < 3; ch++) vector[ch * h * w + p] = scale * rgba[4 * p + ch];
  }
  showStatus("searching…");
  try {
    const k = Math.max(1, Math.min(100, parseInt($("k").value, 10) || 12));
    const reply = await (await call("POST", "/search", {vectors: [vector], k, include: ["labels", "keys"]})).json();
    await showQuery(null, canvas);
    await showResults(reply.results[0], null);
    showStatus("");
  } catch (e) { showStatus("error: " + e.message); }
}

async function randomItem() {
  const reply = await (await call("GET", `/items?sample=1&seed=${Math.floor(Math.random() * 1e9)}`)).json();
  if (!reply.ids.length) { showStatus("no stored item to pick"); return; }
  $("qid").value = reply.ids[0];
  await searchStored(reply.ids[0]);
}

$("search").addEventListener("click", () => searchStored(parseInt($("qid").value, 10)));
$("random").addEventListener("click", () => randomItem().catch((e) => showStatus("error: " + e.message)));
$("upload").addEventListener("change", (ev) => { if (ev.target.files.length) searchUpload(ev.target.files[0]); });
$("save-token").addEventListener("click", () => {
  sessionStorage.setItem("deepcodes-token", $("token").value);
  $("auth").style.display = "none";
  loadStats().catch((e) => showStatus("error: " + e.message));
});
loadStats().catch((e) => showStatus("error: " + e.message));
