// mbus-slave live control page: polls /api/meters, sends changes to the JSON API, shows
// the bus trace from /api/trace (Server-Sent Events). No build step, no libraries.
"use strict";
const POLL_MS = 1000;
const TRACE_MAX = 300;
const TEMP_ERROR = 16;   // status bit 4: temporary error
const cards = new Map(); // "address/id" -> {el, meter}

function $(sel, root) { return (root || document).querySelector(sel); }

function showError(text) {
  const p = $("#error");
  p.textContent = text || "";
  p.hidden = !text;
}

async function api(method, path, body) {
  const opts = {method: method, headers: {}};
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || (method + " " + path + ": HTTP " + r.status));
  return data;
}

async function act(method, path, body) {
  try {
    await api(method, path, body);
    showError("");
    await refresh();
  } catch (e) {
    showError(e.message);
  }
}

function fmt(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(+v.toPrecision(10));
  return v === null || v === undefined ? "" : String(v);
}

function makeCard(m) {
  const el = $("#card-tpl").content.firstElementChild.cloneNode(true);
  const a = () => el.dataset.address;
  $(".btn-status", el).onclick = () => {
    const st = +el.dataset.status;
    act("PATCH", "/api/meters/" + a(), {status: st & TEMP_ERROR ? st & ~TEMP_ERROR : st | TEMP_ERROR});
  };
  $(".btn-alarm", el).onclick = () =>
    act("PATCH", "/api/meters/" + a(), {alarm: el.dataset.alarm !== "1"});
  $(".btn-plug", el).onclick = () =>
    act("PATCH", "/api/meters/" + a(), {present: el.dataset.present !== "1"});
  $(".fault-on", el).onchange = (ev) => {
    if (ev.target.checked) {
      act("POST", "/api/meters/" + a() + "/faults", {fault: $(".fault-kind", el).value});
    } else {
      act("DELETE", "/api/meters/" + a() + "/faults");
    }
  };
  const tbody = $("tbody", el);
  m.records.forEach((r) => {
    const tr = document.createElement("tr");
    tr.dataset.index = r.index;
    tr.innerHTML = '<td class="q"></td><td class="value"></td><td class="set"></td>';
    $(".q", tr).textContent = r.quantity || ("record " + r.index);
    if (r.settable) {
      const inp = document.createElement("input");
      inp.className = "set-input";
      inp.inputMode = "decimal";
      inp.setAttribute("aria-label", "new value of record " + r.index);
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "set-btn";
      btn.textContent = "Set";
      const send = () => {
        const text = inp.value.trim();
        if (!text) return;
        const n = Number(text);
        act("PUT", "/api/meters/" + a() + "/records/" + r.index,
            {value: Number.isFinite(n) ? n : text}).then(() => { inp.value = ""; });
      };
      btn.onclick = send;
      inp.onkeydown = (ev) => { if (ev.key === "Enter") send(); };
      $(".set", tr).append(inp, btn);
    }
    tbody.append(tr);
  });
  return el;
}

function update(el, m) {
  el.dataset.address = m.address;
  el.dataset.status = m.status;
  el.dataset.alarm = m.alarm ? "1" : "0";
  el.dataset.present = m.present ? "1" : "0";
  el.classList.toggle("unplugged", !m.present);
  el.classList.toggle("alarm", !!m.alarm);
  $(".title", el).textContent = (m.name ? m.name + " · " : "") + "address " + m.address;
  const state = $(".state", el);
  const err = m.status & TEMP_ERROR;
  state.textContent = !m.present ? "unplugged" : (m.alarm ? "alarm pending" :
    (err ? "status 0x" + m.status.toString(16).padStart(2, "0") : "ok"));
  state.className = "badge state " + (!m.present ? "off" : (m.alarm ? "bad" : (err ? "warn" : "ok")));
  $(".ident", el).textContent = "ID " + m.id + " · " + m.manufacturer + " · " + m.medium;
  m.records.forEach((r) => {
    const tr = $('tr[data-index="' + r.index + '"]', el);
    if (!tr) return;
    $(".value", tr).textContent = r.error ? "error" : fmt(r.value) + " " + (r.unit || "");
  });
  $(".btn-status", el).textContent = err ? "Clear error status" : "Set error status";
  $(".btn-status", el).classList.toggle("on", !!err);
  $(".btn-alarm", el).textContent = m.alarm ? "Clear alarm" : "Raise alarm";
  $(".btn-alarm", el).classList.toggle("on", !!m.alarm);
  $(".btn-plug", el).textContent = m.present ? "Unplug" : "Plug in";
  const runtime = m.faults.filter((f) => f.runtime);
  $(".fault-on", el).checked = runtime.length > 0;
  $(".fault-text", el).textContent = m.faults.map((f) => f.spec + " (fired " + f.fired + ")").join(", ");
  const c = m.counters;
  $(".counters", el).textContent = "requests " + c.requests + " · replies " + c.replies +
    " · repeats " + c.repeats + " · errors " + c.errors;
}

async function refresh() {
  let meters;
  try {
    meters = await api("GET", "/api/meters");
  } catch (e) {
    $("#conn").textContent = "offline";
    $("#conn").className = "badge off";
    return;
  }
  $("#conn").textContent = meters.length + " meter" + (meters.length === 1 ? "" : "s");
  $("#conn").className = "badge ok";
  const box = $("#meters");
  const seen = new Set();
  meters.forEach((m) => {
    const key = m.address + "/" + m.id + "/" + m.records.length;
    seen.add(key);
    let card = cards.get(key);
    if (!card) {
      card = makeCard(m);
      cards.set(key, card);
      box.append(card);
    }
    update(card, m);
  });
  for (const [key, el] of cards) {
    if (!seen.has(key)) { el.remove(); cards.delete(key); }
  }
}

function startTrace() {
  const list = $("#trace");
  const es = new EventSource("/api/trace");
  es.onmessage = (ev) => {
    if ($("#trace-pause").checked) return;
    const f = JSON.parse(ev.data);
    const li = document.createElement("li");
    li.className = f.dir;
    li.innerHTML = '<span class="t"></span><span class="d"></span><span class="s"></span><span class="x"></span>';
    $(".t", li).textContent = f.iso;
    $(".d", li).textContent = f.dir;
    $(".s", li).textContent = f.text + (f.peer ? " [" + f.peer + "]" : "");
    $(".x", li).textContent = f.hex;
    list.prepend(li);
    while (list.children.length > TRACE_MAX) list.lastChild.remove();
  };
  $("#trace-clear").onclick = () => { list.textContent = ""; };
}

refresh();
setInterval(refresh, POLL_MS);
startTrace();
