// ng911 live console: vanilla JS + SVG, no external resources (works offline).
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
const state = {
  topo: null, nodes: {}, edges: {}, mtls: {}, boroughs: null, proj: null,
  calls: {}, rows: [], maxRows: 1500, selected: null, lastState: null, anims: 0,
  stats: {},
};
window.ng911 = state; // for the browser tests

function el(tag, attrs, parent, text) {
  const ns = ["svg", "g", "rect", "text", "path", "line", "circle", "polygon"].includes(tag);
  const e = ns ? document.createElementNS(SVGNS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
const plain = (t) => (t === "tls" || t === "https") ? "tls" : "plain";
const fmtTime = (ts) => new Date(ts * 1000).toISOString().slice(11, 23);

async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
  return r.json();
}
function post(url, body) {
  return getJSON(url, {method: "POST", headers: {"Content-Type": "application/json"},
                       body: JSON.stringify(body || {})});
}

// ------------------------------------------------------------------ network view
function layout(topo) {
  const pos = {};
  const psaps = topo.hosts.filter((h) => h.role === "psap");
  const step = 440 / Math.max(psaps.length, 1);
  for (const h of topo.hosts) {
    if (h.role === "caller") pos[h.name] = [70, 190];
    else if (h.role === "vsp") pos[h.name] = [240, 190];
    else if (h.role === "esrp") pos[h.name] = [420, 190];
    else if (h.role === "lost") pos[h.name] = [420, 400];
  }
  psaps.forEach((p, i) => { pos[p.name] = [640, 30 + step * i + step / 2 - 10]; });
  const takers = topo.hosts.filter((h) => h.role === "calltaker");
  const per = {};
  for (const t of takers) {
    const i = (per[t.psap] = (per[t.psap] || 0) + 1) - 1;
    const [, y] = pos[t.psap] || [0, 0];
    pos[t.name] = [870, y + i * 18];
  }
  return pos;
}

function drawNetwork(topo) {
  const svg = $("#net");
  svg.innerHTML = "";
  state.nodes = {}; state.edges = {};
  const pos = layout(topo);
  const gEdges = el("g", {}, svg), gNodes = el("g", {}, svg);
  state.packets = el("g", {}, svg);
  const role = {};
  topo.hosts.forEach((h) => { role[h.name] = h; });
  const addEdge = (a, b, hop, transport, label) => {
    if (!pos[a] || !pos[b]) return;
    const [x1, y1] = pos[a], [x2, y2] = pos[b];
    const line = el("line", {x1, y1, x2, y2, class: "edge " + plain(transport),
                             "data-hop": hop, "data-a": a, "data-b": b,
                             "data-transport": transport}, gEdges);
    // a label between two side-by-side boxes sits above them (the gap is narrower than
    // "hop2: TLS mTLS"); on a vertical edge it sits beside the line
    const flat = y1 === y2;
    const t = el("text", {x: flat ? (x1 + x2) / 2 : x1 + 6, y: flat ? y1 - 28 : (y1 + y2) / 2,
                          class: "edge-label", "text-anchor": flat ? "middle" : "start"},
                 gEdges, label);
    state.edges[a + "|" + b] = state.edges[b + "|" + a] = {line, label: t, hop, transport};
  };
  const one = (r) => topo.hosts.find((h) => h.role === r);
  const hops = topo.hops;
  const caller = one("caller"), vsp = one("vsp"), esrp = one("esrp"), lost = one("lost");
  addEdge(caller.name, vsp.name, "hop1", hops.hop1.transport,
          "hop1: " + hops.hop1.transport.toUpperCase());
  addEdge(vsp.name, esrp.name, "hop2", hops.hop2.transport,
          "hop2: " + hops.hop2.transport.toUpperCase());
  addEdge(esrp.name, lost.name, "lost", topo.lost.transport,
          "LoST: " + topo.lost.transport.toUpperCase() + (topo.lost.mutual ? " mTLS" : ""));
  if (topo.lost.mutual) state.edges[esrp.name + "|" + lost.name].label.classList.add("mtls");
  for (const h of topo.hosts) {
    if (h.role === "psap") addEdge(esrp.name, h.name, "hop3", hops.hop3.transport, "");
    if (h.role === "calltaker") addEdge(h.psap, h.name, "hop4", hops.hop4.transport, "");
  }
  // one label per fan-out hop
  const lbl = (x, y, hop) => el("text", {x, y, class: "edge-label hoplabel", "data-hop": hop},
                                gEdges, hop + ": " + hops[hop].transport.toUpperCase());
  state.hopLabels = {hop3: lbl(480, 20, "hop3"), hop4: lbl(760, 20, "hop4")};
  for (const h of topo.hosts) {
    if (!pos[h.name]) continue;
    const [x, y] = pos[h.name];
    const small = h.role === "calltaker";
    const w = small ? 120 : 130, hgt = small ? 16 : 40;
    const g = el("g", {class: "node role-" + h.role, "data-name": h.name,
                       transform: `translate(${x - w / 2},${y - hgt / 2})`}, gNodes);
    el("rect", {width: w, height: hgt}, g);
    el("text", {x: 5, y: small ? 12 : 14}, g, h.name);
    const c = small ? null : el("text", {x: 5, y: 32, class: "counters"}, g, "");
    state.nodes[h.name] = {g, pos: [x, y], counters: c, host: h};
  }
}

function markMutual(frame) {
  if (!frame.mutual || !frame.hop) return;
  state.mtls[frame.hop] = true;
  const labels = state.hopLabels || {};
  if (labels[frame.hop]) {
    labels[frame.hop].textContent = frame.hop + ": TLS mTLS";
    labels[frame.hop].classList.add("mtls");
  }
  for (const e of Object.values(state.edges)) {
    if (e.hop === frame.hop && e.label.textContent && !e.label.textContent.includes("mTLS")) {
      e.label.textContent += " mTLS";
      e.label.classList.add("mtls");
    }
  }
}

function animate(from, to, transport) {
  const a = state.nodes[from], b = state.nodes[to];
  if (!a || !b || state.anims > 80 || document.hidden) return;
  state.anims++;
  const dot = el("circle", {class: "packet " + plain(transport), r: 5,
                            cx: a.pos[0], cy: a.pos[1]}, state.packets);
  const t0 = performance.now(), dur = 450;
  const step = (now) => {
    const k = Math.min(1, (now - t0) / dur);
    dot.setAttribute("cx", a.pos[0] + (b.pos[0] - a.pos[0]) * k);
    dot.setAttribute("cy", a.pos[1] + (b.pos[1] - a.pos[1]) * k);
    if (k < 1) requestAnimationFrame(step); else { dot.remove(); state.anims--; }
  };
  requestAnimationFrame(step);
}

function relight() {
  const lit = new Set();
  for (const c of Object.values(state.calls)) {
    if (!c.active) continue;
    for (const k of c.edges) lit.add(k);
  }
  for (const [k, e] of Object.entries(state.edges)) e.line.classList.toggle("lit", lit.has(k));
}

// ------------------------------------------------------------------ maps
function projection(geo, w, h, pad) {
  let minX = 180, maxX = -180, minY = 90, maxY = -90;
  const visit = (c) => { if (typeof c[0] === "number") {
    minX = Math.min(minX, c[0]); maxX = Math.max(maxX, c[0]);
    minY = Math.min(minY, c[1]); maxY = Math.max(maxY, c[1]); } else c.forEach(visit); };
  geo.features.forEach((f) => visit(f.geometry.coordinates));
  const kx = Math.cos(((minY + maxY) / 2) * Math.PI / 180);
  const s = Math.min((w - 2 * pad) / ((maxX - minX) * kx), (h - 2 * pad) / (maxY - minY));
  return {
    xy: (lat, lon) => [pad + (lon - minX) * kx * s, pad + (maxY - lat) * s],
    latlon: (x, y) => [maxY - (y - pad) / s, minX + (x - pad) / (kx * s)],
    metres: (m) => m / 111320 * s, // metres → pixels (latitude scale)
  };
}

function drawBoroughs(svg, geo, proj, labels) {
  svg.innerHTML = "";
  const g = el("g", {}, svg);
  for (const f of geo.features) {
    const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
    let d = "";
    for (const poly of polys) for (const ring of poly) {
      d += ring.map(([lon, lat], i) => (i ? "L" : "M") + proj.xy(lat, lon).map((v) => v.toFixed(1)).join(",")).join("") + "Z";
    }
    const name = f.properties.boro_name || f.properties.name || "";
    el("path", {d, class: "borough", "data-borough": name}, g);
  }
  if (labels) {
    for (const loc of state.topo.locations) {
      const [x, y] = proj.xy(loc.lat, loc.lon);
      el("text", {x: x + 6, y: y - 6, class: "borough-label"}, g, loc.borough || loc.name);
    }
  }
  return el("g", {}, svg);
}

function setupMap() {
  const svg = $("#map");
  state.proj = projection(state.boroughs, 480, 480, 10);
  state.mapMarks = drawBoroughs(svg, state.boroughs, state.proj, true);
  svg.addEventListener("click", async (ev) => {
    const pt = svg.createSVGPoint(); pt.x = ev.clientX; pt.y = ev.clientY;
    const p = pt.matrixTransform(svg.getScreenCTM().inverse());
    const [lat, lon] = state.proj.latlon(p.x, p.y);
    el("circle", {cx: p.x, cy: p.y, r: 5, class: "callpt"}, state.mapMarks);
    $("#lastcall").textContent = `calling from ${lat.toFixed(5)}, ${lon.toFixed(5)} (${state.topo.scenario})…`;
    try { await post("/api/call", {lat, lon}); }
    catch (e) { $("#lastcall").textContent = String(e); }
  });
}
// where (lat, lon) is on screen: for the tests' real mouse clicks
state.screenPoint = (lat, lon) => {
  const svg = $("#map"); const [x, y] = state.proj.xy(lat, lon);
  const pt = svg.createSVGPoint(); pt.x = x; pt.y = y;
  const p = pt.matrixTransform(svg.getScreenCTM());
  return [p.x, p.y];
};

// ------------------------------------------------------------------ call takers
function renderTakers(snap) {
  const box = $("#takers");
  for (const [name, t] of Object.entries(snap.takers)) {
    let card = box.querySelector(`[data-taker="${name}"]`);
    if (!card) {
      card = el("div", {class: "taker", "data-taker": name}, box);
      const h = el("h3", {}, card);
      el("span", {}, h, name);
      const lab = el("label", {}, h);
      const cb = el("input", {type: "checkbox", class: "attend"}, lab);
      lab.appendChild(document.createTextNode(" I am at this position"));
      cb.addEventListener("change", () => post(`/api/takers/${name}/attend`, {on: cb.checked}));
      el("div", {class: "i3"}, card);
      el("div", {class: "calls"}, card);
    }
    card.querySelector(".attend").checked = t.attended;
    const psap = snap.psaps[t.psap] || {};
    const q = psap.queue || {}, sv = (psap.service || {}).serviceState || {};
    card.querySelector(".i3").textContent =
      `${t.psap} · QueueState ${q.state} (${q.queueLength}/${q.queueMaxLength}) · ` +
      `ServiceState ${sv.state}${sv.reason ? " (" + sv.reason + ")" : ""} · answered ${t.answered}/${t.offered}`;
    const calls = card.querySelector(".calls");
    const ids = new Set(t.calls.map((c) => c.call_id));
    for (const div of calls.querySelectorAll(".call")) if (!ids.has(div.dataset.call)) div.remove();
    let ringing = false;
    for (const c of t.calls) {
      ringing = ringing || c.state === "ringing";
      let div = calls.querySelector(`[data-call="${CSS.escape(c.call_id)}"]`);
      if (!div) div = newCall(calls, name, c);
      div.dataset.state = c.state;
      div.querySelector(".cstate").textContent = c.state;
      div.querySelector(".answer").disabled = c.state !== "ringing";
      if (c.state !== "ringing" && !div.dataset.answeredAt) div.dataset.answeredAt = Date.now();
    }
    card.classList.toggle("ringing", ringing);
  }
}

function newCall(parent, taker, c) {
  const div = el("div", {class: "call", "data-call": c.call_id}, parent);
  const svg = el("svg", {viewBox: "0 0 150 150", class: "takermap"}, div);
  const proj = projection(state.boroughs, 150, 150, 4);
  const marks = drawBoroughs(svg, state.boroughs, proj, false);
  const loc = c.pidf && c.pidf.locations ? c.pidf.locations.find((l) => l.lat !== undefined) : null;
  const d = el("div", {class: "details"}, div);
  const line = (k, v) => { const p = el("div", {}, d); el("b", {}, p, k + ": "); p.appendChild(document.createTextNode(v)); return p; };
  line("state", "").querySelector("b").nextSibling.replaceWith(el("span", {class: "cstate"}, null, c.state));
  if (loc) {
    const [x, y] = proj.xy(loc.lat, loc.lon);
    if (loc.radius_m) el("circle", {cx: x, cy: y, r: Math.max(2, proj.metres(loc.radius_m)), class: "uncertainty"}, marks);
    el("circle", {cx: x, cy: y, r: 3, class: "callpt"}, marks);
    line("location", `${loc.shape} ${loc.lat.toFixed(5)}, ${loc.lon.toFixed(5)}` +
         (loc.radius_m ? ` ±${Math.round(loc.radius_m)} m` : "")).classList.add("loc");
  } else line("location", c.pidf && c.pidf.error ? c.pidf.error : "none (no PIDF-LO)");
  line("caller", c.caller);
  line("IncidentId", c.incident_id || "—");
  line("CallId", c.emergency_call_id || "—");
  line("queue position", c.queue_position == null ? "offered to this position" : String(c.queue_position));
  const tm = line("timer", "0:00"); tm.classList.add("timer");
  const t0 = c.received * 1000;
  const tick = () => {
    if (!div.isConnected) return;
    const s = Math.max(0, Math.floor((Date.now() - t0) / 1000));
    tm.lastChild.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    setTimeout(tick, 500);
  };
  tick();
  const bar = el("div", {}, d);
  const ans = el("button", {class: "answer"}, bar, "Answer");
  const hang = el("button", {class: "hangup"}, bar, "Hang up");
  ans.addEventListener("click", () => post(`/api/takers/${taker}/answer`, {call_id: c.call_id}).catch(console.warn));
  hang.addEventListener("click", () => post(`/api/takers/${taker}/hangup`, {call_id: c.call_id}).catch(console.warn));
  return div;
}

// a chain of element processes, or a finished one: watched, not driven from the page
function modeNote(t) {
  let s = "";
  if (t.remote) s += " · element processes (live from their event files)";
  if (t.finished) s += " · run finished: browsing it (Ctrl-C in the terminal stops the console)";
  return s;
}
function renderTakersNote(snap) {
  const box = $("#takers");
  const note = snap.finished ? "The run is over: its call takers have stopped."
    : snap.remote ? "The call takers run in their own processes: their messages are in the " +
      "ladder; answering from this page needs the in-process chain (ng911 console)." : "";
  let p = box.querySelector("p.mode-note");
  if (!note) { if (p) p.remove(); return; }
  if (!p) p = el("p", {class: "hint mode-note"}, box);
  p.textContent = note;
}

function renderCounters(snap) {
  for (const [name, n] of Object.entries(state.nodes)) {
    if (!n.counters) continue;
    const c = snap.counters[name] || {};
    let s = `calls ${c.invites || 0} · hs ${c.handshakes || 0}`;
    const p = snap.psaps[name];
    n.g.classList.remove("overloaded", "busy");
    if (p) {
      s += ` · q ${p.queue.queueLength} · ${p.service.serviceState.state}`;
      if (p.service.serviceState.state === "Overloaded") n.g.classList.add("overloaded");
    }
    if (c.lost_queries) s += ` · LoST ${c.lost_queries}`;
    n.counters.textContent = s;
  }
}

// ------------------------------------------------------------------ ladder & inspector
function addOption(sel, value, label) {
  if (!value || sel.querySelector(`option[value="${CSS.escape(value)}"]`)) return;
  el("option", {value}, sel, label || value);
}
function rowVisible(r) {
  const fc = $("#f-call").value, fh = $("#f-hop").value, fe = $("#f-el").value;
  return (!fc || r.call === fc) && (!fh || r.hop === fh) && (!fe || r.from === fe || r.to === fe);
}
function addRow(f) {
  const tbody = $("#ladder tbody");
  const tr = el("tr", {"data-id": f.id, "data-hop": f.hop || "", "data-transport": f.transport, "data-type": f.type,
                       "data-call": f.call || "", class: "t-" + plain(f.transport)});
  el("td", {}, tr, fmtTime(f.ts));
  el("td", {}, tr, `${f.from} → ${f.to || "?"}`);
  el("td", {class: "hopcell t-" + plain(f.transport)}, tr, f.hop || "");
  el("td", {}, tr, f.transport.toUpperCase());
  el("td", {class: "line"}, tr, f.type === "lost" ? `LoST findService → ${f.result || ""}${f.cached ? " (cached)" : ""}` : f.line);
  el("td", {}, tr, f.type === "lost" ? `${f.request_bytes} / ${f.response_bytes}` : `${f.sip_bytes} / ${f.wire_bytes}`);
  tr.addEventListener("click", () => inspect(f.id, tr));
  f.tr = tr;
  tr.hidden = !rowVisible(f);
  tbody.appendChild(tr);
  state.rows.push(f);
  if (state.rows.length > state.maxRows) state.rows.shift().tr.remove();
  const sc = tbody.parentElement.parentElement;
  if (sc.scrollHeight - sc.scrollTop - sc.clientHeight < 60) sc.scrollTop = sc.scrollHeight;
  addOption($("#f-call"), f.call, f.call ? f.call.slice(0, 18) : "");
  addOption($("#f-hop"), f.hop);
  addOption($("#f-el"), f.from);
}
function refilter() { for (const r of state.rows) r.tr.hidden = !rowVisible(r); }

async function inspect(id, tr) {
  document.querySelectorAll("#ladder tr.selected").forEach((x) => x.classList.remove("selected"));
  if (tr) tr.classList.add("selected");
  const box = $("#inspector");
  let d;
  try { d = await getJSON(`/api/message/${id}`); } catch (e) { box.textContent = String(e); return; }
  box.innerHTML = "";
  const f = d.frame;
  const dl = el("dl", {}, box);
  const kv = (k, v) => { el("dt", {}, dl, k); el("dd", {}, dl, v); };
  kv("hop", `${f.hop || (f.type === "lost" ? "LoST" : "?")} (${f.from} → ${f.to || "?"})`);
  kv("transport", f.transport.toUpperCase() + (f.hop && state.mtls[f.hop] ? " (mutual TLS)" : ""));
  if (f.type === "lost") {
    kv("LoST query", f.url); kv("answer", String(f.result)); kv("ok", String(f.ok));
    kv("cached", String(f.cached)); kv("time", f.duration_ms + " ms");
    kv("bytes", `${f.request_bytes} request / ${f.response_bytes} response`);
    if (d.truncated) kv("shown", "the first 16 KB of each body");
    el("h3", {}, box, "findService request");
    el("pre", {class: "xml lost-request"}, box, d.request_xml || "(none: answered from the cache)");
    el("h3", {}, box, "answer");
    el("pre", {class: "xml lost-response"}, box, d.response_xml || "(none)");
    return;
  }
  kv("SIP bytes", String(f.sip_bytes));
  kv("on the wire", f.transport === "tls"
     ? `${f.wire_bytes} bytes of TLS records (+${d.tls_overhead}: headers, AEAD tags)` : `${f.wire_bytes}`);
  if (f.records && f.records.length) kv("TLS records", f.records.map((n) => n + " B").join(", "));
  if (d.ids) { kv("IncidentId", d.ids.incident_id || "—"); kv("CallId", d.ids.call_id || "—"); }
  if (d.geolocation) kv("Geolocation", d.geolocation);
  if (d.pidf) {
    el("h3", {}, box, "PIDF-LO");
    const pl = el("dl", {class: "pidf"}, box);
    const add = (k, v) => { el("dt", {}, pl, k); el("dd", {}, pl, v); };
    if (d.pidf.error) add("error", d.pidf.error);
    else {
      add("entity", d.pidf.entity);
      for (const l of d.pidf.locations) {
        add("shape", l.shape);
        if (l.lat !== undefined) add("coordinates", `${l.lat}, ${l.lon}`);
        if (l.radius_m !== undefined) add("uncertainty", `${l.radius_m} m`);
        if (l.fields) for (const [k, v] of Object.entries(l.fields)) add(k, v);
        if (l.method) add("method", l.method);
      }
    }
  }
  el("h3", {}, box, "As it crossed the hop");
  el("pre", {class: "sip"}, box, d.text || "");
}

// ------------------------------------------------------------------ statistics
function median(a) { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; }
function addStat(f) {
  if (f.setup_ms == null) return;
  const s = state.stats[f.scenario] = state.stats[f.scenario] || [];
  s.push(f);
  const tbody = $("#stats tbody");
  tbody.innerHTML = "";
  for (const [name, calls] of Object.entries(state.stats)) {
    const v = calls.map((c) => c.setup_ms);
    const tr = el("tr", {"data-scenario": name}, tbody);
    el("td", {}, tr, name); el("td", {}, tr, String(v.length));
    el("td", {}, tr, median(v).toFixed(2)); el("td", {}, tr, Math.min(...v).toFixed(2));
    el("td", {}, tr, Math.max(...v).toFixed(2));
    const last = el("td", {}, tr);
    for (const c of calls.slice(-8)) el("span", {class: c.cold ? "cold" : ""}, last, `${c.setup_ms.toFixed(1)}${c.cold ? " (cold)" : ""}  `);
  }
}

// ------------------------------------------------------------------ event stream
function onFrame(f) {
  if (f.type === "state") {
    state.lastState = f;
    if (f.ready) {
      renderTakers(f); renderCounters(f); renderTakersNote(f);
      if (state.topo && (f.finished !== state.topo.finished || f.remote !== state.topo.remote)) {
        state.topo.finished = f.finished; state.topo.remote = f.remote;
        $("#summary").textContent = state.topo.scenarios[state.topo.scenario] + modeNote(state.topo);
      }
    }
    if (f.hub) $("#hubstats").textContent = `viewers ${f.hub.viewers} · frames ${f.hub.frames} · dropped ${f.hub.viewer_dropped + f.hub.raw_dropped}`;
    return;
  }
  if (f.type === "msg" || f.type === "lost") {
    addRow(f);
    animate(f.from, f.to, f.transport);
    if (f.call && f.to) {
      // only calls light the route (not REGISTER, SUBSCRIBE, OPTIONS dialogs)
      if (!state.calls[f.call] && f.line && f.line.startsWith("INVITE ")) state.calls[f.call] = {edges: new Set(), active: true};
      const c = state.calls[f.call];
      if (c && c.active) { c.edges.add(f.from + "|" + f.to); relight(); }
    }
  } else if (f.type === "handshake") markMutual(f);
  else if (f.type === "call_done") {
    const c = state.calls[f.call_id];
    if (c) { c.active = false; relight(); }
    $("#lastcall").textContent = f.error ? `call failed: ${f.error}` :
      `call ${f.status} via ${f.psap || "?"}: set-up ${f.setup_ms} ms${f.cold ? " (cold)" : ""}`;
    addStat(f);
  }
}

function connect() {
  const es = new EventSource("/api/events");
  es.onopen = () => { $("#conn").textContent = "live"; $("#conn").className = "conn ok"; };
  es.onerror = () => { $("#conn").textContent = "reconnecting…"; $("#conn").className = "conn bad"; };
  es.onmessage = (m) => { try { onFrame(JSON.parse(m.data)); } catch (e) { console.warn(e); } };
  state.es = es;
}

async function loadTopology() {
  state.topo = await getJSON("/api/topology");
  // a console watching a run opens before the run's first chain is up: wait for it
  while (!state.topo.ready) {
    $("#summary").textContent = "waiting for the run's first chain…";
    await new Promise((r) => setTimeout(r, 500));
    state.topo = await getJSON("/api/topology");
  }
  const sel = $("#scenario");
  sel.innerHTML = "";
  for (const [n, summary] of Object.entries(state.topo.scenarios)) el("option", {value: n}, sel, `${n} (${summary})`);
  sel.value = state.topo.scenario;
  $("#summary").textContent = state.topo.scenarios[state.topo.scenario] + modeNote(state.topo);
  state.mtls = {};
  drawNetwork(state.topo);
}

async function main() {
  await loadTopology();
  state.boroughs = await getJSON("/api/boroughs");
  setupMap();
  for (const id of ["#f-call", "#f-hop", "#f-el"]) $(id).addEventListener("change", refilter);
  $("#clear").addEventListener("click", () => { state.rows.forEach((r) => r.tr.remove()); state.rows = []; });
  $("#scenario").addEventListener("change", async (ev) => {
    $("#summary").textContent = "restarting the chain…";
    try {
      await post("/api/scenario", {scenario: ev.target.value});
      $("#takers").innerHTML = ""; state.calls = {};
      await loadTopology();
    } catch (e) { $("#summary").textContent = String(e); }
  });
  connect();
  document.body.dataset.ready = "1";
}
main().catch((e) => { document.body.textContent = "console failed to start: " + e; });
