// gancli explore: the page. Every image is rendered by the server (the same functions as
// `gancli sample`); this script only keeps the state, asks for images, and shows them.
// It loads nothing from the network: the server's Content-Security-Policy forbids it anyway.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STRIP = 9;                 // images in a strip of neighbours (an odd number: current in the middle)

  let info = null;                 // /api/info: checkpoints, the latent spec, strip geometry
  const state = { ckpt: null, ema: true, seed: 0, truncation: "1", codes: {}, along: "seed", lockZ: false };
  let pending = false;             // a change arrived while a request was under way
  let inflight = false;
  let rendered = 0;                // images shown so far (tests wait on it)
  let stripValues = [];
  let imageURL = null, stripURL = null;

  // ------------------------------------------------------------------ requests
  function query(extra) {
    const p = new URLSearchParams();
    p.set("seed", String(state.seed));
    p.set("ckpt", state.ckpt);
    p.set("ema", state.ema ? "1" : "0");
    if (Number(state.truncation) !== 1) p.set("truncation", state.truncation);
    for (const c of info.spec.codes) p.set(c.name, state.codes[c.name]);
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return p.toString();
  }

  async function failure(r) {
    try { return new Error((await r.json()).error || r.statusText); }
    catch (e) { return new Error(`${r.status} ${r.statusText}`); }
  }

  async function getJSON(url) {
    const r = await fetch(url);
    if (!r.ok) throw await failure(r);
    return r.json();
  }

  async function getPNG(url) {
    const r = await fetch(url);
    if (!r.ok) throw await failure(r);
    const timing = /dur=([0-9.]+)/.exec(r.headers.get("Server-Timing") || "");
    return { blob: await r.blob(), server: timing ? Number(timing[1]) : NaN };
  }

  function say(text, bad) {
    $("status").textContent = text;
    $("status").classList.toggle("bad", !!bad);
  }

  function busy(on) { document.body.dataset.busy = on ? "1" : "0"; }

  // A change asks for a render; changes that arrive while one is under way fold into the next,
  // so a slider dragged fast costs one request at a time and ends on its last value.
  function changed() {
    pending = true;
    if (!inflight) pump();
  }

  async function pump() {
    inflight = true;
    busy(true);
    while (pending) {
      pending = false;
      const q = query();
      try {
        const t0 = performance.now();
        const { blob, server } = await getPNG("/api/image?" + q);
        const ms = performance.now() - t0;
        if (imageURL) URL.revokeObjectURL(imageURL);
        imageURL = URL.createObjectURL(blob);
        await show($("image"), imageURL);
        $("image").dataset.query = q;
        $("save").href = imageURL;
        $("save").download = fileName();
        rendered += 1;
        say(`image in ${ms.toFixed(0)} ms (rendering ${server.toFixed(1)} ms on ${info.device})`);
        if (!pending) await strip();
        if (!pending) await command(q);
      } catch (e) {
        say("error: " + e.message, true);
      }
    }
    inflight = false;
    busy(false);
  }

  function show(img, url) {
    return new Promise((resolve) => {
      img.onload = () => resolve();
      img.onerror = () => resolve();
      img.src = url;
    });
  }

  // ------------------------------------------------------------------ the strip
  function code(name) { return info.spec.codes.find((c) => c.name === name); }

  function number(x) {
    const t = String(Number(x.toFixed(4)));
    return t === "-0" ? "0" : t;
  }

  function neighbours() {
    const name = state.along;
    if (name === "seed") {
      const lo = Math.max(0, Math.min(state.seed - (STRIP >> 1), info.seed_max - STRIP + 1));
      return Array.from({ length: STRIP }, (_, i) => String(lo + i));
    }
    const c = code(name);
    if (c.kind === "categorical") {
      if (c.size <= 16) return Array.from({ length: c.size }, (_, i) => String(i));
      const cur = Number(state.codes[name]);
      const lo = Math.max(0, Math.min(cur - (STRIP >> 1), c.size - STRIP));
      return Array.from({ length: STRIP }, (_, i) => String(lo + i));
    }
    const cur = Number(state.codes[name]);
    const d = (c.high - c.low) / (STRIP - 1);
    const lim = info.max_value;
    return Array.from({ length: STRIP }, (_, i) =>
      number(Math.max(-lim, Math.min(lim, cur + (i - (STRIP >> 1)) * d))));
  }

  function current() {
    return state.along === "seed" ? String(state.seed) : String(state.codes[state.along]);
  }

  async function strip() {
    stripValues = neighbours();
    $("along").textContent = state.along === "seed" ? "the seed" : state.along;
    const { blob } = await getPNG("/api/strip?" + query({ along: state.along, values: stripValues.join(",") }));
    if (stripURL) URL.revokeObjectURL(stripURL);
    stripURL = URL.createObjectURL(blob);
    await show($("strip"), stripURL);
    mark();
  }

  function geometry() {
    const { cell, padding } = info.strip;
    return { cell, padding, width: padding + stripValues.length * (cell + padding) };
  }

  function mark() {
    const m = $("marker");
    let i = stripValues.indexOf(current());
    if (i < 0 && state.along !== "seed" && code(state.along).kind === "continuous") {
      i = stripValues.map(Number).indexOf(Number(current()));
    }
    if (i < 0) { m.style.display = "none"; return; }
    const g = geometry();
    m.style.display = "block";
    m.style.left = (100 * (g.padding / 2 + i * (g.cell + g.padding)) / g.width) + "%";
    m.style.width = (100 * (g.cell + g.padding) / g.width) + "%";
  }

  function pickFromStrip(ev) {
    if (!stripValues.length) return;
    const g = geometry();
    const x = (ev.offsetX / $("strip").clientWidth) * g.width;
    const i = Math.max(0, Math.min(stripValues.length - 1, Math.floor((x - g.padding / 2) / (g.cell + g.padding))));
    const v = stripValues[i];
    if (state.along === "seed") state.seed = Number(v);
    else state.codes[state.along] = v;
    sync();
    changed();
  }

  // ------------------------------------------------------------------ the command line
  async function command(q) {
    const body = await getJSON("/api/command?" + q);
    $("command").value = body.command;
  }

  async function copy() {
    const text = $("command").value;
    try {
      await navigator.clipboard.writeText(text);
      say("copied: " + text);
    } catch (e) {       // no clipboard API (a page not on localhost): select it for Ctrl-C
      $("command").select();
      const ok = document.execCommand && document.execCommand("copy");
      say(ok ? "copied: " + text : "select the command and copy it (Ctrl-C)");
    }
  }

  function fileName() {
    const parts = [`seed${state.seed}`, ...(Number(state.truncation) !== 1 ? [`psi${state.truncation}`] : []), ...info.spec.codes.map((c) => `${c.name}=${state.codes[c.name]}`)];
    return ("gancli-" + parts.join("-")).replace(/[^A-Za-z0-9._=-]+/g, "_") + ".png";
  }

  // ------------------------------------------------------------------ controls
  function buildControls() {
    const box = $("codes");
    box.replaceChildren(Object.assign(document.createElement("legend"), { textContent: "codes" }));
    if (!info.spec.codes.length) {
      box.append(Object.assign(document.createElement("p"), {
        className: "none", textContent: "this model has no codes: the seed picks the noise, and that is all" }));
    }
    for (const c of info.spec.codes) {
      const row = document.createElement("div");
      row.className = "code-row";
      const name = Object.assign(document.createElement("label"), {
        className: "name", textContent: c.name,
        title: c.role === "label" ? "the class (a conditional model's label)" : `${c.kind} code` });
      row.append(name);
      if (c.kind === "categorical") {
        const sel = document.createElement("select");
        sel.id = "code-" + c.name;
        name.htmlFor = sel.id;
        for (let i = 0; i < c.size; i++) {
          const label = c.names.length ? `${i} · ${c.names[i]}` : String(i);
          sel.append(new Option(label, String(i)));
        }
        sel.addEventListener("change", () => {
          state.codes[c.name] = sel.value;
          state.along = c.name;
          changed();
        });
        row.append(sel);
      } else {
        const span = c.high - c.low;
        const slider = Object.assign(document.createElement("input"), {
          type: "range", id: "code-" + c.name, min: String(c.low - span / 2), max: String(c.high + span / 2), step: "0.01" });
        const num = Object.assign(document.createElement("input"), {
          type: "number", id: "num-" + c.name, step: "any" });
        name.htmlFor = slider.id;
        slider.addEventListener("input", () => {
          state.codes[c.name] = slider.value;
          num.value = slider.value;
          state.along = c.name;
          changed();
        });
        num.addEventListener("change", () => {
          if (num.value.trim() === "" || !isFinite(Number(num.value))) { say("error: " + c.name + " takes a number", true); return; }
          state.codes[c.name] = num.value.trim();
          slider.value = num.value;
          state.along = c.name;
          changed();
        });
        const range = Object.assign(document.createElement("span"), {
          className: "range", textContent: `trained on ${c.low}..${c.high}; the slider goes past it` });
        row.append(slider, num, range);
      }
      box.append(row);
    }
    sync();
  }

  // Put the state into the controls (after a new draw, a strip click, a checkpoint switch).
  function sync() {
    $("seed").value = String(state.seed);
    $("truncation").value = state.truncation;
    $("num-truncation").value = state.truncation;
    $("ema").checked = state.ema;
    const ck = info.checkpoints.find((k) => k.id === state.ckpt);
    $("ema").disabled = !(ck && ck.ema);
    for (const c of info.spec.codes) {
      const el = $("code-" + c.name);
      el.value = state.codes[c.name];
      if (c.kind !== "categorical") $("num-" + c.name).value = state.codes[c.name];
    }
  }

  function checkpoints() {
    const sel = $("ckpt");
    sel.replaceChildren(...info.checkpoints.map((k) =>
      new Option(k.label + (k.id === info.default ? " (newest)" : "") + (k.ema ? "" : " · no EMA"), k.id)));
    sel.value = state.ckpt;
  }

  function header() {
    $("run").textContent = `${info.run} · ${info.model} · ${info.image_size} px · step ${info.step.toLocaleString()}`
      + (info.ema ? " (EMA)" : " (raw generator)");
  }

  async function drawCodes() {
    const body = await getJSON("/api/draw?" + query());
    Object.assign(state.codes, body.codes);
  }

  function randomCodes() {
    for (const c of info.spec.codes) {
      state.codes[c.name] = c.kind === "categorical"
        ? String(Math.floor(Math.random() * c.size))
        : number(c.low + Math.random() * (c.high - c.low));
    }
  }

  async function switchCheckpoint() {
    try {
      const was = JSON.stringify(info.spec);
      info = await getJSON("/api/info?" + new URLSearchParams({ ckpt: state.ckpt, ema: state.ema ? "1" : "0" }));
      header();
      checkpoints();
      if (JSON.stringify(info.spec) !== was) {   // another spec: start from this seed's codes
        state.codes = {};
        await drawCodes();
        if (state.along !== "seed" && !code(state.along)) state.along = firstAlong();
        buildControls();
      } else {
        sync();
      }
      changed();
    } catch (e) {
      say("error: " + e.message, true);
    }
  }

  function firstAlong() {
    const codes = info.spec.codes;
    const c = codes.find((k) => k.kind === "continuous") || codes.find((k) => k.role !== "label") || codes[0];
    return c ? c.name : "seed";
  }

  function wire() {
    $("ckpt").addEventListener("change", () => { state.ckpt = $("ckpt").value; switchCheckpoint(); });
    $("ckpt").addEventListener("focus", async () => {   // a run still training: its new checkpoints
      try {
        const fresh = await getJSON("/api/info");
        if (JSON.stringify(fresh.checkpoints) !== JSON.stringify(info.checkpoints)) {
          info.checkpoints = fresh.checkpoints;
          info.default = fresh.default;
          checkpoints();
        }
      } catch (e) { say("error: " + e.message, true); }
    });
    $("ema").addEventListener("change", () => { state.ema = $("ema").checked; switchCheckpoint(); });
    $("seed").addEventListener("change", () => {
      const t = $("seed").value.trim();
      if (!/^[0-9]{1,10}$/.test(t) || Number(t) > info.seed_max) {
        say(`error: the seed is an integer 0..${info.seed_max}`, true);
        return;
      }
      state.seed = Number(t);
      state.along = "seed";
      changed();
    });
    $("truncation").addEventListener("input", () => {
      state.truncation = $("truncation").value;
      $("num-truncation").value = state.truncation;
      changed();
    });
    $("num-truncation").addEventListener("change", () => {
      const t = $("num-truncation").value.trim();
      if (!(Number(t) > 0 && Number(t) <= info.max_truncation)) {
        say(`error: truncation takes a number in (0, ${info.max_truncation}]`, true);
        return;
      }
      state.truncation = t;
      $("truncation").value = t;
      changed();
    });
    $("lockz").addEventListener("change", () => { state.lockZ = $("lockz").checked; });
    $("draw").addEventListener("click", () => {
      if (state.lockZ) randomCodes();         // the noise stays; the codes are drawn anew
      else {                                  // a new noise draw; the codes stay as set
        let s;
        do { s = Math.floor(Math.random() * 1e6); } while (s === state.seed);
        state.seed = s;
      }
      sync();
      changed();
    });
    $("from-seed").addEventListener("click", async () => {
      try { await drawCodes(); sync(); changed(); } catch (e) { say("error: " + e.message, true); }
    });
    $("strip").addEventListener("click", pickFromStrip);
    $("copy").addEventListener("click", copy);
  }

  async function start() {
    try {
      info = await getJSON("/api/info");
      state.ckpt = info.checkpoint;
      state.ema = true;
      state.truncation = String(info.truncation);
      await drawCodes();                      // seed 0's own codes: the page opens on `sample --n 1 --seed 0`
      state.along = firstAlong();
      header();
      checkpoints();
      buildControls();
      wire();
      changed();
    } catch (e) {
      busy(false);
      say("error: " + e.message, true);
    }
  }

  // For tests and the curious: the state, and whether the page has settled.
  window.explore = {
    state,
    idle: () => !inflight && !pending,
    rendered: () => rendered,
    query: () => query(),
  };
  start();
})();
