// Demo storefront: lists the demo store's products from /demo/api/products.
// Every product field is inserted with textContent: catalogue text is never markup.
(function () {
  "use strict";

  var API = "/demo/api/products";
  var PAGE = 24;
  var state = { q: "", type: "", offset: 0, total: 0, currency: "USD" };

  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = text;
    return n;
  }

  function money(value) {
    if (value === null || value === undefined) return "";
    try {
      return new Intl.NumberFormat("en-US", { style: "currency", currency: state.currency }).format(Number(value));
    } catch (e) {
      return "$" + value;
    }
  }

  // A stable hue per product type, so the tiles of one type look related.
  function hue(text) {
    var h = 0;
    for (var i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) % 360;
    return h;
  }

  function ask(question) {
    if (window.StorefrontChat) window.StorefrontChat.send(question);
  }

  function card(p) {
    var li = el("li", "card");
    var tile = el("div", "tile");
    tile.style.setProperty("--h", String(hue(p.type || p.title)));
    tile.appendChild(el("span", "tile-type", p.type || "Product"));
    tile.appendChild(el("span", "tile-mark", (p.title || "?").replace(/^\w+'s?\s+/, "").charAt(0)));
    li.appendChild(tile);
    var body = el("div", "card-body");
    body.appendChild(el("h2", "card-title", p.title));
    var price = el("p", "price");
    price.appendChild(el("span", "now", money(p.price)));
    if (p.compare_at && p.compare_at !== p.price) {
      var was = el("s", "was", money(p.compare_at));
      was.setAttribute("aria-label", "was " + money(p.compare_at));
      price.appendChild(was);
    }
    body.appendChild(price);
    if (p.colors && p.colors.length) {
      body.appendChild(el("p", "colors", p.colors.length + (p.colors.length === 1 ? " colour: " : " colours: ") + p.colors.join(", ")));
    }
    body.appendChild(el("p", "desc", p.description));
    var btn = el("button", "ask", "Ask the assistant");
    btn.type = "button";
    btn.setAttribute("aria-label", "Ask the assistant about " + p.title);
    btn.addEventListener("click", function () { ask("Tell me about the " + p.title + "."); });
    body.appendChild(btn);
    li.appendChild(body);
    return li;
  }

  function filters(types) {
    var nav = document.getElementById("filters");
    if (nav.childNodes.length) return;
    [""].concat(types.slice(0, 10)).forEach(function (t) {
      var b = el("button", "chip", t || "All products");
      b.type = "button";
      b.setAttribute("aria-pressed", t === state.type ? "true" : "false");
      b.addEventListener("click", function () {
        state.type = t;
        nav.querySelectorAll(".chip").forEach(function (c) { c.setAttribute("aria-pressed", c === b ? "true" : "false"); });
        load(false);
      });
      nav.appendChild(b);
    });
  }

  function load(append) {
    var grid = document.getElementById("grid");
    var count = document.getElementById("count");
    var more = document.getElementById("more");
    if (!append) state.offset = 0;
    var params = new URLSearchParams({ limit: String(PAGE), offset: String(state.offset) });
    if (state.q) params.set("q", state.q);
    if (state.type) params.set("type", state.type);
    grid.setAttribute("aria-busy", "true");
    fetch(API + "?" + params.toString(), { headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
          return body;
        });
      })
      .then(function (data) {
        state.currency = data.store.currency || "USD";
        state.total = data.total;
        filters(data.types || []);
        if (!append) grid.textContent = "";
        data.products.forEach(function (p) { grid.appendChild(card(p)); });
        state.offset += data.products.length;
        more.hidden = state.offset >= state.total;
        count.textContent = state.total
          ? "Showing " + state.offset + " of " + state.total + " products" + (state.q ? " for \u201c" + state.q + "\u201d" : "")
          : "No products match \u201c" + state.q + "\u201d.";
      })
      .catch(function (err) {
        count.textContent = "The catalogue could not be loaded (" + err.message + ").";
      })
      .then(function () { grid.removeAttribute("aria-busy"); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.getElementById("search").addEventListener("submit", function (e) {
      e.preventDefault();
      state.q = document.getElementById("q").value.trim();
      load(false);
    });
    document.getElementById("more").addEventListener("click", function () { load(true); });
    document.getElementById("help").addEventListener("click", function () {
      if (window.StorefrontChat) window.StorefrontChat.open();
    });
    document.querySelectorAll("[data-ask]").forEach(function (b) {
      b.addEventListener("click", function () { ask(b.getAttribute("data-ask")); });
    });
    load(false);
  });
})();
