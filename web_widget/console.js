/* Agent console: login, live inbox, conversation view, customer panel, copilot.
 *
 * Talks to the server over /ws/agent (docs/protocol.md, "Console socket"). The session
 * lives in an HttpOnly cookie set by POST /console/login, so this script never sees the
 * token. Every piece of text from the network goes into the page with textContent, never
 * innerHTML: shopper messages are untrusted input.
 */
(function () {
  "use strict";

  var PROTOCOL_VERSION = 1;
  var STATE_LABELS = { bot: "Bot", waiting: "Waiting", agent: "Agent", resolved: "Resolved" };
  // Order actions (issue #19): kinds, their modes, what became of a proposal.
  var ACTION_KINDS = {
    cancel_order: "Cancel order", modify_order_address: "Change shipping address",
    modify_order_payment: "Change payment method", modify_order_items: "Change items",
    return_items: "Return items", exchange_items: "Exchange items",
    modify_default_address: "Change default address", remove_order_items: "Remove items"
  };
  // What each kind's form asks for (the kind's parameters, docs/actions.md).
  var ACTION_FIELDS = {
    cancel_order: ["order", "reason"],
    modify_order_address: ["order", "address"],
    modify_order_payment: ["order", "payment"],
    modify_order_items: ["order", "items", "variants", "difference"],
    return_items: ["order", "items", "refund"],
    exchange_items: ["order", "items", "variants", "difference"],
    modify_default_address: ["address"],
    remove_order_items: ["order", "items"]
  };
  var ADDRESS_FIELDS = [["address1", "Street", true], ["address2", "Apartment, suite", true],
    ["city", "City"], ["state", "State"], ["zip", "Zip code"], ["country", "Country"]];
  var MODE_LABELS = { auto: "Automatic (the shopper's yes)", approval: "Needs an agent's approval", off: "Off (offer a person)" };
  var ACTION_STATUS = {
    proposed: "Waiting for the shopper", executed: "Done", declined: "Declined", failed: "Failed",
    awaiting_approval: "Awaiting approval", expired: "Expired"
  };
  var ACTION_REFS = { list_actions: 1, approve_action: 1, reject_action: 1, set_action_modes: 1 };

  var state = {
    ws: null,
    ready: false,
    agent: null,
    stores: [],
    store: null,
    filter: "open",
    q: "",
    rows: new Map(), // conversation_id -> inbox row
    counts: {},
    selected: null,
    conv: null, // {id, state, owner, lastSeq, replies: Map(reply_id -> {li, bubble, text})}
    suggestion: null, // {id, text, sources, done}
    mode: "reply",
    actions: null, // the store's approval queue: {store, pending, modes, can_configure}
    preview: null, // the agent's own action being previewed: {conversation_id, action}
    actionForm: null, // what the form offers: customer.action_form of the open conversation
    retry: 0,
    loggingOut: false,
    sendCounter: 0,
  };

  // ---- tiny DOM helpers ------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function ago(iso) {
    if (!iso) return "";
    var t = Date.parse(/Z$|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z");
    if (isNaN(t)) return "";
    var s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d";
  }

  function clock(iso) {
    if (!iso) return "";
    var d = new Date(/Z$|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z");
    if (isNaN(d.getTime())) return "";
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // ---- login / logout ----------------------------------------------------------------------

  function showLogin(message) {
    state.ready = false;
    $("app").hidden = true;
    $("login-view").hidden = false;
    var err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    // After a failed attempt the email is usually right: retype the password.
    (message && $("login-email").value ? $("login-password") : $("login-email")).focus();
  }

  function showApp() {
    $("login-view").hidden = true;
    $("app").hidden = false;
  }

  async function login(event) {
    event.preventDefault();
    var button = $("login-submit");
    button.disabled = true;
    $("login-error").hidden = true;
    try {
      // The server takes no request bodies: credentials go in an Authorization header
      // (HTTP Basic, UTF-8), never in the URL.
      var res = await fetch("/console/login", {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { Authorization: "Basic " + base64Utf8($("login-email").value.trim() + ":" + $("login-password").value) },
      });
      var body = await res.json().catch(function () { return {}; });
      if (!res.ok) {
        showLogin((body && body.message) || "Sign-in failed (" + res.status + ")");
        return;
      }
      $("login-password").value = "";
      state.retry = 0;
      connect();
    } catch (e) {
      showLogin("The server cannot be reached. Try again in a moment.");
    } finally {
      button.disabled = false;
    }
  }

  function base64Utf8(text) {
    var bytes = new TextEncoder().encode(text);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary);
  }

  async function logout() {
    state.loggingOut = true;
    try {
      await fetch("/console/logout", { method: "POST", credentials: "same-origin" });
    } catch (e) { /* the cookie is cleared server-side; nothing more to do offline */ }
    if (state.ws) state.ws.close(1000);
    state.ws = null;
    resetConversation();
    state.rows.clear();
    showLogin("");
    state.loggingOut = false;
  }

  // ---- socket ------------------------------------------------------------------------------

  function socketUrl() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    return proto + "//" + location.host + "/ws/agent";
  }

  function connect() {
    if (state.ws) { try { state.ws.close(1000); } catch (e) { /* already closed */ } }
    var ws = new WebSocket(socketUrl());
    state.ws = ws;
    setConnection("Connecting…", "");
    ws.onmessage = function (msg) {
      if (ws !== state.ws) return;
      var frame;
      try { frame = JSON.parse(msg.data); } catch (e) { return; }
      if (frame && typeof frame.type === "string") handle(frame);
    };
    ws.onclose = function () {
      if (ws !== state.ws) return;
      state.ws = null;
      if (!state.ready || state.loggingOut) return; // auth failures show the login form
      setConnection("Reconnecting…", "down");
      var delay = Math.min(10000, 500 * Math.pow(2, state.retry++));
      setTimeout(connect, delay);
    };
  }

  function send(type, fields) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      banner("Not connected; reconnecting…", true);
      return false;
    }
    var frame = Object.assign({ v: PROTOCOL_VERSION, type: type }, fields || {});
    state.ws.send(JSON.stringify(frame));
    return true;
  }

  function setConnection(text, cls) {
    var node = $("connection");
    node.textContent = text;
    node.className = "connection " + (cls || "");
  }

  // ---- frames from the server ----------------------------------------------------------------

  function handle(frame) {
    switch (frame.type) {
      case "ready": return onReady(frame);
      case "inbox": return onInbox(frame);
      case "inbox_update": return onInboxUpdate(frame);
      case "conversation": return onConversation(frame);
      case "event": return onEvent(frame);
      case "suggestion_token": return onSuggestionToken(frame);
      case "suggestion_done": return onSuggestionDone(frame);
      case "agents": return renderTeam(frame.agents || []);
      case "actions": return renderApprovals(frame);
      case "action_preview": return renderPreview(frame);
      case "error": return onError(frame);
      default: return undefined; // newer server: ignore what we do not know
    }
  }

  function onReady(frame) {
    state.ready = true;
    state.retry = 0;
    state.agent = frame.agent || {};
    state.stores = frame.stores || [];
    showApp();
    setConnection("Live", "live");
    $("agent-name").textContent = state.agent.name || state.agent.email || "";
    $("team-open").hidden = !state.agent.admin;
    var select = $("store-select");
    clear(select);
    state.stores.forEach(function (s) {
      var opt = el("option", "", s.title && s.title !== s.name ? s.title + " (" + s.name + ")" : s.name);
      opt.value = s.name;
      select.appendChild(opt);
    });
    if (!state.stores.some(function (s) { return s.name === state.store; })) {
      state.store = state.stores.length ? state.stores[0].name : null;
    }
    select.value = state.store || "";
    subscribe();
    if (state.selected) send("open", { conversation_id: state.selected });
  }

  function subscribe() {
    if (!state.store) {
      renderInbox();
      return;
    }
    send("subscribe_inbox", { store: state.store, filter: state.filter, q: state.q });
    // The store's approval queue, kept up to date while its inbox is followed.
    send("list_actions", { store: state.store });
  }

  function onInbox(frame) {
    if (frame.store !== state.store) return;
    state.rows.clear();
    (frame.conversations || []).forEach(function (row) { state.rows.set(row.conversation_id, row); });
    state.counts = frame.counts || {};
    renderInbox();
  }

  function onInboxUpdate(frame) {
    if (frame.store !== state.store) return;
    var row = frame.conversation;
    if (frame.counts) state.counts = frame.counts;
    if (frame.matches) state.rows.set(row.conversation_id, row);
    else state.rows.delete(row.conversation_id);
    renderInbox();
    if (state.conv && state.conv.id === row.conversation_id) updateSummary(row.summary);
  }

  function onError(frame) {
    var code = frame.code || "error";
    if (code === "unauthorized" || code === "session_expired") {
      state.ready = false;
      if (state.ws) state.ws.close(1000);
      state.ws = null;
      showLogin(code === "session_expired" ? "Your session has expired. Sign in again." : "");
      return;
    }
    if (frame.ref === "add_agent" || frame.ref === "remove_agent" || frame.ref === "list_agents") {
      var teamError = $("team-error");
      teamError.textContent = frame.message || code;
      teamError.hidden = false;
      return;
    }
    if (ACTION_REFS[frame.ref]) {
      var approvalsError = $("approvals-error");
      approvalsError.textContent = frame.message || code;
      approvalsError.hidden = false;
      if (state.actions) renderApprovals(state.actions);
      return;
    }
    if (frame.ref === "propose_action" || frame.ref === "confirm_action") {
      var actionError = $("agent-action-error");
      actionError.textContent = frame.message || code;
      actionError.hidden = false;
      $("agent-action-preview").disabled = false;
      $("agent-action-confirm").disabled = false;
      $("agent-action-cancel").disabled = false;
      return;
    }
    if (frame.ref === "suggest" && state.suggestion) {
      $("suggestion").classList.remove("streaming");
      state.suggestion = null;
      $("btn-suggest").disabled = false;
    }
    var text = frame.message || code;
    if (code === "conflict") text = "Someone else got there first: " + text;
    banner(text, true);
  }

  // ---- inbox -------------------------------------------------------------------------------

  function renderInbox() {
    var list = $("inbox-list");
    clear(list);
    var rows = Array.from(state.rows.values()).sort(function (a, b) {
      return String(b.last_message_at || "").localeCompare(String(a.last_message_at || ""));
    });
    rows.forEach(function (row) { list.appendChild(inboxItem(row)); });
    $("inbox-empty").hidden = rows.length > 0;
    // Conversations waiting for a person show in the tab title, for agents in another tab.
    var waiting = state.counts.waiting || 0;
    document.title = (waiting ? "(" + waiting + ") " : "") + "Agent console · Storefront Chatbot";
    document.querySelectorAll("[data-count]").forEach(function (node) {
      var n = state.counts[node.getAttribute("data-count")];
      node.textContent = n ? String(n) : "";
    });
  }

  function inboxItem(row) {
    var li = el("li", "inbox-item");
    li.setAttribute("role", "option");
    li.tabIndex = 0;
    li.dataset.id = row.conversation_id;
    li.dataset.state = row.state;
    if (row.unread) li.classList.add("unread");
    if (row.conversation_id === state.selected) {
      li.classList.add("selected");
      li.setAttribute("aria-selected", "true");
    }
    var customer = row.customer || {};
    li.appendChild(el("div", "who", customer.name || customer.email || "Guest " + row.conversation_id.slice(-4)));
    var meta = el("div", "meta");
    var pill = el("span", "pill " + row.state, STATE_LABELS[row.state] || row.state);
    meta.appendChild(pill);
    if (row.unread) meta.appendChild(el("span", "badge", row.unread > 99 ? "99+" : row.unread));
    li.appendChild(meta);
    var last = row.last_message || {};
    var prefix = last.role === "bot" ? "Bot: " : last.role === "agent" ? "Agent: " : "";
    li.appendChild(el("div", "preview", last.text ? prefix + last.text : "No messages yet"));
    var when = el("div", "when");
    when.dataset.since = row.waiting_since || row.last_message_at || "";
    when.dataset.waiting = row.waiting_since ? "1" : "";
    when.textContent = row.waiting_since ? "waiting " + ago(row.waiting_since) : ago(row.last_message_at);
    li.appendChild(when);
    if (row.state === "waiting" && row.summary && row.summary.topic) {
      li.appendChild(el("div", "summary-line", row.summary.topic +
        (row.summary.orders && row.summary.orders.length ? " · " + row.summary.orders.join(", ") : "")));
    }
    li.addEventListener("click", function () { openConversation(row.conversation_id); });
    li.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openConversation(row.conversation_id); }
    });
    return li;
  }

  function refreshTimes() {
    document.querySelectorAll(".inbox-item .when").forEach(function (node) {
      var since = node.dataset.since;
      node.textContent = node.dataset.waiting ? "waiting " + ago(since) : ago(since);
    });
  }

  // ---- conversation ------------------------------------------------------------------------

  function resetConversation() {
    state.selected = null;
    state.conv = null;
    state.suggestion = null;
    $("conv").hidden = true;
    $("conv-empty").hidden = false;
    ["customer-panel", "summary-panel", "copilot-panel"].forEach(function (id) { $(id).hidden = true; });
  }

  function openConversation(id) {
    if (state.selected && state.selected !== id) send("close", { conversation_id: state.selected });
    state.selected = id;
    document.querySelectorAll(".inbox-item").forEach(function (node) {
      var on = node.dataset.id === id;
      node.classList.toggle("selected", on);
      node.setAttribute("aria-selected", on ? "true" : "false");
    });
    send("open", { conversation_id: id });
  }

  function onConversation(frame) {
    if (frame.conversation_id !== state.selected) return;
    var switching = !state.conv || state.conv.id !== frame.conversation_id;
    state.conv = {
      id: frame.conversation_id,
      state: frame.state,
      owner: frame.owner || null,
      lastSeq: 0,
      replies: new Map(),
      indicator: null,
    };
    if (switching) {
      state.suggestion = null;
      $("suggestion").hidden = true;
      $("composer-text").value = "";
    }
    $("conv-empty").hidden = true;
    $("conv").hidden = false;
    hideBanner();
    clear($("transcript"));
    (frame.events || []).forEach(function (ev) { renderEvent(ev, false); });
    renderCustomer(frame.customer || {});
    updateSummary(frame.summary);
    $("copilot-panel").hidden = false;
    renderHeader();
    scrollDown(true);
    send("mark_read", { conversation_id: frame.conversation_id });
  }

  function onEvent(frame) {
    if (!state.conv || frame.conversation_id !== state.conv.id) return;
    var nearBottom = isNearBottom();
    renderEvent(frame.event || {}, true);
    // Ownership changes carry who owns the conversation now (null: nobody).
    var ev = frame.event || {};
    if ("owner" in frame && ev.type === "status" && !isEphemeral(ev)) state.conv.owner = frame.owner;
    renderHeader();
    scrollDown(nearBottom);
    if (frame.event && (frame.event.type === "ack" || frame.event.type === "done") && document.hasFocus()) {
      send("mark_read", { conversation_id: state.conv.id });
    }
  }

  function renderEvent(ev, live) {
    var conv = state.conv;
    var stored = typeof ev.seq === "number" && ev.type !== "error" && !isEphemeral(ev);
    if (stored) {
      if (ev.seq <= conv.lastSeq) return; // already shown (snapshot + live overlap)
      conv.lastSeq = ev.seq;
    }
    if (ev.state) conv.state = ev.state;
    var list = $("transcript");
    if (live) announce(ev);
    switch (ev.type) {
      case "ack":
        clearIndicator();
        list.appendChild(message("shopper", "Shopper", ev.text, ev.at));
        break;
      case "token":
        clearIndicator();
        replyBubble(ev.reply_id).append(ev.text);
        break;
      case "done":
        clearIndicator();
        replyBubble(ev.reply_id).finish(ev);
        break;
      case "action":
        onActionEvent(ev);
        break;
      case "agent_message":
        list.appendChild(message("agent", ev.agent || "Agent", ev.text, ev.at));
        break;
      case "note":
        list.appendChild(message("note", "Internal note · " + (ev.agent || "agent"), ev.text, ev.at));
        break;
      case "status":
        onStatus(ev, live);
        break;
      default:
        break;
    }
  }

  function announce(ev) {
    var text = ev.type === "ack" ? "Shopper: " + ev.text
      : ev.type === "done" ? "Bot: " + ev.text
        : ev.type === "agent_message" ? (ev.agent || "Agent") + ": " + ev.text : "";
    if (text) $("announcer").textContent = text;
  }

  function isEphemeral(ev) {
    return ev.type === "status" && (ev.kind === "thinking" || ev.kind === "typing" || ev.kind === "idle");
  }

  function onStatus(ev, live) {
    var conv = state.conv;
    if (ev.kind === "agent_left") conv.owner = null;
    if (isEphemeral(ev)) {
      if (!live) return;
      if (ev.agent && state.agent && ev.agent === state.agent.name) return; // my own typing
      clearIndicator();
      if (ev.kind === "idle") return;
      var who = ev.kind === "thinking" ? "Bot is thinking…" : (ev.agent ? ev.agent + " is typing…" : "Shopper is typing…");
      conv.indicator = el("li", "status-line", who);
      $("transcript").appendChild(conv.indicator);
      return;
    }
    var texts = {
      agent_joined: (ev.agent || "An agent") + " joined the conversation",
      agent_left: (ev.agent || "The agent") + " handed the conversation back to the bot",
      handoff_requested: "Handed off to a person: waiting for an agent",
      resolved: "Resolved" + (ev.agent ? " by " + ev.agent : ""),
      reopened: "Reopened",
      verified: ev.text || "Customer verified",
    };
    $("transcript").appendChild(el("li", "status-line", texts[ev.kind] || ev.text || ev.kind));
  }

  function clearIndicator() {
    if (state.conv && state.conv.indicator) {
      state.conv.indicator.remove();
      state.conv.indicator = null;
    }
  }

  function message(kind, who, text, at) {
    var li = el("li", "msg " + kind);
    li.appendChild(el("div", "who", at ? who + " · " + clock(at) : who));
    li.appendChild(el("div", "bubble", text));
    return li;
  }

  function replyBubble(replyId) {
    var conv = state.conv;
    var entry = conv.replies.get(replyId);
    if (!entry) {
      var li = el("li", "msg bot streaming");
      li.dataset.replyId = replyId;
      var who = el("div", "who", "Bot");
      var bubble = el("div", "bubble", "");
      li.appendChild(who);
      li.appendChild(bubble);
      $("transcript").appendChild(li);
      entry = {
        text: "",
        append: function (piece) { entry.text += piece; bubble.textContent = entry.text; },
        finish: function (ev) {
          li.classList.remove("streaming");
          entry.text = ev.text || entry.text;
          bubble.textContent = entry.text;
          if (ev.interrupted) li.classList.add("interrupted");
          who.textContent = "Bot" + (ev.at ? " · " + clock(ev.at) : "") + (ev.interrupted ? " · stopped" : "") +
            (ev.handoff ? " · suggested a handoff" : "");
          var sources = ev.sources || [];
          if (sources.length) li.appendChild(sourceList(sources));
          if (ev.action && ev.action.status === "proposed") li.appendChild(proposalBox(ev.action));
        },
      };
      conv.replies.set(replyId, entry);
    }
    return entry;
  }

  /** The proposal a bot reply offered the shopper; its status follows the action events. */
  function proposalBox(action) {
    var box = el("div", "proposal");
    box.dataset.actionId = action.id;
    box.appendChild(el("div", "proposal-kind", "Proposed: " + (ACTION_KINDS[action.kind] || action.kind)));
    box.appendChild(el("div", "proposal-summary", action.summary || ""));
    var status = el("div", "action-state proposed", ACTION_STATUS.proposed);
    box.appendChild(status);
    return box;
  }

  function onActionEvent(ev) {
    var label = ACTION_STATUS[ev.status] || ev.status;
    document.querySelectorAll("#transcript .proposal").forEach(function (box) {
      if (box.dataset.actionId !== ev.id) return;
      var status = box.querySelector(".action-state");
      status.className = "action-state " + ev.status;
      status.textContent = label + (ev.reason ? ": " + ev.reason : "");
    });
    var line = el("li", "status-line action-line " + ev.status,
      "Order action " + label.toLowerCase() + ": " + (ev.summary || ACTION_KINDS[ev.kind] || ev.kind) +
      (ev.reason ? " (" + ev.reason + ")" : ""));
    line.dataset.actionId = ev.id;
    $("transcript").appendChild(line);
    // The customer panel lists the conversation's actions with their current status.
    var list = (state.customerPanel && state.customerPanel.actions) || [];
    var row = list.filter(function (a) { return a.id === ev.id; })[0];
    if (row) { row.status = ev.status; row.reason = ev.reason || ""; }
    else list.push({ id: ev.id, kind: ev.kind, status: ev.status, summary: ev.summary, reason: ev.reason || "" });
    if (state.customerPanel) { state.customerPanel.actions = list; renderCustomerActions(list); }
  }

  function sourceList(sources) {
    var ul = el("ul", "sources");
    ul.setAttribute("aria-label", "Sources");
    sources.forEach(function (s) {
      var li = el("li", "source");
      li.title = (s.kind || "") + " " + (s.id || "");
      li.appendChild(el("span", "kind", s.kind || "source"));
      li.appendChild(document.createTextNode(s.title || s.id || ""));
      ul.appendChild(li);
    });
    return ul;
  }

  function renderHeader() {
    var conv = state.conv;
    if (!conv) return;
    var row = state.rows.get(conv.id) || {};
    var customer = row.customer || state.customerPanel || {};
    $("conv-customer").textContent = customer.name || customer.email || "Guest";
    var pill = $("conv-state");
    pill.className = "pill " + conv.state;
    pill.textContent = STATE_LABELS[conv.state] || conv.state;
    var mine = !!(conv.state === "agent" && conv.owner && state.agent && conv.owner.id === state.agent.id);
    var sub = conv.id;
    if (conv.state === "agent" && conv.owner) sub += " · with " + (mine ? "you" : conv.owner.name || "an agent");
    if (conv.state === "bot") sub += " · the bot is answering";
    if (conv.state === "waiting") sub += " · waiting for an agent";
    $("conv-sub").textContent = sub;
    $("btn-take").hidden = !(conv.state === "bot" || conv.state === "waiting");
    $("btn-handback").hidden = !(conv.state === "agent" || conv.state === "waiting");
    $("btn-resolve").hidden = conv.state === "resolved";
    $("btn-reopen").hidden = conv.state !== "resolved";
    var canReply = state.mode === "note" || mine;
    var textarea = $("composer-text");
    textarea.placeholder = state.mode === "note"
      ? "Write a note for your team (the shopper never sees it)"
      : mine ? "Reply to the shopper" : "Take over the conversation to reply";
    $("composer-send").disabled = !canReply;
    $("composer-send").textContent = state.mode === "note" ? "Add note" : "Send";
    $("composer-hint").textContent = state.mode === "note"
      ? "Internal: visible to agents only."
      : mine ? "The bot stays silent while you own this conversation." : "";
  }

  // ---- customer and summary panels -----------------------------------------------------------

  function renderCustomer(customer) {
    state.customerPanel = customer;
    $("customer-panel").hidden = false;
    $("customer-name").textContent = customer.name || customer.email || "Guest shopper";
    var verified = $("customer-verified");
    if (customer.verified) {
      verified.className = "verified yes";
      verified.textContent = "✓ Verified by the store" + (customer.verified_by ? " (" + customer.verified_by + ")" : "");
    } else if (customer.verified_orders && customer.verified_orders.length) {
      verified.className = "verified yes";
      verified.textContent = "✓ Guest verified order " + customer.verified_orders.join(", ");
    } else {
      verified.className = "verified no";
      verified.textContent = "Not verified (guest)";
    }
    var facts = $("customer-facts");
    clear(facts);
    [["Email", customer.email], ["Phone", customer.phone], ["Customer id", customer.id],
      ["Since", customer.since ? String(customer.since).slice(0, 10) : ""]].forEach(function (pair) {
      if (!pair[1]) return;
      facts.appendChild(el("dt", "", pair[0]));
      facts.appendChild(el("dd", "", pair[1]));
    });
    var orders = $("customer-orders");
    clear(orders);
    (customer.orders || []).forEach(function (o) {
      var li = el("li");
      li.appendChild(el("span", "num", o.number));
      li.appendChild(el("span", "ostatus", o.status));
      var line = [o.placed_at ? String(o.placed_at).slice(0, 10) : "", o.total_display || ""].filter(Boolean).join(" · ");
      if (line) li.appendChild(el("div", "items", line));
      if (o.items && o.items.length) li.appendChild(el("div", "items", o.items.join(", ")));
      if (o.tracking) li.appendChild(el("div", "items", o.tracking));
      orders.appendChild(li);
    });
    if (!(customer.orders || []).length) {
      orders.appendChild(el("li", "items", customer.verified ? "No orders." : "Orders are shown once the shopper is verified."));
    }
    renderCustomerActions(customer.actions || []);
    state.actionForm = customer.action_form || null;
    resetAgentAction();
  }

  // ---- order actions: the customer's, the agent's own, the approval queue ---------------------

  function renderCustomerActions(actions) {
    var list = $("customer-actions");
    clear(list);
    actions.forEach(function (a) {
      var li = el("li", "customer-action");
      li.dataset.actionId = a.id;
      var head = el("div", "action-head");
      head.appendChild(el("span", "num", ACTION_KINDS[a.kind] || a.kind));
      head.appendChild(el("span", "action-state " + a.status, ACTION_STATUS[a.status] || a.status));
      li.appendChild(head);
      li.appendChild(el("div", "items", a.summary || ""));
      if (a.reason && a.status !== "proposed") li.appendChild(el("div", "items reason", a.reason));
      list.appendChild(li);
    });
    if (!actions.length) list.appendChild(el("li", "items", "None in this conversation."));
  }

  function resetAgentAction() {
    var select = $("agent-action-kind");
    clear(select);
    var modes = (state.actionForm && state.actionForm.kinds) || {};
    Object.keys(ACTION_KINDS).forEach(function (kind) {
      var opt = el("option", "", ACTION_KINDS[kind] + (modes[kind] === "off" ? " (off for this store)" : ""));
      opt.value = kind;
      select.appendChild(opt);
    });
    state.preview = null;
    $("agent-action-card").hidden = true;
    $("agent-action-error").hidden = true;
    $("agent-action-preview").disabled = false;
    renderActionFields();
  }

  // ---- the form per kind: order, reason, items and their new options, payment, address ----

  function formOrders() { return (state.actionForm && state.actionForm.orders) || []; }

  function chosenOrder() {
    var pick = $("aa-order");
    var number = pick ? pick.value : "";
    return formOrders().filter(function (o) { return o.number === number; })[0] || null;
  }

  function field(labelText, control) {
    var box = el("div", "field");
    var label = el("label", "", labelText);
    label.htmlFor = control.id;
    box.appendChild(label);
    box.appendChild(control);
    return box;
  }

  function selectOf(id, choices, value) {
    var select = el("select");
    select.id = id;
    choices.forEach(function (c) {
      var opt = el("option", "", c[1]);
      opt.value = c[0];
      if (c[0] === value) opt.selected = true;
      select.appendChild(opt);
    });
    return select;
  }

  function optionsText(options) {
    return Object.keys(options || {}).map(function (k) { return options[k]; }).filter(Boolean).join(", ");
  }

  function methodChoices(order, exceptId) {
    var form = state.actionForm || {};
    var list = (form.payment_methods || []).slice();
    ((order && order.paid_with) || []).forEach(function (m) { list.push(m); });
    return list.filter(function (m) { return m.id !== exceptId; }).map(function (m) {
      var label = m.label || m.id;
      if (order && m.id === order.payment_method) label += " (original)";
      if (m.balance !== null && m.balance !== undefined) label += " · balance $" + m.balance;
      return [m.id, label];
    });
  }

  function renderActionFields() {
    var box = $("agent-action-fields");
    clear(box);
    var kind = $("agent-action-kind").value;
    var needs = ACTION_FIELDS[kind] || [];
    var form = state.actionForm || {};
    var orders = formOrders();
    $("agent-action-preview").disabled = false;
    if (needs.indexOf("order") >= 0) {
      if (!orders.length) {
        box.appendChild(el("p", "note", "No orders to act on: the customer is not verified, or has none."));
        $("agent-action-preview").disabled = true;
        return;
      }
      var pick = selectOf("aa-order", orders.map(function (o) { return [o.number, o.number + " · " + o.status]; }), "");
      pick.addEventListener("change", renderOrderFields);
      box.appendChild(field("Order", pick));
    }
    var rest = el("div", "action-fields");
    rest.id = "aa-order-fields";
    box.appendChild(rest);
    if (needs.indexOf("order") < 0 && needs.indexOf("address") >= 0) {
      rest.appendChild(addressFields(form.address || {}, "The customer's new default address"));
    }
    if (needs.indexOf("order") >= 0) renderOrderFields();
  }

  function addressFields(address, legendText) {
    var set = el("fieldset", "address");
    set.appendChild(el("legend", "", legendText));
    ADDRESS_FIELDS.forEach(function (f) {
      var input = el("input");
      input.id = "aa-" + f[0];
      input.value = address[f[0]] || "";
      input.autocomplete = "off";
      var box = field(f[1], input);
      if (f[2]) box.className += " wide";
      set.appendChild(box);
    });
    return set;
  }

  /** The parts of the form that depend on the order: reason, address, items, payment. */
  function renderOrderFields() {
    var box = $("aa-order-fields");
    if (!box) return;
    clear(box);
    var kind = $("agent-action-kind").value;
    var needs = ACTION_FIELDS[kind] || [];
    var order = chosenOrder();
    var form = state.actionForm || {};
    if (!order) return;
    if (needs.indexOf("reason") >= 0) {
      if (form.reasons && form.reasons.length) {
        box.appendChild(field("Reason", selectOf("aa-reason", form.reasons.map(function (r) { return [r, r]; }), form.reasons[0])));
      } else {
        var reason = el("input");
        reason.id = "aa-reason";
        reason.placeholder = "Why the customer cancels";
        box.appendChild(field("Reason", reason));
      }
    }
    if (needs.indexOf("address") >= 0) box.appendChild(addressFields(order.address || {}, "New shipping address"));
    if (needs.indexOf("payment") >= 0) {
      var others = methodChoices(order, order.payment_method);
      if (!others.length) box.appendChild(el("p", "note", "The customer has no other saved payment method."));
      else box.appendChild(field("Pay with", selectOf("aa-payment", others, others[0][0])));
    }
    if (needs.indexOf("items") >= 0) box.appendChild(itemFields(order, needs.indexOf("variants") >= 0));
    var payLabel = needs.indexOf("difference") >= 0 ? "Charge or refund the price difference with"
      : needs.indexOf("refund") >= 0 ? "Refund to" : "";
    if (payLabel) {
      var methods = methodChoices(order, null);
      if (methods.length) box.appendChild(field(payLabel, selectOf("aa-payment", methods, order.payment_method)));
    }
  }

  function itemFields(order, withVariants) {
    var set = el("fieldset", "items");
    set.appendChild(el("legend", "", withVariants ? "Items to change" : "Items"));
    (order.items || []).forEach(function (item, i) {
      var line = el("div", "line");
      line.dataset.itemId = item.item_id;
      var pick = el("div", "pick");
      var check = el("input");
      check.type = "checkbox";
      check.id = "aa-item-" + i;
      check.className = "aa-item";
      var label = el("label", "", (item.quantity > 1 ? item.quantity + " × " : "") + item.name +
        (optionsText(item.options) ? " (" + optionsText(item.options) + ")" : "") + " · $" + item.price);
      label.htmlFor = check.id;
      pick.appendChild(check);
      pick.appendChild(label);
      line.appendChild(pick);
      var units = null;
      if (item.quantity > 1) {
        units = el("input", "units");
        units.type = "number";
        units.min = "1";
        units.max = String(item.quantity);
        units.value = String(item.quantity);
        units.id = "aa-units-" + i;
        units.disabled = true;
        line.appendChild(field("How many", units));
      }
      var variant = null;
      if (withVariants) {
        var choices = (item.variants || []).map(function (v) {
          return [v.item_id, (optionsText(v.options) || v.item_id) + " · $" + v.price + (v.current ? " (as now)" : "")];
        });
        variant = selectOf("aa-variant-" + i, choices, "");
        variant.disabled = true;
        if (choices.length > 1) variant.selectedIndex = 1;  // another option than the current
        line.appendChild(field("New option", variant));
      }
      check.addEventListener("change", function () {
        if (units) units.disabled = !check.checked;
        if (variant) variant.disabled = !check.checked;
      });
      set.appendChild(line);
    });
    return set;
  }

  /** The kind's parameters from the form, or a message saying what is missing. */
  function actionParams(kind) {
    var needs = ACTION_FIELDS[kind] || [];
    var params = {};
    var order = chosenOrder();
    if (needs.indexOf("order") >= 0) {
      if (!order) return "Choose an order.";
      params.order = order.number;
    }
    if (needs.indexOf("reason") >= 0) {
      params.reason = ($("aa-reason").value || "").trim();
      if (!params.reason) return "Give the reason for the cancellation.";
    }
    if (needs.indexOf("address") >= 0) {
      var address = {};
      ADDRESS_FIELDS.forEach(function (f) { address[f[0]] = ($("aa-" + f[0]).value || "").trim(); });
      params.address = address;
    }
    if (needs.indexOf("items") >= 0) {
      params.items = [];
      if (needs.indexOf("variants") >= 0) params.new_items = [];
      (order.items || []).forEach(function (item, i) {
        if (!$("aa-item-" + i).checked) return;
        var units = $("aa-units-" + i);
        var n = units ? Math.max(1, Math.min(item.quantity, parseInt(units.value, 10) || 1)) : 1;
        for (var k = 0; k < n; k += 1) {
          params.items.push(item.item_id);
          if (params.new_items) params.new_items.push($("aa-variant-" + i).value);
        }
      });
      if (!params.items.length) return "Choose at least one item.";
    }
    if (needs.indexOf("payment") >= 0 || needs.indexOf("difference") >= 0 || needs.indexOf("refund") >= 0) {
      var method = $("aa-payment");
      if (!method) return "There is no payment method to use.";
      params.payment_method = method.value;
    }
    return params;
  }

  function previewAgentAction(event) {
    event.preventDefault();
    if (!state.conv) return;
    var error = $("agent-action-error");
    error.hidden = true;
    var kind = $("agent-action-kind").value;
    var params = actionParams(kind);
    if (typeof params === "string") {
      error.textContent = params;
      error.hidden = false;
      return;
    }
    if (send("propose_action", { conversation_id: state.conv.id, kind: kind, params: params })) {
      $("agent-action-preview").disabled = true;
    }
  }

  function renderPreview(frame) {
    if (!state.conv || frame.conversation_id !== state.conv.id) return;
    var a = frame.action || {};
    state.preview = frame;
    var open = a.status === "proposed";
    $("agent-action-card").hidden = false;
    $("agent-action-summary").textContent = a.summary || "";
    $("agent-action-confirm").hidden = !open;
    $("agent-action-cancel").hidden = !open;
    $("agent-action-confirm").disabled = false;
    $("agent-action-cancel").disabled = false;
    $("agent-action-preview").disabled = open;
    var status = $("agent-action-status");
    status.className = "action-state " + (a.status || "");
    status.textContent = open ? "Confirm to run it for the customer." : (ACTION_STATUS[a.status] || a.status) + (a.reason ? ": " + a.reason : "");
    if (open) $("agent-action-confirm").focus();
  }

  function answerAgentAction(accept) {
    if (!state.conv || !state.preview || !state.preview.action) return;
    if (send("confirm_action", { conversation_id: state.conv.id, action_id: state.preview.action.id, accept: accept })) {
      $("agent-action-confirm").disabled = true;
      $("agent-action-cancel").disabled = true;
    }
  }

  function renderApprovals(frame) {
    if (frame.store !== state.store) return;
    state.actions = frame;
    var pending = frame.pending || [];
    var list = $("approvals-list");
    clear(list);
    pending.forEach(function (a) { list.appendChild(approvalItem(a)); });
    $("approvals-empty").hidden = pending.length > 0;
    var count = $("approvals-count");
    count.hidden = !pending.length;
    count.textContent = String(pending.length);
    var rows = $("modes-rows");
    clear(rows);
    var modes = frame.modes || {};
    Object.keys(modes).forEach(function (kind) {
      var tr = el("tr");
      var id = "mode-" + kind;
      var th = el("th", "", "");
      th.scope = "row";
      var label = el("label", "", ACTION_KINDS[kind] || kind);
      label.htmlFor = id;
      th.appendChild(label);
      tr.appendChild(th);
      var select = el("select");
      select.id = id;
      select.dataset.kind = kind;
      ["auto", "approval", "off"].forEach(function (m) {
        var opt = el("option", "", MODE_LABELS[m]);
        opt.value = m;
        select.appendChild(opt);
      });
      select.value = modes[kind];
      select.disabled = !frame.can_configure;
      select.addEventListener("change", function () {
        var change = {};
        change[kind] = select.value;
        $("approvals-error").hidden = true;
        send("set_action_modes", { store: state.store, modes: change });
      });
      var td = el("td");
      td.appendChild(select);
      tr.appendChild(td);
      rows.appendChild(tr);
    });
    $("modes-hint").textContent = frame.can_configure
      ? "Per action: run it on the shopper's yes, hold it for an agent's approval, or never offer it."
      : "Only admins change the modes.";
  }

  function approvalItem(a) {
    var li = el("li", "approval");
    li.dataset.actionId = a.id;
    var head = el("div", "action-head");
    head.appendChild(el("span", "num", ACTION_KINDS[a.kind] || a.kind));
    if (a.order) head.appendChild(el("span", "tag", a.order));
    li.appendChild(head);
    var summaryId = "approval-" + a.id;
    var summary = el("p", "summary", a.summary || "");
    summary.id = summaryId;
    li.appendChild(summary);
    if (a.conversation_id) {
      var link = el("button", "link", "Open conversation");
      link.type = "button";
      link.addEventListener("click", function () { openConversation(a.conversation_id); });
      li.appendChild(link);
    }
    var reason = el("input", "reject-reason");
    reason.type = "text";
    reason.maxLength = 500;
    reason.placeholder = "Reason for the shopper (if you reject)";
    reason.setAttribute("aria-label", "Reason for the shopper if you reject " + (ACTION_KINDS[a.kind] || a.kind));
    li.appendChild(reason);
    var buttons = el("div", "row-buttons");
    var approve = el("button", "btn btn-primary", "Approve");
    approve.type = "button";
    approve.setAttribute("aria-describedby", summaryId);
    var reject = el("button", "btn", "Reject");
    reject.type = "button";
    reject.setAttribute("aria-describedby", summaryId);
    approve.addEventListener("click", function () {
      $("approvals-error").hidden = true;
      if (send("approve_action", { store: state.store, action_id: a.id })) { approve.disabled = true; reject.disabled = true; }
    });
    reject.addEventListener("click", function () {
      $("approvals-error").hidden = true;
      if (send("reject_action", { store: state.store, action_id: a.id, reason: reason.value.trim() })) {
        approve.disabled = true; reject.disabled = true;
      }
    });
    buttons.appendChild(approve);
    buttons.appendChild(reject);
    li.appendChild(buttons);
    return li;
  }

  function updateSummary(summary) {
    var panel = $("summary-panel");
    if (!summary || !summary.text) { panel.hidden = true; return; }
    panel.hidden = false;
    $("summary-text").textContent = summary.text;
    var tags = $("summary-tags");
    clear(tags);
    if (summary.topic) tags.appendChild(el("span", "tag", summary.topic));
    (summary.orders || []).forEach(function (n) { tags.appendChild(el("span", "tag", n)); });
  }

  // ---- copilot ------------------------------------------------------------------------------

  function suggest() {
    if (!state.conv) return;
    if (!send("suggest", { conversation_id: state.conv.id })) return;
    state.suggestion = { id: null, text: "", sources: [], done: false };
    $("suggestion").hidden = false;
    $("suggestion").classList.add("streaming");
    $("suggestion-text").textContent = "";
    clear($("suggestion-sources"));
    $("btn-insert").disabled = true;
    $("btn-suggest").disabled = true;
  }

  function onSuggestionToken(frame) {
    if (!state.conv || frame.conversation_id !== state.conv.id || !state.suggestion) return;
    state.suggestion.id = frame.suggestion_id;
    state.suggestion.text += frame.text;
    $("suggestion-text").textContent = state.suggestion.text;
  }

  function onSuggestionDone(frame) {
    if (!state.conv || frame.conversation_id !== state.conv.id || !state.suggestion) return;
    state.suggestion = { id: frame.suggestion_id, text: frame.text, sources: frame.sources || [], done: true };
    $("suggestion").classList.remove("streaming");
    $("suggestion-text").textContent = frame.text || "(the copilot has nothing grounded to suggest)";
    var sources = $("suggestion-sources");
    clear(sources);
    (frame.sources || []).forEach(function (s) {
      var li = el("li", "source");
      li.appendChild(el("span", "kind", s.kind || "source"));
      li.appendChild(document.createTextNode(s.title || s.id || ""));
      sources.appendChild(li);
    });
    $("btn-insert").disabled = !frame.text;
    $("btn-suggest").disabled = false;
  }

  function insertSuggestion() {
    if (!state.suggestion || !state.suggestion.text) return;
    setMode("reply");
    var textarea = $("composer-text");
    textarea.value = state.suggestion.text;
    textarea.focus();
    textarea.setSelectionRange(textarea.value.length, textarea.value.length);
  }

  // ---- team (admins) --------------------------------------------------------------------------

  function openTeam() {
    $("team-error").hidden = true;
    var boxes = $("team-stores");
    clear(boxes);
    state.stores.forEach(function (s) {
      var label = el("label", "check");
      var box = el("input");
      box.type = "checkbox";
      box.value = s.name;
      box.checked = s.name === state.store;
      label.appendChild(box);
      label.appendChild(document.createTextNode(s.title && s.title !== s.name ? s.title + " (" + s.name + ")" : s.name));
      boxes.appendChild(label);
    });
    send("list_agents", {});
    $("team").showModal();
  }

  function renderTeam(agents) {
    var body = $("team-rows");
    clear(body);
    var added = $("team-email").value.trim().toLowerCase();
    if (added && agents.some(function (a) { return a.email === added; })) {
      $("team-email").value = "";
      $("team-name").value = "";
      $("team-admin").checked = false;
    }
    agents.forEach(function (a) {
      var tr = el("tr");
      var who = el("td");
      who.appendChild(el("div", "", a.name || a.email));
      who.appendChild(el("div", "sub", a.email));
      tr.appendChild(who);
      tr.appendChild(el("td", "", a.admin ? "Admin" : "Agent"));
      tr.appendChild(el("td", "", a.admin ? "All stores" : (a.stores || []).join(", ") || "—"));
      tr.appendChild(el("td", "sub", a.last_login ? String(a.last_login).replace("T", " ").slice(0, 16) + " UTC" : "never"));
      var cell = el("td");
      if (!state.agent || a.email !== state.agent.email) {
        var remove = el("button", "btn", "Remove");
        remove.type = "button";
        remove.addEventListener("click", function () {
          if (window.confirm("Remove " + a.email + "? Their open sessions end at once.")) {
            send("remove_agent", { email: a.email });
          }
        });
        cell.appendChild(remove);
      }
      tr.appendChild(cell);
      body.appendChild(tr);
    });
  }

  function addTeamMember(event) {
    event.preventDefault();
    $("team-error").hidden = true;
    var stores = Array.from(document.querySelectorAll("#team-stores input:checked")).map(function (b) { return b.value; });
    var ok = send("add_agent", {
      email: $("team-email").value.trim(),
      name: $("team-name").value.trim(),
      password: $("team-password").value,
      stores: stores,
      admin: $("team-admin").checked,
    });
    if (ok) {
      $("team-password").value = "";
    }
  }

  // ---- composer and actions -------------------------------------------------------------------

  function setMode(mode) {
    state.mode = mode;
    $("composer").classList.toggle("note-mode", mode === "note");
    document.querySelectorAll(".composer-tabs .tab").forEach(function (tab) {
      var on = tab.dataset.mode === mode;
      tab.classList.toggle("active", on);
      tab.setAttribute("aria-selected", on ? "true" : "false");
    });
    renderHeader();
  }

  // Tell the shopper the agent is typing (throttled), and when they stopped.
  var typing = { sentAt: 0, timer: null };

  function onComposerInput() {
    if (!state.conv || state.mode !== "reply" || $("composer-send").disabled) return;
    var now = Date.now();
    if (now - typing.sentAt > 3000) {
      typing.sentAt = now;
      send("typing", { conversation_id: state.conv.id, active: true });
    }
    clearTimeout(typing.timer);
    typing.timer = setTimeout(stopTyping, 4000);
  }

  function stopTyping() {
    clearTimeout(typing.timer);
    if (!typing.sentAt || !state.conv) return;
    typing.sentAt = 0;
    send("typing", { conversation_id: state.conv.id, active: false });
  }

  function submitComposer(event) {
    event.preventDefault();
    if (!state.conv) return;
    var textarea = $("composer-text");
    var text = textarea.value.trim();
    if (!text) return;
    state.sendCounter += 1;
    var id = (state.mode === "note" ? "n_" : "a_") + Date.now().toString(36) + "_" + state.sendCounter;
    if (send(state.mode === "note" ? "note" : "send", { conversation_id: state.conv.id, id: id, text: text })) {
      textarea.value = "";
      if (state.mode === "reply") stopTyping();
    }
  }

  function action(type) {
    if (!state.conv) return;
    hideBanner();
    send(type, { conversation_id: state.conv.id });
  }

  function banner(text, isError) {
    var node = $("conv-banner");
    node.textContent = text;
    node.classList.toggle("error", !!isError);
    node.hidden = false;
    clearTimeout(banner.timer);
    banner.timer = setTimeout(hideBanner, 6000);
  }

  function hideBanner() { $("conv-banner").hidden = true; }

  function isNearBottom() {
    var list = $("transcript");
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function scrollDown(force) {
    if (!force) return;
    var list = $("transcript");
    list.scrollTop = list.scrollHeight;
  }

  // ---- wiring ---------------------------------------------------------------------------------

  async function start() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("store-select").addEventListener("change", function (e) {
      state.store = e.target.value;
      state.rows.clear();
      resetConversation();
      subscribe();
    });
    var searchTimer = null;
    $("search").addEventListener("input", function (e) {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(function () { state.q = e.target.value.trim(); subscribe(); }, 250);
    });
    $("filters").addEventListener("click", function (e) {
      var chip = e.target.closest("[data-filter]");
      if (!chip) return;
      state.filter = chip.dataset.filter;
      document.querySelectorAll("#filters .chip").forEach(function (c) {
        c.classList.toggle("active", c === chip);
      });
      subscribe();
    });
    $("team-open").addEventListener("click", openTeam);
    $("team-close").addEventListener("click", function () { $("team").close(); });
    $("team-add").addEventListener("submit", addTeamMember);
    $("btn-take").addEventListener("click", function () { action("take_over"); });
    $("btn-handback").addEventListener("click", function () { action("hand_back"); });
    $("btn-resolve").addEventListener("click", function () { action("resolve"); });
    $("btn-reopen").addEventListener("click", function () { action("reopen"); });
    $("btn-suggest").addEventListener("click", suggest);
    $("btn-insert").addEventListener("click", insertSuggestion);
    $("agent-action").addEventListener("submit", previewAgentAction);
    $("agent-action-kind").addEventListener("change", function () { renderActionFields(); $("agent-action-card").hidden = true; });
    $("agent-action-confirm").addEventListener("click", function () { answerAgentAction(true); });
    $("agent-action-cancel").addEventListener("click", function () { answerAgentAction(false); });
    $("composer").addEventListener("submit", submitComposer);
    $("composer-text").addEventListener("input", onComposerInput);
    $("composer-text").addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submitComposer(e);
    });
    document.querySelectorAll(".composer-tabs .tab").forEach(function (tab) {
      tab.addEventListener("click", function () { setMode(tab.dataset.mode); });
    });
    window.addEventListener("focus", function () {
      if (state.conv) send("mark_read", { conversation_id: state.conv.id });
    });
    setInterval(refreshTimes, 15000);

    // Ask whether the cookie holds a live session before opening the socket, so a
    // signed-out agent sees the login form at once.
    try {
      var res = await fetch("/console/session", { credentials: "same-origin" });
      if (res.ok) connect();
      else showLogin("");
    } catch (e) {
      showLogin("The server cannot be reached. Try again in a moment.");
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
