/* mnerqg report: draws the page from its embedded data (no network, no libraries).
 *
 * Data layout: mnerqg_graph/report/data.py. Test hooks: the hash
 * #kind=K&type=T&q=TEXT&select=ID&graph=TYPE sets the view; <html data-ready="1"
 * data-ready-ms="..."> once drawn, data-painted-ms once that is painted; <pre id="test-state">
 * holds the state as JSON.
 */
"use strict";
(function () {
  const errors = [];
  window.addEventListener("error", (e) => errors.push(String(e.message || e)));
  window.addEventListener("unhandledrejection", (e) => errors.push("unhandled rejection: " + e.reason));
  const consoleError = console.error.bind(console);
  console.error = function (...args) {
    errors.push(args.map(String).join(" "));
    consoleError(...args);
  };

  const VERSION = 1;
  const PAGE = 100; // tweets added to the list at a time
  const TOP_EDGES = 12; // strongest token-region edges drawn per scale
  const IMAGE_PX = 280; // longest side of the selected tweet's picture on screen
  const KIND_FILTERS = [
    ["all", "all"],
    ["errors", "with errors"],
    ["clean", "no errors"],
    ["correct", "correct"],
    ["missed", "missed"],
    ["wrong_type", "wrong type"],
    ["boundary", "wrong boundary"],
    ["spurious", "spurious"],
  ];
  const KIND_LABEL = Object.fromEntries(KIND_FILTERS);
  const BASE_COLORS = { PER: "#2f6fdb", LOC: "#1a9e5a", ORG: "#d4452b", OTHER: "#8b4fd1" };
  const EXTRA_COLORS = ["#c08a00", "#0f8a8a", "#b8377d", "#5a6b7b", "#6b8e23", "#a0522d"];
  const SVGNS = "http://www.w3.org/2000/svg";

  let DATA = null;
  let META = null;
  const colorOf = {};
  const state = { kind: "all", type: "", query: "", shown: PAGE, matches: [], selected: null, graphType: null };

  // ------------------------------------------------------------------ helpers
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }
  function s(tag, attrs, ...children) {
    const node = document.createElementNS(SVGNS, tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
  }
  function svgTitle(text) {
    return s("title", { text: text });
  }
  const pct = (x) => (100 * x).toFixed(2);
  function color(type) {
    if (!(type in colorOf)) {
      colorOf[type] = BASE_COLORS[type] || EXTRA_COLORS[Object.keys(colorOf).length % EXTRA_COLORS.length];
    }
    return colorOf[type];
  }
  function tint(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }
  function badge(kind) {
    return h("span", { class: "badge " + kind, text: KIND_LABEL[kind] || kind });
  }

  // ------------------------------------------------------------------ data
  function prepare() {
    for (const t of META.types) color(t);
    DATA.tweets.forEach((t, i) => {
      t.index = i;
      t.search = (t.id + " " + t.tokens.join(" ")).toLowerCase();
      t.typeSet = new Set(t.types);
      t.pairs = new Set();
      t.hasError = t.kinds.some((k) => k !== "correct");
      const add = (kind, type) => {
        t.pairs.add(kind + "|" + type);
        t.pairs.add(kind + "|*");
        if (kind !== "correct") t.pairs.add("error|" + type);
        color(type);
      };
      for (const g of t.gold) add(g.kind, g.type);
      t.entities.forEach((e, k) => add(t.pred_kinds[k], e.type));
    });
  }

  function matches(t, kind, type, query) {
    if (query && !t.search.includes(query)) return false;
    if (kind === "all") return !type || t.typeSet.has(type);
    if (kind === "errors") return type ? t.pairs.has("error|" + type) : t.hasError;
    if (kind === "clean") return type ? t.typeSet.has(type) && !t.pairs.has("error|" + type) : !t.hasError;
    return t.pairs.has(kind + "|" + (type || "*"));
  }

  // ------------------------------------------------------------------ header and scores
  function renderHeader() {
    const m = META;
    const parts = [
      m.split ? "split " + m.split : null,
      `${m.n_tweets} tweets (${m.n_images} with an image)`,
      m.checkpoint ? "checkpoint " + m.checkpoint : null,
      m.data ? "data " + m.data : null,
      `fusion ${m.fusion}`,
      `decoder ${m.decoder} (span ${m.span_threshold}, existence ${m.existence_threshold})`,
      m.query_encoding ? "queries " + m.query_encoding : null,
      m.limit ? "first " + m.limit + " tweets" : null,
      m.created ? "made " + m.created : null,
    ];
    const meta = document.getElementById("meta");
    for (const p of parts) if (p) meta.appendChild(h("span", { text: p }));
  }

  function metric(label, value, sub) {
    return h("div", { class: "metric" }, h("b", { text: value }), h("small", { text: label + (sub ? " " + sub : "") }));
  }

  function renderScores() {
    const sc = DATA.scores;
    const sum = sc.summary;
    const box = document.getElementById("scores");
    const head = h("div", { class: "headline" });
    const micro = sc.entity.micro;
    head.append(metric("entity F1", pct(micro.f1)), metric("precision", pct(micro.precision)), metric("recall", pct(micro.recall)));
    if ("grounding_acc" in sum) {
      const gc = sc.grounding_cases;
      head.append(
        metric("grounding acc", gc.boxed ? pct(sum.grounding_acc) : "–", `(${gc.boxed} with a box)`),
        metric("none acc", gc.none ? pct(sum.none_acc) : "–", `(${gc.none} without)`),
        metric("grounded-NER F1", pct(sum.grounded_f1))
      );
    }
    if ("ambiguous_f1" in sum) head.append(metric("ambiguous F1", pct(sum.ambiguous_f1)));
    box.appendChild(h("div", { class: "wide" }, h("h2", { text: "Scores (%)" }), head));

    const table = h("table", { class: "grid", id: "type-scores" });
    table.appendChild(h("tr", {}, ...["type", "P", "R", "F1", "support"].map((x) => h("th", { text: x }))));
    const row = (name, p, cls) =>
      h("tr", { class: cls || null, dataset: { type: name } }, h("td", { text: name }), h("td", { text: pct(p.precision) }), h("td", { text: pct(p.recall) }), h("td", { text: pct(p.f1) }), h("td", { text: p.support }));
    for (const [name, p] of Object.entries(sc.entity.per_type)) table.appendChild(row(name, p));
    table.appendChild(row("micro", micro, "micro"));
    box.appendChild(h("div", {}, h("h2", { text: "Per type" }), table));

    const cf = sc.confusion;
    const conf = h("table", { class: "grid confusion", id: "confusion" });
    conf.appendChild(h("tr", {}, h("th", { text: "gold \\ predicted" }), ...cf.cols.map((c) => h("th", { text: c }))));
    cf.rows.forEach((r, i) => {
      const tr = h("tr", {}, h("th", { text: r }));
      cf.cols.forEach((c, j) => {
        const n = cf.counts[i][j];
        const cls = n === 0 ? "zero" : r === c ? "diag" : "off";
        tr.appendChild(h("td", { class: cls, text: n }));
      });
      conf.appendChild(tr);
    });
    conf.appendChild(h("caption", { text: "Exact spans. A gold entity whose span no prediction has is missed, a prediction whose span no gold entity has is spurious (a wrong boundary counts in both)." }));
    box.appendChild(h("div", {}, h("h2", { text: "Type confusion (entities)" }), conf));

    const er = sc.errors;
    const errs = h("table", { class: "grid", id: "error-counts" });
    errs.appendChild(h("tr", {}, h("th", { text: "entities" }), h("th", { text: "count" })));
    for (const [k, label] of [["correct", "correct"], ["missed", "gold missed"], ["wrong_type", "gold with wrong type"], ["boundary", "gold with wrong boundary"], ["spurious", "spurious predictions"]]) {
      errs.appendChild(h("tr", {}, h("td", {}, badge(k), " " + label), h("td", { text: er[k] })));
    }
    box.appendChild(h("div", {}, h("h2", { text: "Errors" }), errs));
  }

  // ------------------------------------------------------------------ controls and list
  function renderControls() {
    const kinds = document.getElementById("kind-filter");
    for (const [k, label] of KIND_FILTERS) {
      kinds.appendChild(
        h("button", { type: "button", dataset: { kind: k }, onclick: () => setFilter({ kind: k }) }, label, h("span", { class: "n" }))
      );
    }
    const sel = document.getElementById("type-filter");
    sel.appendChild(h("option", { value: "", text: "any" }));
    for (const t of Object.keys(colorOf)) sel.appendChild(h("option", { value: t, text: t }));
    sel.addEventListener("change", () => setFilter({ type: sel.value }));
    const search = document.getElementById("search");
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => setFilter({ query: search.value.trim().toLowerCase() }), 120);
    });
    document.getElementById("more").addEventListener("click", () => {
      state.shown += PAGE;
      renderList();
      writeState();
    });
    const legend = document.getElementById("legend");
    legend.appendChild(h("span", { text: "underline: gold · background: predicted" }));
    for (const t of Object.keys(colorOf)) {
      legend.appendChild(h("span", {}, h("span", { class: "swatch", style: `background:${color(t)}` }), t));
    }
    document.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.key === "j" || e.key === "ArrowDown") step(1);
      else if (e.key === "k" || e.key === "ArrowUp") step(-1);
      else return;
      e.preventDefault();
    });
  }

  function setFilter(change) {
    Object.assign(state, change);
    state.shown = PAGE;
    applyFilter();
    writeHash();
    writeState();
  }

  function applyFilter() {
    const { kind, type, query } = state;
    state.matches = [];
    for (const t of DATA.tweets) if (matches(t, kind, type, query)) state.matches.push(t.index);
    for (const b of document.querySelectorAll("#kind-filter button")) {
      const k = b.dataset.kind;
      b.setAttribute("aria-pressed", String(k === kind));
      let n = 0;
      for (const t of DATA.tweets) if (matches(t, k, type, query)) n++;
      b.querySelector(".n").textContent = String(n);
    }
    document.getElementById("type-filter").value = type;
    const search = document.getElementById("search");
    if (search.value.trim().toLowerCase() !== query) search.value = query;
    renderList();
  }

  function renderList() {
    const list = document.getElementById("tweets");
    list.textContent = "";
    const frag = document.createDocumentFragment();
    for (const i of state.matches.slice(0, state.shown)) frag.appendChild(tweetRow(DATA.tweets[i]));
    list.appendChild(frag);
    const left = state.matches.length - Math.min(state.shown, state.matches.length);
    const more = document.getElementById("more");
    more.hidden = left <= 0;
    more.textContent = `show ${Math.min(PAGE, left)} more (${left} left)`;
    document.getElementById("count").textContent = `${state.matches.length} of ${DATA.tweets.length} tweets`;
  }

  function tweetRow(t) {
    const li = h(
      "li",
      { class: "tweet" + (state.selected === t.index ? " selected" : ""), dataset: { id: t.id, index: t.index }, onclick: () => select(t.index) },
      h("div", { class: "head" }, h("span", { text: t.id }), ...t.kinds.map(badge), t.image ? h("span", { text: "image", title: "has an image" }) : null),
      textMarkup(t)
    );
    return li;
  }

  function textMarkup(t, large) {
    const n = t.tokens.length;
    const gold = new Array(n).fill(null);
    const pred = new Array(n).fill(null);
    for (const g of t.gold) for (let i = g.start; i < g.end; i++) gold[i] = { e: g, first: i === g.start };
    t.entities.forEach((e, k) => {
      for (let i = e.start; i < e.end; i++) pred[i] = { e: e, kind: t.pred_kinds[k], first: i === e.start };
    });
    const div = h("div", { class: "text" + (large ? " text-large" : "") });
    t.tokens.forEach((tok, i) => {
      if (i) div.appendChild(document.createTextNode(" "));
      const g = gold[i];
      const p = pred[i];
      const cls = ["tok"];
      const style = [];
      const tip = [];
      if (g) {
        cls.push("g");
        if (g.first) cls.push("gb");
        style.push(`--c-gold:${color(g.e.type)}`);
        tip.push(`gold ${g.first ? "B" : "I"}-${g.e.type} (${KIND_LABEL[g.e.kind] || g.e.kind})`);
      }
      if (p) {
        cls.push("p");
        style.push(`--c-pred:${tint(color(p.e.type), 0.22)}`);
        tip.push(`predicted ${p.first ? "B" : "I"}-${p.e.type} ${p.e.score.toFixed(2)} (${KIND_LABEL[p.kind] || p.kind})`);
      }
      div.appendChild(h("span", { class: cls.join(" "), style: style.join(";") || null, title: tip.join("\n") || null, text: tok }));
    });
    return div;
  }

  // ------------------------------------------------------------------ selection and detail
  function step(delta) {
    if (!state.matches.length) return;
    const at = state.matches.indexOf(state.selected);
    const next = at < 0 ? 0 : Math.max(0, Math.min(state.matches.length - 1, at + delta));
    if (next >= state.shown) {
      state.shown = next + 1;
      renderList();
    }
    select(state.matches[next], true);
  }

  function select(index, scroll) {
    state.selected = index;
    for (const li of document.querySelectorAll("li.tweet.selected")) li.classList.remove("selected");
    const li = document.querySelector(`li.tweet[data-index="${index}"]`);
    if (li) {
      li.classList.add("selected");
      if (scroll) li.scrollIntoView({ block: "nearest" });
    }
    const t = DATA.tweets[index];
    if (!state.graphType || !META.types.includes(state.graphType)) state.graphType = null;
    renderDetail(t);
    writeHash();
    writeState();
  }

  function renderDetail(t) {
    const box = document.getElementById("detail");
    box.textContent = "";
    const at = state.matches.indexOf(t.index);
    box.appendChild(
      h(
        "div",
        { class: "bar" },
        h("button", { type: "button", onclick: () => step(-1), title: "previous (k)", text: "‹ prev" }),
        h("button", { type: "button", onclick: () => step(1), title: "next (j)", text: "next ›" }),
        h("span", { class: "id", text: t.id }),
        h("span", { class: "note", text: at >= 0 ? `${at + 1} of ${state.matches.length} shown` : "not in the filtered list" }),
        ...t.kinds.map(badge)
      )
    );
    box.appendChild(textMarkup(t, true));
    box.appendChild(h("div", { class: "side-by-side" }, entityTable(t), imagePanel(t)));
    box.appendChild(graphPanel(t));
  }

  function entityTable(t) {
    const table = h("table", { class: "grid entities" });
    table.appendChild(h("tr", {}, ...["", "entity", "type", "kind", "score"].map((x) => h("th", { text: x }))));
    for (const g of t.gold) {
      table.appendChild(h("tr", {}, h("td", { text: "gold" }), h("td", { text: t.tokens.slice(g.start, g.end).join(" ") }), h("td", { text: g.type, style: `color:${color(g.type)}` }), h("td", { class: "kind" }, badge(g.kind)), h("td", { text: "" })));
    }
    t.entities.forEach((e, k) => {
      table.appendChild(h("tr", {}, h("td", { text: "predicted" }), h("td", { text: e.text }), h("td", { text: e.type, style: `color:${color(e.type)}` }), h("td", { class: "kind" }, badge(t.pred_kinds[k])), h("td", { text: e.score.toFixed(3) })));
    });
    if (!t.gold.length && !t.entities.length) table.appendChild(h("tr", {}, h("td", { colspan: 5, class: "note", text: "no gold and no predicted entity" })));
    return h("section", {}, h("h3", { text: "Entities" }), table);
  }

  function imagePanel(t) {
    const sec = h("section", {}, h("h3", { text: "Image and boxes" }));
    if (!t.image || !t.size) {
      sec.appendChild(h("p", { class: "note", text: "no image: the tweet ran text-only" }));
      return sec;
    }
    const [w, hgt] = t.size;
    const overlay = s("svg", { viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", class: "boxes" });
    const stroke = Math.max(w, hgt) / 150;
    const types = META.types.filter((ty) => t.gold_boxes[ty] || t.boxes[ty]);
    for (const ty of types) {
      const grp = s("g", { "data-type": ty });
      for (const b of t.gold_boxes[ty] || []) {
        grp.appendChild(s("rect", { x: b[0], y: b[1], width: b[2] - b[0], height: b[3] - b[1], fill: "none", stroke: color(ty), "stroke-width": stroke, "stroke-dasharray": `${3 * stroke} ${2 * stroke}` }, svgTitle(`gold ${ty}`)));
      }
      const p = t.boxes[ty];
      if (p) {
        const b = p.box;
        grp.appendChild(s("rect", { x: b[0], y: b[1], width: b[2] - b[0], height: b[3] - b[1], fill: tint(color(ty), 0.12), stroke: color(ty), "stroke-width": stroke }, svgTitle(`predicted ${ty} ${p.confidence.toFixed(2)}`)));
        grp.appendChild(s("text", { x: b[0] + stroke, y: b[1] + 9 * stroke, fill: color(ty), "font-size": 8 * stroke, "font-weight": "bold", text: `${ty} ${p.confidence.toFixed(2)}` }));
      }
      overlay.appendChild(grp);
    }
    const wrap = h("div", { class: "imgwrap" }, h("img", { src: t.image, alt: "image of " + t.id, style: `aspect-ratio:${w}/${hgt};width:${w >= hgt ? IMAGE_PX : Math.round((IMAGE_PX * w) / hgt)}px` }), overlay);
    const toggles = h("div", { class: "typetoggles" }, h("div", { text: "dashed: gold, solid: predicted (confidence)" }));
    for (const ty of types) {
      const cb = h("input", { type: "checkbox", checked: "checked", onchange: (e) => overlay.querySelector(`g[data-type="${ty}"]`).style.display = e.target.checked ? "" : "none" });
      toggles.appendChild(h("label", { style: `color:${color(ty)}` }, cb, " " + ty));
    }
    if (!types.length) toggles.appendChild(h("span", { class: "note", text: "no gold box and no predicted box" }));
    sec.append(h("div", { class: "media" }, wrap), toggles);
    return sec;
  }

  // ------------------------------------------------------------------ graphs
  function graphPanel(t) {
    const sec = h("section", { id: "graph-panel" }, h("h3", { text: "Alignment graph per query" }));
    if (!t.graphs) {
      sec.appendChild(h("p", { class: "note", text: "no alignment data for this tweet" }));
      return sec;
    }
    let type = state.graphType;
    if (!type || !t.graphs[type]) {
      type = META.types.find((ty) => t.entities.some((e) => e.type === ty) || t.gold.some((g) => g.type === ty)) || META.types[0];
    }
    state.graphType = type;
    const tabs = h("div", { class: "tabs", role: "tablist" });
    for (const ty of META.types) {
      tabs.appendChild(
        h("button", { type: "button", role: "tab", "aria-selected": String(ty === type), dataset: { type: ty }, style: `color:${color(ty)}`, title: META.queries[ty] || "", onclick: () => { state.graphType = ty; renderDetail(t); writeHash(); writeState(); } }, ty)
      );
    }
    sec.appendChild(tabs);
    const g = t.graphs[type];
    if (g.note) sec.appendChild(h("p", { class: "note", text: g.note }));
    sec.appendChild(h("div", { class: "graphwrap" }, drawGraph(t, type, g)));
    const hasQueryWeights = (g.query_weight || []).length === g.query.length && g.query.length > 0;
    const readout = hasQueryWeights
      ? "Query-token edges: the query's attention over the tokens (width and opacity relative to the strongest; hover an edge for its weight and the span heads' start/end probabilities)."
      : "Query-token edges: this fusion module returns no attention, so they are unweighted (hover one for the span heads' start/end probabilities).";
    sec.appendChild(h("div", { id: "readout", text: (g.attn ? "Hover a token: its attention over the image regions. " : "") + readout }));
    return sec;
  }

  function decodeAttention(g, nRegions) {
    if (!g.attn) return null;
    if (!g._q) {
      const bin = atob(g.attn);
      const q = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) q[i] = bin.charCodeAt(i);
      g._q = q;
    }
    return (node, region, scale) => (g._q[node * nRegions + region] / 255) * g.amax[node][scale];
  }

  function drawGraph(t, type, g) {
    const grids = META.grids;
    const scaleOf = [];
    const cellOf = [];
    grids.forEach(([r, c], sIdx) => {
      for (let k = 0; k < r * c; k++) {
        scaleOf.push(sIdx);
        cellOf.push(k);
      }
    });
    const nRegions = scaleOf.length;
    const attn = decodeAttention(g, nRegions);
    const nodes = g.nodes;
    const widths = nodes.map((p) => Math.max(30, Math.min(170, 12 + 7 * t.tokens[p].length)));
    const gap = 8;
    const tokY = 96;
    const tokH = 24;
    const side = 150;
    const sGap = 26;
    let x = 20;
    const xs = widths.map((w) => {
      const at = x;
      x += w + gap;
      return at;
    });
    const tokensWidth = x + 12;
    const regionsY = tokY + tokH + 96;
    const regionsWidth = 20 + grids.length * (side + sGap);
    const width = Math.max(tokensWidth, attn ? regionsWidth : 0, 460);
    const height = attn ? regionsY + side + 34 : tokY + tokH + 30;
    const col = color(type);
    const root = s("svg", { class: "graph", width: width, height: height, viewBox: `0 0 ${width} ${height}`, "data-type": type });
    const edges = s("g", { class: "edges" });
    const nodeLayer = s("g", { class: "nodes" });
    root.append(edges, nodeLayer);

    // query node on top
    const qLabel = `${type} query`;
    const qW = Math.max(90, 12 + 7 * qLabel.length);
    const qx = Math.max(20, Math.min(width - qW - 20, (tokensWidth - qW) / 2));
    const qCenter = qx + qW / 2;
    nodeLayer.appendChild(s("g", { class: "node query" }, s("rect", { x: qx, y: 18, width: qW, height: 28, rx: 6 }), s("text", { x: qCenter, y: 36, "text-anchor": "middle", text: qLabel }), svgTitle(`query: ${META.queries[type] || type}`)));

    // query-token edges (both directions in the model's graph; drawn once), weighted by the
    // query's attention over the tokens; unweighted (thin, dashed) where the module has none
    const nodeIndex = new Map(nodes.map((p, k) => [p, k]));
    const qWeight = (g.query_weight || []).length === g.query.length ? g.query_weight : null;
    const qMax = qWeight && qWeight.length ? Math.max(...qWeight) || 1 : 1;
    const queryWeightOf = new Map();
    g.query.forEach((p, i) => {
      const k = nodeIndex.get(p);
      if (k === undefined) return;
      const probs = `start ${g.start[k].toFixed(3)}, end ${g.end[k].toFixed(3)}`;
      const attrs = { class: "edge query-token", x1: qCenter, y1: 46, x2: xs[k] + widths[k] / 2, y2: tokY, stroke: col, "data-node": k };
      let tip;
      if (qWeight) {
        const w = qWeight[i];
        const rel = w / qMax;
        queryWeightOf.set(k, w);
        Object.assign(attrs, { "stroke-width": 0.5 + 4 * rel, "stroke-opacity": 0.2 + 0.75 * rel, "data-weight": w });
        tip = `query → ${t.tokens[p]}: attention ${w.toFixed(4)}\n${probs}`;
      } else {
        Object.assign(attrs, { "stroke-width": 0.8, "stroke-opacity": 0.35, "stroke-dasharray": "3 3" });
        tip = `${t.tokens[p]}: no attention (fusion ${META.fusion})\n${probs}`;
      }
      edges.appendChild(s("line", attrs, svgTitle(tip)));
    });

    // regions: one grid per scale over the image, coarsest first
    const cellRects = [];
    const cellCenter = [];
    if (attn) {
      grids.forEach(([rows, cols], sIdx) => {
        const gx = 20 + sIdx * (side + sGap);
        const grp = s("g", { class: "scale", "data-scale": sIdx + 1 });
        if (t.image) grp.appendChild(s("image", { href: t.image, x: gx, y: regionsY, width: side, height: side, preserveAspectRatio: "none" }));
        grp.appendChild(s("text", { x: gx, y: regionsY + side + 16, text: `scale ${sIdx + 1} (${rows}×${cols})` }));
        root.appendChild(grp);
      });
      for (let r = 0; r < nRegions; r++) {
        const sIdx = scaleOf[r];
        const [rows, cols] = grids[sIdx];
        const cw = side / cols;
        const ch = side / rows;
        const rx = 20 + sIdx * (side + sGap) + (cellOf[r] % cols) * cw;
        const ry = regionsY + Math.floor(cellOf[r] / cols) * ch;
        const rect = s("rect", { class: "node region", x: rx, y: ry, width: cw, height: ch, fill: "rgba(0,0,0,0)", "data-scale": sIdx + 1, "data-cell": cellOf[r] }, svgTitle(`scale ${sIdx + 1}, cell ${cellOf[r]}`));
        cellRects.push(rect);
        cellCenter.push([rx + cw / 2, ry + ch / 2]);
        root.appendChild(rect);
      }
      // the strongest token-region edges of each scale
      for (let sIdx = 0; sIdx < grids.length; sIdx++) {
        const cand = [];
        for (let k = 0; k < nodes.length; k++) {
          for (let r = 0; r < nRegions; r++) if (scaleOf[r] === sIdx) cand.push([attn(k, r, sIdx), k, r]);
        }
        cand.sort((a, b) => b[0] - a[0]);
        const top = cand.slice(0, TOP_EDGES);
        const maxW = top.length ? top[0][0] || 1 : 1;
        for (const [w, k, r] of top) {
          if (w <= 0) continue;
          edges.appendChild(
            s("line", { class: "edge token-region", x1: xs[k] + widths[k] / 2, y1: tokY + tokH, x2: cellCenter[r][0], y2: cellCenter[r][1], stroke: "#e4572e", "stroke-width": 0.5 + 3 * (w / maxW), "stroke-opacity": 0.2 + 0.6 * (w / maxW), "data-node": k }, svgTitle(`${t.tokens[nodes[k]]} → scale ${sIdx + 1} cell ${cellOf[r]}: ${w.toFixed(4)}`))
          );
        }
      }
    }

    // token nodes, in sentence order
    nodes.forEach((p, k) => {
      const entity = t.entities.find((e) => e.start <= p && p < e.end);
      const grp = s("g", { class: "node token", "data-node": k, "data-position": p });
      grp.appendChild(s("rect", { x: xs[k], y: tokY, width: widths[k], height: tokH, rx: 4, style: entity ? `fill:${tint(color(entity.type), 0.25)}` : null }));
      grp.appendChild(s("text", { x: xs[k] + widths[k] / 2, y: tokY + 16, "text-anchor": "middle", text: t.tokens[p] }));
      const qw = queryWeightOf.get(k);
      const qText = qw === undefined ? "" : `query attention ${qw.toFixed(4)}, `;
      grp.appendChild(svgTitle(`${t.tokens[p]} (token ${p})\npieces: ${(t.pieces || [])[p] || ""}\n${qText}start ${g.start[k].toFixed(3)}, end ${g.end[k].toFixed(3)}` + (entity ? `\npredicted ${entity.type}` : "")));
      grp.addEventListener("mouseenter", () => hoverToken(root, k, attn, cellRects, scaleOf, grids, t.tokens[p], qText + `start ${g.start[k].toFixed(3)}, end ${g.end[k].toFixed(3)}`));
      grp.addEventListener("mouseleave", () => unhover(root, cellRects));
      nodeLayer.appendChild(grp);
    });
    return root;
  }

  function hoverToken(root, k, attn, cellRects, scaleOf, grids, word, probs) {
    for (const e of root.querySelectorAll(".edge")) e.classList.toggle("dim", e.dataset.node !== String(k));
    for (const n of root.querySelectorAll(".node.token")) n.classList.toggle("hover", n.dataset.node === String(k));
    const readout = document.getElementById("readout");
    if (!attn) {
      if (readout) readout.textContent = `'${word}': ${probs}`;
      writeState();
      return;
    }
    const best = [];
    for (let r = 0; r < cellRects.length; r++) best.push([attn(k, r, scaleOf[r]), r, scaleOf[r]]);
    // colour: from the scale's least (clear) to its most attended cell (opaque)
    const lo = grids.map(() => Infinity);
    const hi = grids.map(() => -Infinity);
    for (const [w, , sIdx] of best) {
      lo[sIdx] = Math.min(lo[sIdx], w);
      hi[sIdx] = Math.max(hi[sIdx], w);
    }
    for (const [w, r, sIdx] of best) {
      const spread = hi[sIdx] - lo[sIdx];
      const a = spread > 1e-9 ? (w - lo[sIdx]) / spread : 0.3;
      const cell = cellRects[r];
      cell.setAttribute("fill", `rgba(230, 60, 0, ${(0.75 * a).toFixed(3)})`);
      cell.dataset.weight = w.toFixed(5);
      cell.firstChild.textContent = `scale ${sIdx + 1}, cell ${cell.dataset.cell}: ${w.toFixed(4)}`;
    }
    const parts = grids.map((_, sIdx) => {
      const here = best.filter((b) => b[2] === sIdx).sort((a, b) => b[0] - a[0])[0];
      return here ? `scale ${sIdx + 1}: cell ${cellRects[here[1]].dataset.cell} ${here[0].toFixed(3)}` : "";
    });
    if (readout) readout.textContent = `'${word}' (${probs}) attends most to ` + parts.filter(Boolean).join(", ");
    writeState();
  }

  function unhover(root, cellRects) {
    for (const r of cellRects) {
      r.setAttribute("fill", "rgba(0,0,0,0)");
      delete r.dataset.weight;
      r.firstChild.textContent = `scale ${r.dataset.scale}, cell ${r.dataset.cell}`;
    }
    for (const e of root.querySelectorAll(".edge.dim")) e.classList.remove("dim");
    for (const n of root.querySelectorAll(".node.token.hover")) n.classList.remove("hover");
  }

  // ------------------------------------------------------------------ hash and test state
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const kind = p.get("kind");
    state.kind = KIND_LABEL[kind] ? kind : "all";
    state.type = p.get("type") || "";
    state.query = (p.get("q") || "").trim().toLowerCase();
    state.graphType = p.get("graph");
    state.shown = PAGE;
    applyFilter();
    const want = p.get("select");
    if (want !== null) {
      const t = DATA.tweets.find((x) => x.id === want) || DATA.tweets[Number(want)];
      if (t) select(t.index, true);
    }
  }

  function writeHash() {
    const p = new URLSearchParams();
    if (state.kind !== "all") p.set("kind", state.kind);
    if (state.type) p.set("type", state.type);
    if (state.query) p.set("q", state.query);
    if (state.selected !== null) p.set("select", DATA.tweets[state.selected].id);
    if (state.selected !== null && state.graphType) p.set("graph", state.graphType);
    const hash = "#" + p.toString();
    if (hash !== location.hash && !(hash === "#" && !location.hash)) {
      try {
        history.replaceState(null, "", hash);
      } catch (err) {
        // some browsers refuse history changes on file:// pages; the view works without it
      }
    }
  }

  function writeState() {
    const graph = document.querySelector("#detail svg.graph");
    const out = {
      ready: document.documentElement.dataset.ready === "1",
      kind: state.kind,
      type: state.type,
      query: state.query,
      matches: state.matches.map((i) => DATA.tweets[i].id),
      shown: Array.from(document.querySelectorAll("#tweets li.tweet"), (li) => li.dataset.id),
      selected: state.selected === null ? null : DATA.tweets[state.selected].id,
      graphType: graph ? graph.dataset.type : null,
      svgNodes: graph ? graph.querySelectorAll(".node").length : 0,
      svgEdges: graph ? graph.querySelectorAll(".edge").length : 0,
      heat: graph ? graph.querySelectorAll(".node.region[data-weight]").length : 0,
      errors: errors.slice(),
    };
    document.getElementById("test-state").textContent = JSON.stringify(out);
  }

  // ------------------------------------------------------------------ start
  function start() {
    const block = document.getElementById("report-data");
    DATA = JSON.parse(block.textContent);
    if (DATA.version !== VERSION) throw new Error(`report data version ${DATA.version}, this page reads ${VERSION}`);
    META = DATA.meta;
    prepare();
    renderHeader();
    renderScores();
    renderControls();
    readHash();
    window.addEventListener("hashchange", () => {
      readHash();
      writeState();
    });
    document.documentElement.dataset.readyMs = performance.now().toFixed(1);
    document.documentElement.dataset.ready = "1";
    writeState();
    // the first frame painted after drawing (the load-time benchmark reads it)
    requestAnimationFrame(() =>
      setTimeout(() => {
        document.documentElement.dataset.paintedMs = performance.now().toFixed(1);
      }, 0)
    );
  }

  try {
    start();
  } catch (err) {
    errors.push(String(err && err.stack ? err.stack : err));
    document.getElementById("detail").textContent = "This report could not be drawn: " + err;
    document.documentElement.dataset.ready = "error";
    writeState();
  }
})();
