/* alvh live dashboard.
 *
 * Reads the broker's WebSocket URL and the topic prefix from /config.json, connects
 * with MQTT.js (vendored: mqtt.min.js) and renders the retained state topics
 * (status, pools, layers, silences) and the live alert stream.
 *
 * Every string taken from a payload reaches the page through textContent or
 * setAttribute, never through innerHTML, so a payload cannot inject markup.
 */
(function () {
  "use strict";

  var SPARK_POINTS = 240; // prices kept per pool for the sparkline
  var MAX_ALERTS = 100;
  var LAYER_STATES = { inactive: 1, pending: 1, firing: 1 };

  var prefix = "alvh";
  var pools = new Map(); // "chain/pool" -> pool view
  var alertCount = 0;

  // --- small helpers ------------------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function isNum(v) {
    return typeof v === "number" && isFinite(v);
  }

  var compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 });

  function fmtPrice(v) {
    if (!isNum(v)) return "\u2013";
    var a = Math.abs(v);
    if (a >= 1000) return v.toLocaleString("en-US", { maximumFractionDigits: 2, minimumFractionDigits: 2 });
    if (a >= 1) return v.toLocaleString("en-US", { maximumFractionDigits: 4 });
    return v.toPrecision(6);
  }
  function fmtNum(v, digits) {
    return isNum(v) ? v.toFixed(digits) : "\u2013";
  }
  function fmtCompact(v) {
    return isNum(v) ? compact.format(v) : "\u2013";
  }
  function fmtPct(v) {
    return isNum(v) ? (v * 100).toFixed(1) + "%" : "\u2013";
  }
  function fmtSigma(v) {
    return isNum(v) ? (v >= 0 ? "+" : "") + v.toFixed(2) + "\u03c3" : "\u2013";
  }
  function parseTime(iso) {
    if (typeof iso !== "string") return NaN;
    return Date.parse(iso);
  }
  function fmtDuration(ms) {
    if (!isFinite(ms) || ms < 0) return "";
    var s = Math.round(ms / 1000);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m";
    var h = Math.floor(m / 60);
    if (h < 48) return h + "h" + (m % 60 ? " " + (m % 60) + "m" : "");
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }
  function fmtTime(iso) {
    var t = parseTime(iso);
    if (!isFinite(t)) return "";
    return new Date(t).toISOString().slice(0, 16).replace("T", " ") + "Z";
  }
  function shortAddress(a) {
    return typeof a === "string" && a.length > 12 ? a.slice(0, 6) + "\u2026" + a.slice(-4) : String(a);
  }
  function decode(payload) {
    try {
      return new TextDecoder("utf-8").decode(payload);
    } catch (e) {
      return "";
    }
  }
  function parseJson(text) {
    if (!text) return null;
    try {
      var v = JSON.parse(text);
      return v !== null && typeof v === "object" ? v : null;
    } catch (e) {
      return null;
    }
  }

  // --- pools -----------------------------------------------------------------------

  var METRICS = [
    ["move_sigma", "move \u03c3", fmtSigma],
    ["rsi", "RSI", function (v) { return fmtNum(v, 1); }],
    ["macd_hist", "MACD hist", function (v) { return isNum(v) ? v.toPrecision(3) : "\u2013"; }],
    ["realized_vol", "real. vol", fmtPct],
    ["iv", "IV", fmtPct],
    ["tvl", "TVL", fmtCompact],
    ["volume_24h", "vol 24h", fmtCompact],
    ["tvl_volume_ratio", "TVL/vol", function (v) { return fmtNum(v, 2); }],
  ];

  function poolView(chain, address) {
    var key = chain + "/" + address;
    var view = pools.get(key);
    if (view) return view;
    var card = el("article", "pool");
    card.setAttribute("data-pool", key);
    card.setAttribute("data-state", "waiting");

    var head = el("header", "pool-head");
    var title = el("h3", "pool-name", shortAddress(address));
    var sub = el("div", "pool-sub");
    var chainTag = el("span", "chain", chain);
    var addr = el("span", "address", shortAddress(address));
    addr.setAttribute("title", address);
    var updated = el("span", "updated", "");
    sub.append(chainTag, addr, updated);
    head.append(title, sub);

    var priceRow = el("div", "price-row");
    var price = el("span", "price", "\u2013");
    price.setAttribute("data-field", "price");
    var change = el("span", "change", "");
    priceRow.append(price, change);

    var canvas = el("canvas", "spark");
    canvas.setAttribute("aria-label", "price sparkline");

    var metrics = el("dl", "metrics");
    var cells = {};
    METRICS.forEach(function (m) {
      var wrap = el("div", "metric");
      var dt = el("dt", null, m[1]);
      var dd = el("dd", null, "\u2013");
      dd.setAttribute("data-field", m[0]);
      wrap.append(dt, dd);
      metrics.append(wrap);
      cells[m[0]] = dd;
    });

    var layers = el("div", "layers");
    var note = el("p", "degraded-note", "");
    note.hidden = true;
    var foot = el("div", "pool-foot", "");

    card.append(head, priceRow, canvas, metrics, layers, note, foot);
    document.getElementById("pools").append(card);
    document.getElementById("pools-empty").hidden = true;

    view = {
      key: key, chain: chain, address: address, card: card, title: title, updated: updated,
      price: price, change: change, canvas: canvas, cells: cells, layersEl: layers, note: note,
      foot: foot, prices: [], dataTime: NaN, receivedAt: NaN, layerViews: new Map(),
    };
    pools.set(key, view);
    sortPools();
    return view;
  }

  function sortPools() {
    var container = document.getElementById("pools");
    var views = Array.from(pools.values()).sort(function (a, b) {
      return (a.chain + a.title.textContent).localeCompare(b.chain + b.title.textContent);
    });
    views.forEach(function (v) { container.append(v.card); });
  }

  // A pool or a layer that left the daemon's config (its retained topic was cleared).
  function dropPool(chain, address) {
    var key = chain + "/" + address;
    var view = pools.get(key);
    if (!view) return;
    view.card.remove();
    pools.delete(key);
    document.getElementById("pools-empty").hidden = pools.size > 0;
  }

  function dropLayer(chain, address, layer) {
    var view = pools.get(chain + "/" + address);
    var lv = view && view.layerViews.get(layer);
    if (!lv) return;
    lv.badge.remove();
    view.layerViews.delete(layer);
  }

  function onPool(chain, address, p) {
    var view = poolView(chain, address);
    view.receivedAt = Date.now();
    if (p.state === "degraded") {
      view.card.setAttribute("data-state", "degraded");
      view.note.hidden = false;
      view.note.textContent = "degraded: " + String(p.reason || "unknown reason");
      renderAge(view);
      return;
    }
    view.card.setAttribute("data-state", "ok");
    view.note.hidden = true;
    if (typeof p.pool_name === "string" && p.pool_name && view.title.textContent !== p.pool_name) {
      view.title.textContent = p.pool_name;
      sortPools();
    }
    var f = p.features && typeof p.features === "object" ? p.features : {};
    view.price.textContent = fmtPrice(f.price);
    METRICS.forEach(function (m) {
      view.cells[m[0]].textContent = m[2](f[m[0]]);
      view.cells[m[0]].classList.toggle("neg", isNum(f[m[0]]) && f[m[0]] < 0 && m[0] !== "tvl");
    });
    var t = parseTime(p.time);
    if (isFinite(t)) view.dataTime = Math.max(isFinite(view.dataTime) ? view.dataTime : t, t);
    view.foot.textContent =
      (isNum(p.block) ? "block " + p.block + " \u00b7 " : "") + (p.time ? "data time " + fmtTime(p.time) : "");
    if (isNum(f.price)) {
      var last = view.prices[view.prices.length - 1];
      if (!last || last.t !== t || last.v !== f.price) view.prices.push({ t: t, v: f.price });
      if (view.prices.length > SPARK_POINTS) view.prices.splice(0, view.prices.length - SPARK_POINTS);
    }
    var first = view.prices.length ? view.prices[0].v : NaN;
    if (isNum(first) && isNum(f.price) && view.prices.length > 1) {
      var ch = f.price / first - 1;
      view.change.textContent = (ch >= 0 ? "+" : "") + (ch * 100).toFixed(2) + "% (window)";
      view.change.className = "change " + (ch < 0 ? "down" : "up");
    }
    drawSpark(view);
    renderAge(view);
    view.layerViews.forEach(function (lv) { renderLayer(view, lv); });
  }

  function drawSpark(view) {
    var canvas = view.canvas;
    var ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || 280;
    var h = canvas.clientHeight || 56;
    if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
    if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var pts = view.prices;
    if (pts.length < 2) {
      ctx.fillStyle = "#8a94a6";
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillText(pts.length ? "collecting prices\u2026" : "no price yet", 4, h / 2 + 4);
      return;
    }
    var lo = Infinity, hi = -Infinity;
    pts.forEach(function (p) { lo = Math.min(lo, p.v); hi = Math.max(hi, p.v); });
    if (hi === lo) { hi += 1e-9; lo -= 1e-9; }
    var pad = 4;
    function x(i) { return pad + (i / (pts.length - 1)) * (w - 2 * pad); }
    function y(v) { return pad + (1 - (v - lo) / (hi - lo)) * (h - 2 * pad); }
    var down = pts[pts.length - 1].v < pts[0].v;
    ctx.beginPath();
    pts.forEach(function (p, i) { if (i) ctx.lineTo(x(i), y(p.v)); else ctx.moveTo(x(i), y(p.v)); });
    ctx.strokeStyle = down ? "#e5484d" : "#30a46c";
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.lineTo(x(pts.length - 1), h - pad);
    ctx.lineTo(x(0), h - pad);
    ctx.closePath();
    ctx.fillStyle = down ? "rgba(229,72,77,0.12)" : "rgba(48,164,108,0.12)";
    ctx.fill();
  }

  function renderAge(view) {
    if (!isFinite(view.receivedAt)) return;
    view.updated.textContent = "updated " + fmtDuration(Date.now() - view.receivedAt) + " ago";
  }

  // --- layers ----------------------------------------------------------------------

  function onLayer(chain, address, layer, p) {
    var view = poolView(chain, address);
    var lv = view.layerViews.get(layer);
    if (!lv) {
      var badge = el("span", "layer");
      badge.setAttribute("data-layer", chain + "/" + address + "/" + layer);
      var name = el("b", "layer-name", layer);
      var state = el("span", "layer-state", "");
      var since = el("span", "layer-since", "");
      badge.append(name, state, since);
      lv = { name: layer, badge: badge, stateEl: state, sinceEl: since, payload: p };
      view.layerViews.set(layer, lv);
      var ordered = Array.from(view.layerViews.values()).sort(function (a, b) {
        var la = a.payload && isNum(a.payload.level) ? a.payload.level : 0;
        var lb = b.payload && isNum(b.payload.level) ? b.payload.level : 0;
        return la - lb || a.name.localeCompare(b.name);
      });
      ordered.forEach(function (x) { view.layersEl.append(x.badge); });
    }
    lv.payload = p;
    renderLayer(view, lv);
  }

  function renderLayer(view, lv) {
    var p = lv.payload || {};
    var state = LAYER_STATES[p.state] ? p.state : "unknown";
    lv.badge.setAttribute("data-state", state);
    lv.stateEl.textContent = state;
    var since = parseTime(p.since);
    var ref = Math.max(isFinite(view.dataTime) ? view.dataTime : -Infinity, parseTime(p.time) || -Infinity);
    var text = "";
    if (isFinite(since) && state !== "inactive" && isFinite(ref)) {
      text = ref - since < 1000 ? "now" : "for " + fmtDuration(ref - since);
    }
    lv.sinceEl.textContent = text;
    var tip = [lv.name + ": " + state];
    if (p.since) tip.push("since " + fmtTime(p.since));
    if (p.reason) tip.push(String(p.reason));
    if (p.inhibited_by) tip.push("inhibited by " + String(p.inhibited_by));
    lv.badge.setAttribute("title", tip.join("\n"));
  }

  // --- alerts ----------------------------------------------------------------------

  function hedgeText(h) {
    if (!h || typeof h !== "object") return "";
    var parts = [];
    var strike = fmtPrice(h.strike);
    if (isNum(h.call_strike)) strike = "put " + strike + " / call " + fmtPrice(h.call_strike);
    parts.push(String(h.instrument || "hedge") + " " + strike);
    if (h.expiry) parts.push("exp " + String(h.expiry).slice(0, 10));
    if (h.position === "notional-1-quote") parts.push("per 1 quote unit of LP value (no position configured)");
    if (isNum(h.notional)) parts.push("notional " + h.notional.toPrecision(4));
    if (isNum(h.premium_estimate)) parts.push("premium ~" + h.premium_estimate.toPrecision(4));
    if (isNum(h.il_now) || isNum(h.il_at_strike)) {
      parts.push("IL now " + fmtPct(h.il_now) + " / at strike " + fmtPct(h.il_at_strike));
    }
    if (Array.isArray(h.break_even) && h.break_even.length === 2) {
      parts.push("break-even " + fmtPrice(h.break_even[0]) + " \u2013 " + fmtPrice(h.break_even[1]));
    }
    return parts.join(" \u00b7 ");
  }

  function onAlert(p) {
    var list = document.getElementById("alerts");
    var event = typeof p.event === "string" ? p.event : "unknown";
    var item = el("li", "alert");
    item.setAttribute("data-event", event);
    item.setAttribute("data-layer", String(p.layer || ""));
    if (p.id) item.setAttribute("data-id", String(p.id));
    var head = el("div", "alert-head");
    head.append(
      el("span", "event", event + (p.repeat ? " (repeat)" : "")),
      el("b", "alert-layer", String(p.layer || "?")),
      el("span", "alert-pool", String(p.pool_name || shortAddress(p.pool))),
      el("time", "alert-time", fmtTime(p.time))
    );
    item.append(head);
    var values = p.values && typeof p.values === "object" ? p.values : {};
    var facts = [];
    if (isNum(values.price)) facts.push("price " + fmtPrice(values.price));
    if (isNum(values.move_sigma)) facts.push("move " + fmtSigma(values.move_sigma));
    if (isNum(values.rsi)) facts.push("RSI " + values.rsi.toFixed(1));
    if (facts.length) item.append(el("div", "alert-facts", facts.join(" \u00b7 ")));
    if (p.reason) item.append(el("div", "alert-reason", "why: " + String(p.reason)));
    var hedge = hedgeText(p.hedge);
    if (hedge) item.append(el("div", "alert-hedge", "hedge: " + hedge));
    list.prepend(item);
    alertCount += 1;
    while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
    document.getElementById("alerts-empty").hidden = true;
    document.getElementById("alerts-title").setAttribute("data-count", String(alertCount));
  }

  // --- silences, status ---------------------------------------------------------------

  function matcherText(matchers) {
    if (!matchers || typeof matchers !== "object") return "";
    return Object.keys(matchers).map(function (k) {
      var m = matchers[k];
      if (m && typeof m === "object") return k + "=~" + String(m.regex);
      return k + "=" + (k === "pool" ? shortAddress(m) : String(m));
    }).join(", ");
  }

  function onSilences(p) {
    var list = document.getElementById("silences");
    list.replaceChildren();
    var silences = p && Array.isArray(p.silences) ? p.silences : [];
    var acks = p && Array.isArray(p.acks) ? p.acks : [];
    silences.forEach(function (s) {
      var li = el("li", "silence");
      li.setAttribute("data-id", String(s.id || ""));
      li.append(
        el("span", "tag", "silenced"),
        el("b", null, matcherText(s.matchers)),
        el("span", "muted", " until " + fmtTime(s.ends_at) + " by " + String(s.author || "?"))
      );
      if (s.comment) li.append(el("div", "muted", String(s.comment)));
      list.append(li);
    });
    acks.forEach(function (a) {
      var li = el("li", "ack");
      li.setAttribute("data-id", String(a.id || ""));
      li.append(
        el("span", "tag", "acked"),
        el("b", null, String(a.layer || "?") + " on " + String(a.chain || "?") + "/" + shortAddress(a.pool)),
        el("span", "muted", " by " + String(a.author || "?"))
      );
      if (a.comment) li.append(el("div", "muted", String(a.comment)));
      list.append(li);
    });
    document.getElementById("silences-empty").hidden = silences.length + acks.length > 0;
  }

  function onStatus(p) {
    var pill = document.getElementById("daemon-status");
    var state = p && (p.state === "online" || p.state === "offline") ? p.state : "unknown";
    pill.setAttribute("data-state", state);
    var text = "daemon: " + state;
    if (p && p.version) text += " \u00b7 v" + String(p.version);
    pill.textContent = text;
    if (p && p.started_at) pill.setAttribute("title", "started " + fmtTime(p.started_at));
  }

  function setBroker(state, detail) {
    var pill = document.getElementById("broker-status");
    pill.setAttribute("data-state", state);
    pill.textContent = "broker: " + state + (detail ? " (" + detail + ")" : "");
    document.body.setAttribute("data-broker", state);
  }

  // --- MQTT ------------------------------------------------------------------------

  function onMessage(topic, payload) {
    if (topic.indexOf(prefix + "/") !== 0) return;
    var parts = topic.slice(prefix.length + 1).split("/");
    var body = parseJson(decode(payload));
    if (parts[0] === "status" && parts.length === 1) {
      onStatus(body);
    } else if (parts[0] === "silences" && parts.length === 1) {
      onSilences(body);
    } else if (body === null) {
      // A cleared retained topic (a pool or layer removed from the config): drop it.
      if (payload && payload.length) return; // not JSON
      if (parts[0] === "pools" && parts.length === 3) {
        dropPool(parts[1], parts[2]);
      } else if (parts[0] === "layers" && parts.length === 4) {
        dropLayer(parts[1], parts[2], parts[3]);
      }
      return;
    } else if (parts[0] === "pools" && parts.length === 3) {
      onPool(parts[1], parts[2], body);
    } else if (parts[0] === "layers" && parts.length === 4) {
      onLayer(parts[1], parts[2], parts[3], body);
    } else if (parts[0] === "alerts" && parts.length === 4) {
      onAlert(body);
    }
  }

  function connect(cfg) {
    if (typeof cfg.topic_prefix === "string" && cfg.topic_prefix) prefix = cfg.topic_prefix;
    var url = String(cfg.broker_ws_url || "");
    document.getElementById("broker-url").textContent = "broker " + url + " \u00b7 prefix " + prefix;
    if (typeof mqtt === "undefined") {
      setBroker("error", "MQTT client script missing");
      return;
    }
    var client = mqtt.connect(url, {
      clientId: "alvh-dashboard-" + Math.random().toString(16).slice(2, 10),
      clean: true,
      keepalive: 30,
      reconnectPeriod: 2000,
      connectTimeout: 10000,
    });
    var topics = ["status", "pools/#", "layers/#", "alerts/#", "silences"].map(function (t) {
      return prefix + "/" + t;
    });
    client.on("connect", function () {
      setBroker("connected");
      client.subscribe(topics, { qos: 0 }, function (err) {
        if (err) setBroker("error", "subscribe refused");
      });
    });
    client.on("reconnect", function () { setBroker("connecting"); });
    client.on("offline", function () { setBroker("offline"); });
    client.on("error", function (err) { setBroker("error", err && err.message ? err.message : ""); });
    client.on("message", onMessage);
  }

  setInterval(function () {
    pools.forEach(renderAge);
  }, 1000);

  window.addEventListener("resize", function () {
    pools.forEach(drawSpark);
  });

  fetch("config.json", { cache: "no-store" })
    .then(function (r) {
      if (!r.ok) throw new Error("config.json: HTTP " + r.status);
      return r.json();
    })
    .then(connect)
    .catch(function (err) {
      setBroker("error", err && err.message ? err.message : "no config");
    });
})();
