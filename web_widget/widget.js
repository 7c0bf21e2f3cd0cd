/*! Storefront chat widget | Apache-2.0 | one file, no build step.
 *
 * <script src="https://chat.example.com/widget.js" data-store="KEY" async></script>
 *
 * Layout of this file, top to bottom:
 *   1. strings (English, Spanish, German)
 *   2. the wire protocol: client frame builders + server frame decoding (mirrors
 *      chatbot/protocol/chat.py; both sides are tested against protocol-examples.json)
 *   3. Conversation: the transcript as a pure state machine fed with server events
 *      (no DOM, no sockets: the Node tests drive it directly)
 *   4. a safe rich-text subset (bold, http(s) links, lists) parsed to a tree, never HTML
 *   5. the Widget: DOM in a shadow root, the socket with backoff, storage, the JS API.
 */
(function (root) {
  "use strict";

  var VERSION = "0.1.0";
  var PROTOCOL_VERSION = 1;
  var STORAGE_PREFIX = "storefront-chat:v1:";
  var MAX_STORED_ITEMS = 200;
  // Stored events advance last_seq and are deduplicated by it; ephemeral ones
  // (thinking/typing/idle status, error) repeat the last stored seq and must still apply.
  var STORED_TYPES = { ack: 1, token: 1, done: 1, agent_message: 1, action: 1 };
  var STORED_STATUS = {
    handoff_requested: 1, agent_joined: 1, agent_left: 1, resolved: 1, reopened: 1, verified: 1
  };
  // Errors after which reconnecting cannot help (the server closes with 1008).
  var FATAL_CODES = { unknown_store: 1, origin_not_allowed: 1, unsupported_version: 1 };

  // ---- 1. strings --------------------------------------------------------------------

  var STRINGS = {
    en: {
      open: "Open chat", close: "Close chat", unread: "{n} unread",
      title: "Chat with us", greeting: "Hi! Ask me about orders, shipping, returns or products.",
      subBot: "Virtual assistant", subWaiting: "Waiting for a team member\u2026",
      subAgent: "{name} from the team is here", subResolved: "Conversation closed",
      you: "You", assistant: "Assistant", team: "Team",
      input: "Message", placeholder: "Write a message\u2026", send: "Send",
      handoff: "Talk to a person", stop: "Stop", endChat: "End conversation", newChat: "Start a new conversation",
      thinking: "Thinking\u2026", typing: "{name} is typing\u2026", someone: "A team member",
      sources: "Sources", rate: "Was this helpful?", helpful: "Helpful", notHelpful: "Not helpful",
      suggestHandoff: "Would you like to talk to a person?",
      handoffRequested: "We asked a team member to join. You can keep writing.",
      agentJoined: "{name} joined the conversation", agentLeft: "{name} left the conversation",
      resolved: "This conversation was closed.", reopened: "Conversation reopened",
      verified: "Order verified", interrupted: "Reply interrupted",
      notSent: "Not sent", retry: "Retry", sending: "Sending\u2026",
      reconnecting: "Connection lost. Reconnecting\u2026", offline: "You are offline. We will reconnect when you are back.",
      unavailable: "Chat is not available right now.", dismiss: "Dismiss",
      csatQ: "How would you rate this conversation?", csatStar: "{n} out of 5", csatSkip: "Skip",
      csatThanks: "Thank you for your feedback!",
      identityError: "We could not confirm your account, so you are chatting as a guest.",
      e_rate_limited: "You are sending messages quickly. Please wait a moment and try again.",
      e_queue_full: "Please wait for the current reply before sending more.",
      e_message_too_long: "That message is too long.", e_empty_message: "The message is empty.",
      e_not_ready: "The assistant is starting up. Your message will be answered shortly.",
      e_answer_failed: "Sorry, I could not answer that. Try rephrasing, or talk to a person.",
      e_generic: "Something went wrong. Please try again.",
      kind_faq: "FAQ", kind_policy: "Policy", kind_product: "Product", kind_order: "Order",
      kind_shipment: "Shipment", kind_other: "Source",
      newTab: "(opens in a new tab)",
      actionTitle: "Please confirm", actionConfirm: "Confirm", actionKeep: "Keep my order",
      actionHint: "Choose Confirm or Keep my order below the message, or answer yes or no.",
      actionSending: "Sending your answer\u2026", action_executed: "Done",
      action_declined: "Nothing was changed", action_failed: "This could not be done",
      action_awaiting_approval: "Waiting for approval by our team", action_expired: "This offer has expired",
      action_used: "This was already answered", action_unknown: "This offer is no longer open"
    },
    es: {
      open: "Abrir chat", close: "Cerrar chat", unread: "{n} sin leer",
      title: "Habla con nosotros", greeting: "\u00a1Hola! Preg\u00fantame por pedidos, env\u00edos, devoluciones o productos.",
      subBot: "Asistente virtual", subWaiting: "Esperando a una persona del equipo\u2026",
      subAgent: "{name} del equipo est\u00e1 aqu\u00ed", subResolved: "Conversaci\u00f3n cerrada",
      you: "T\u00fa", assistant: "Asistente", team: "Equipo",
      input: "Mensaje", placeholder: "Escribe un mensaje\u2026", send: "Enviar",
      handoff: "Hablar con una persona", stop: "Detener", endChat: "Terminar conversaci\u00f3n",
      newChat: "Empezar una conversaci\u00f3n nueva",
      thinking: "Pensando\u2026", typing: "{name} est\u00e1 escribiendo\u2026", someone: "Una persona del equipo",
      sources: "Fuentes", rate: "\u00bfTe ha sido \u00fatil?", helpful: "\u00datil", notHelpful: "No es \u00fatil",
      suggestHandoff: "\u00bfQuieres hablar con una persona?",
      handoffRequested: "Hemos pedido a una persona del equipo que se una. Puedes seguir escribiendo.",
      agentJoined: "{name} se ha unido a la conversaci\u00f3n", agentLeft: "{name} ha salido de la conversaci\u00f3n",
      resolved: "Esta conversaci\u00f3n se ha cerrado.", reopened: "Conversaci\u00f3n reabierta",
      verified: "Pedido verificado", interrupted: "Respuesta interrumpida",
      notSent: "No enviado", retry: "Reintentar", sending: "Enviando\u2026",
      reconnecting: "Se perdi\u00f3 la conexi\u00f3n. Reconectando\u2026",
      offline: "Est\u00e1s sin conexi\u00f3n. Volveremos a conectar cuando vuelvas.",
      unavailable: "El chat no est\u00e1 disponible ahora.", dismiss: "Cerrar aviso",
      csatQ: "\u00bfC\u00f3mo valorar\u00edas esta conversaci\u00f3n?", csatStar: "{n} de 5", csatSkip: "Omitir",
      csatThanks: "\u00a1Gracias por tu opini\u00f3n!",
      identityError: "No pudimos confirmar tu cuenta; est\u00e1s chateando como invitado.",
      e_rate_limited: "Est\u00e1s enviando mensajes muy r\u00e1pido. Espera un momento y vuelve a intentarlo.",
      e_queue_full: "Espera a la respuesta actual antes de enviar m\u00e1s.",
      e_message_too_long: "El mensaje es demasiado largo.", e_empty_message: "El mensaje est\u00e1 vac\u00edo.",
      e_not_ready: "El asistente se est\u00e1 iniciando. Responder\u00e1 en breve.",
      e_answer_failed: "Lo siento, no pude responder. Prueba a reformularlo o habla con una persona.",
      e_generic: "Algo sali\u00f3 mal. Int\u00e9ntalo de nuevo.",
      kind_faq: "Preguntas", kind_policy: "Pol\u00edtica", kind_product: "Producto", kind_order: "Pedido",
      kind_shipment: "Env\u00edo", kind_other: "Fuente",
      newTab: "(se abre en una pesta\u00f1a nueva)",
      actionTitle: "Confirma, por favor", actionConfirm: "Confirmar", actionKeep: "Mantener mi pedido",
      actionHint: "Elige Confirmar o Mantener mi pedido debajo del mensaje, o responde s\u00ed o no.",
      actionSending: "Enviando tu respuesta\u2026", action_executed: "Hecho",
      action_declined: "No se ha cambiado nada", action_failed: "No se ha podido hacer",
      action_awaiting_approval: "Pendiente de aprobaci\u00f3n por nuestro equipo", action_expired: "Esta oferta ha caducado",
      action_used: "Ya se respondi\u00f3", action_unknown: "Esta oferta ya no est\u00e1 abierta"
    },
    de: {
      open: "Chat \u00f6ffnen", close: "Chat schlie\u00dfen", unread: "{n} ungelesen",
      title: "Schreib uns", greeting: "Hallo! Frag mich zu Bestellungen, Versand, R\u00fccksendungen oder Produkten.",
      subBot: "Virtueller Assistent", subWaiting: "Warte auf jemanden aus dem Team\u2026",
      subAgent: "{name} aus dem Team ist da", subResolved: "Unterhaltung beendet",
      you: "Du", assistant: "Assistent", team: "Team",
      input: "Nachricht", placeholder: "Nachricht schreiben\u2026", send: "Senden",
      handoff: "Mit einem Menschen sprechen", stop: "Stopp", endChat: "Unterhaltung beenden",
      newChat: "Neue Unterhaltung beginnen",
      thinking: "Denkt nach\u2026", typing: "{name} schreibt\u2026", someone: "Jemand aus dem Team",
      sources: "Quellen", rate: "War das hilfreich?", helpful: "Hilfreich", notHelpful: "Nicht hilfreich",
      suggestHandoff: "M\u00f6chtest du mit einem Menschen sprechen?",
      handoffRequested: "Wir haben jemanden aus dem Team gebeten dazuzukommen. Du kannst weiterschreiben.",
      agentJoined: "{name} ist der Unterhaltung beigetreten", agentLeft: "{name} hat die Unterhaltung verlassen",
      resolved: "Diese Unterhaltung wurde beendet.", reopened: "Unterhaltung wieder ge\u00f6ffnet",
      verified: "Bestellung best\u00e4tigt", interrupted: "Antwort unterbrochen",
      notSent: "Nicht gesendet", retry: "Erneut senden", sending: "Wird gesendet\u2026",
      reconnecting: "Verbindung verloren. Verbinde neu\u2026",
      offline: "Du bist offline. Wir verbinden neu, sobald du wieder online bist.",
      unavailable: "Der Chat ist gerade nicht verf\u00fcgbar.", dismiss: "Hinweis schlie\u00dfen",
      csatQ: "Wie bewertest du diese Unterhaltung?", csatStar: "{n} von 5", csatSkip: "\u00dcberspringen",
      csatThanks: "Danke f\u00fcr deine Bewertung!",
      identityError: "Wir konnten dein Konto nicht best\u00e4tigen; du chattest als Gast.",
      e_rate_limited: "Du sendest sehr schnell. Bitte warte kurz und versuche es erneut.",
      e_queue_full: "Bitte warte auf die aktuelle Antwort, bevor du mehr sendest.",
      e_message_too_long: "Die Nachricht ist zu lang.", e_empty_message: "Die Nachricht ist leer.",
      e_not_ready: "Der Assistent startet gerade und antwortet gleich.",
      e_answer_failed: "Das konnte ich leider nicht beantworten. Formuliere es anders oder sprich mit einem Menschen.",
      e_generic: "Etwas ist schiefgelaufen. Bitte versuche es erneut.",
      kind_faq: "FAQ", kind_policy: "Richtlinie", kind_product: "Produkt", kind_order: "Bestellung",
      kind_shipment: "Sendung", kind_other: "Quelle",
      newTab: "(\u00f6ffnet in neuem Tab)",
      actionTitle: "Bitte best\u00e4tigen", actionConfirm: "Best\u00e4tigen", actionKeep: "Bestellung behalten",
      actionHint: "W\u00e4hle unter der Nachricht Best\u00e4tigen oder Bestellung behalten, oder antworte mit ja oder nein.",
      actionSending: "Deine Antwort wird gesendet\u2026", action_executed: "Erledigt",
      action_declined: "Es wurde nichts ge\u00e4ndert", action_failed: "Das war leider nicht m\u00f6glich",
      action_awaiting_approval: "Wartet auf Freigabe durch unser Team", action_expired: "Dieses Angebot ist abgelaufen",
      action_used: "Wurde schon beantwortet", action_unknown: "Dieses Angebot ist nicht mehr offen"
    }
  };

  /** The first supported language among `wanted` (e.g. "es-MX" -> "es"), else English. */
  function pickLanguage(wanted) {
    var list = [].concat(wanted || []);
    for (var i = 0; i < list.length; i++) {
      if (!list[i]) continue;
      var tag = String(list[i]).toLowerCase();
      if (STRINGS[tag]) return tag;
      var base = tag.split(/[-_]/)[0];
      if (STRINGS[base]) return base;
    }
    return "en";
  }

  function fmt(template, vars) {
    return String(template).replace(/\{(\w+)\}/g, function (m, k) {
      return vars && vars[k] != null ? String(vars[k]) : m;
    });
  }

  // ---- 2. protocol -------------------------------------------------------------------

  function clientFrame(type, fields) {
    var out = { v: PROTOCOL_VERSION, type: type };
    for (var k in fields) {
      // Optional fields are left out rather than sent as null: the server treats both
      // the same, and the frames stay identical to protocol-examples.json.
      if (fields[k] !== undefined && fields[k] !== null && fields[k] !== false) out[k] = fields[k];
    }
    return out;
  }

  /** Client frame builders; each returns a plain object (JSON.stringify it to send). */
  var frames = {
    hello: function (o) {
      return clientFrame("hello", {
        store: o.store, conversation_id: o.conversation_id, last_seq: o.conversation_id ? o.last_seq : undefined,
        resume_token: o.resume_token, identity: o.identity, new_conversation: !!o.new_conversation
      });
    },
    message: function (id, text) { return clientFrame("message", { id: id, text: text }); },
    typing: function (active) { return { v: PROTOCOL_VERSION, type: "typing", active: !!active }; },
    handoff: function (reason) { return clientFrame("handoff", { reason: reason || undefined }); },
    feedback: function (replyId, rating, comment) {
      return clientFrame("feedback", { reply_id: replyId, rating: rating, comment: comment || undefined });
    },
    stop: function (replyId) { return clientFrame("stop", { reply_id: replyId }); },
    end: function (rating, comment) {
      return clientFrame("end", { rating: rating || undefined, comment: comment || undefined });
    },
    // ``accept`` is always sent (false is a real answer: "Keep my order").
    confirm: function (actionId, accept) {
      return { v: PROTOCOL_VERSION, type: "confirm", action_id: actionId, accept: !!accept };
    }
  };

  /** Parse one server frame; null for anything this client cannot read (never throws). */
  function decodeEvent(text) {
    var obj;
    try { obj = JSON.parse(text); } catch (e) { return null; }
    if (!obj || typeof obj !== "object" || Array.isArray(obj)) return null;
    if (obj.v !== undefined && obj.v !== PROTOCOL_VERSION) return null;
    if (typeof obj.type !== "string" || !obj.type) return null;
    return obj;
  }

  function isStored(ev) {
    if (ev.type === "status") return !!STORED_STATUS[ev.kind];
    return !!STORED_TYPES[ev.type];
  }

  function str(v) { return typeof v === "string" ? v : ""; }

  // ---- 3. conversation state ---------------------------------------------------------

  /**
   * The transcript and resume point of one conversation, fed with server events.
   *
   * items: [{key, role: "shopper"|"bot"|"agent"|"system", id, text, done, pending,
   *          failed, error, sources, handoff, interrupted, rating, agent, kind}]
   * apply() returns what changed so the view can update only that (and announce
   * finished replies exactly once).
   */
  function Conversation(saved) {
    saved = saved || {};
    this.id = saved.id || null;
    this.resumeToken = saved.resumeToken || null;
    this.lastSeq = typeof saved.lastSeq === "number" ? saved.lastSeq : 0;
    this.items = Array.isArray(saved.items) ? saved.items : [];
    this.state = saved.state || "bot";
    this.agent = saved.agent || null;
    // null | "ask" (card shown) | "ended" (end sent without rating) | 1..5
    this.csat = saved.csat || null;
    this.maxChars = saved.maxChars || 4000;
    this.customer = saved.customer || null;
    this.activity = null; // ephemeral {kind: "thinking"|"typing", agent}
    // An answer sent before a page load may never have left: the card can be used again
    // (the server answers a repeat with the first ack, or action_used).
    this.items.forEach(function (it) { if (it.action) it.action.answering = null; });
  }

  Conversation.prototype.toJSON = function () {
    return {
      id: this.id, resumeToken: this.resumeToken, lastSeq: this.lastSeq,
      items: this.items.slice(-MAX_STORED_ITEMS), state: this.state, agent: this.agent,
      csat: this.csat, maxChars: this.maxChars, customer: this.customer
    };
  };

  Conversation.prototype.find = function (role, id) {
    for (var i = this.items.length - 1; i >= 0; i--) {
      var it = this.items[i];
      if (it.role === role && it.id === id) return it;
    }
    return null;
  };

  Conversation.prototype.add = function (item) {
    item.key = item.role.charAt(0) + ":" + item.id;
    this.items.push(item);
    return item;
  };

  /** The bot reply still streaming, if any. */
  Conversation.prototype.streaming = function () {
    for (var i = this.items.length - 1; i >= 0; i--) {
      var it = this.items[i];
      if (it.role === "bot" && !it.done) return it;
    }
    return null;
  };

  /** Shopper messages not yet acknowledged, oldest first (resent after reconnecting). */
  Conversation.prototype.pending = function () {
    return this.items.filter(function (it) { return it.role === "shopper" && it.pending && !it.failed; });
  };

  /** A local shopper message, shown at once and marked pending until its ack. */
  Conversation.prototype.addShopper = function (id, text) {
    return this.add({ role: "shopper", id: id, text: text, pending: true });
  };

  function effects() { return { items: [], reset: false, finished: [], activity: false, state: false, error: null, welcome: false, actions: [] }; }

  // Outcomes of a proposed action (the status of an ``action`` event), and what a refused
  // confirm (its error code) makes of the card.
  var ACTION_STATUSES = { executed: 1, declined: 1, failed: 1, awaiting_approval: 1, expired: 1 };
  var ACTION_ERRORS = { unknown_action: "unknown", action_expired: "expired", action_used: "used" };

  /** The bot reply whose card proposes action `id`, if any. */
  Conversation.prototype.findAction = function (id) {
    for (var i = this.items.length - 1; i >= 0; i--) {
      var it = this.items[i];
      if (it.action && it.action.id === id) return it;
    }
    return null;
  };

  /** An ``action`` event: the outcome goes on its card (or, without one, a status line). */
  Conversation.prototype.actionOutcome = function (ev, fx) {
    if (!ACTION_STATUSES[ev.status]) return;
    var it = this.findAction(str(ev.id));
    if (!it) {
      it = this.add({ role: "system", id: "a" + ev.seq, kind: "action", text: str(ev.summary), agent: null });
      it.action = { id: str(ev.id), kind: str(ev.kind), summary: str(ev.summary), status: "proposed", reason: "", answering: null };
    }
    it.action.status = ev.status;
    it.action.reason = str(ev.reason);
    it.action.answering = null;
    fx.items.push(it);
    fx.actions.push(it);
  };

  /** The shopper pressed Confirm (true) or Keep my order (false): the frame to send, or
   *  null when the card is already answered (or an answer is on its way). */
  Conversation.prototype.answerAction = function (it, accept) {
    if (!it || !it.action || it.action.status !== "proposed" || it.action.answering !== null) return null;
    it.action.answering = !!accept;
    return frames.confirm(it.action.id, !!accept);
  };

  /** Apply one decoded server event; returns the effects (see effects()). */
  Conversation.prototype.apply = function (ev, fx) {
    fx = fx || effects();
    if (!ev || typeof ev !== "object") return fx;
    if (ev.type === "welcome") return this.welcome(ev, fx);
    if (isStored(ev) && typeof ev.seq === "number") {
      if (ev.seq <= this.lastSeq) return fx; // already seen (a replay overlap): drop
      this.lastSeq = ev.seq;
    }
    var it;
    switch (ev.type) {
      case "ack":
        it = this.find("shopper", ev.id) || this.add({ role: "shopper", id: str(ev.id), text: str(ev.text) });
        it.pending = false; it.failed = false; it.error = null;
        if (typeof ev.text === "string") it.text = ev.text;
        it.at = str(ev.at);
        fx.items.push(it);
        break;
      case "token":
        it = this.find("bot", ev.reply_id) || this.add({ role: "bot", id: str(ev.reply_id), text: "", done: false });
        if (it.done) break;
        it.text += str(ev.text);
        if (this.activity) { this.activity = null; fx.activity = true; }
        fx.items.push(it);
        break;
      case "done":
        it = this.find("bot", ev.reply_id) || this.add({ role: "bot", id: str(ev.reply_id), text: "" });
        it.text = str(ev.text);
        it.done = true;
        var seen = {};
        it.sources = (Array.isArray(ev.sources) ? ev.sources : []).filter(function (s) {
          if (!s || typeof s !== "object" || seen[s.kind + ":" + s.id]) return false;
          return (seen[s.kind + ":" + s.id] = true);
        });
        it.handoff = !!ev.handoff;
        it.interrupted = !!ev.interrupted;
        it.at = str(ev.at);
        var a = ev.action;
        if (a && typeof a === "object" && a.status === "proposed" && typeof a.id === "string" && a.id) {
          // A proposed order action: shown as a confirmation card under the reply.
          it.action = it.action && it.action.id === a.id ? it.action : {
            id: a.id, kind: str(a.kind), summary: str(a.summary), status: "proposed", reason: "", answering: null
          };
        }
        this.activity = null; fx.activity = true;
        fx.items.push(it); fx.finished.push(it);
        break;
      case "action":
        this.actionOutcome(ev, fx);
        break;
      case "agent_message":
        it = this.find("agent", ev.id) || this.add({ role: "agent", id: str(ev.id), text: "" });
        it.text = str(ev.text); it.agent = str(ev.agent); it.done = true; it.at = str(ev.at);
        this.activity = null; fx.activity = true;
        fx.items.push(it); fx.finished.push(it);
        break;
      case "status":
        this.status(ev, fx);
        break;
      case "error":
        if (this.activity) { this.activity = null; fx.activity = true; }
        if (ev.ref && (it = this.find("shopper", ev.ref)) && it.pending) {
          it.pending = false; it.failed = true; it.error = str(ev.code);
          fx.items.push(it);
        } else if (ev.ref && (it = this.findAction(ev.ref))) {
          // A confirm the server refused: nothing changed. For a bad id the card cannot be
          // answered any more; otherwise (rate limit, an agent owns the chat) it can again.
          it.action.answering = null;
          if (ACTION_ERRORS[ev.code] && it.action.status === "proposed") {
            it.action.status = ACTION_ERRORS[ev.code];
            fx.actions.push(it);
          }
          fx.items.push(it);
        }
        fx.error = { code: str(ev.code), message: str(ev.message), ref: ev.ref || null };
        break;
      default:
        break; // a newer server's event type: ignore it
    }
    return fx;
  };

  Conversation.prototype.status = function (ev, fx) {
    var kind = ev.kind;
    if (kind === "thinking" || kind === "typing") {
      this.activity = { kind: kind, agent: ev.agent || null };
      fx.activity = true;
      return;
    }
    if (kind === "idle") {
      if (this.activity) { this.activity = null; fx.activity = true; }
      return;
    }
    if (!STORED_STATUS[kind]) return;
    if (typeof ev.state === "string" && ev.state !== this.state) { this.state = ev.state; fx.state = true; }
    if (kind === "agent_joined") { this.agent = ev.agent || null; fx.state = true; }
    if (kind === "agent_left") { this.agent = null; this.activity = null; fx.state = true; fx.activity = true; }
    if (kind === "resolved" && !this.csat) { this.csat = "ask"; fx.state = true; }
    if (kind === "reopened" && this.csat) { this.csat = null; fx.state = true; }
    var it = this.add({ role: "system", id: "s" + ev.seq, kind: kind, agent: ev.agent || null, text: str(ev.text) });
    fx.items.push(it);
  };

  Conversation.prototype.welcome = function (ev, fx) {
    fx.welcome = true;
    var id = str(ev.conversation_id);
    if (!ev.resumed || id !== this.id) {
      // A different conversation than the one we kept (new, expired or not ours):
      // start from its history, keeping only messages the shopper is still sending.
      this.items = this.pending();
      this.lastSeq = 0;
      this.agent = null;
      this.csat = null;
      this.resumeToken = null;
      fx.reset = true;
    }
    this.id = id;
    if (ev.resume_token) this.resumeToken = ev.resume_token;
    if (typeof ev.state === "string") this.state = ev.state;
    if (ev.customer && typeof ev.customer === "object") this.customer = ev.customer;
    if (typeof ev.max_message_chars === "number") this.maxChars = ev.max_message_chars;
    this.activity = null;
    fx.activity = true; fx.state = true;
    var events = Array.isArray(ev.events) ? ev.events : [];
    for (var i = 0; i < events.length; i++) this.apply(events[i], fx);
    if (typeof ev.seq === "number" && ev.seq > this.lastSeq) this.lastSeq = ev.seq;
    return fx;
  };

  // ---- 4. safe rich text -------------------------------------------------------------

  /** The URL if it is absolute http(s), else null (no javascript:, data:, relative...). */
  function safeUrl(raw) {
    var url;
    try { url = new URL(String(raw)); } catch (e) { return null; }
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  }

  var INLINE = /\*\*([^*\n]+?)\*\*|\[([^\]\n]{1,300})\]\(([^()\s]{1,2000})\)|(https?:\/\/[^\s<>"]+)/g;

  /** Inline spans of one line: [{t: "text"|"b"|"a", v, href}]. */
  function parseInline(line) {
    var out = [], last = 0, m;
    INLINE.lastIndex = 0;
    while ((m = INLINE.exec(line))) {
      var start = m.index, whole = m[0];
      if (m[4]) {
        // A bare URL: trailing punctuation belongs to the sentence, not the link.
        var trail = /[.,;:!?)'\]]+$/.exec(whole);
        if (trail) whole = whole.slice(0, -trail[0].length);
      }
      if (start > last) out.push({ t: "text", v: line.slice(last, start) });
      if (m[1]) out.push({ t: "b", v: m[1] });
      else if (m[2]) {
        var href = safeUrl(m[3]);
        out.push(href ? { t: "a", v: m[2], href: href } : { t: "text", v: m[2] });
      } else {
        var bare = safeUrl(whole);
        out.push(bare ? { t: "a", v: whole, href: bare } : { t: "text", v: whole });
      }
      last = start + whole.length;
      INLINE.lastIndex = last;
    }
    if (last < line.length) out.push({ t: "text", v: line.slice(last) });
    return out;
  }

  /** Blocks of a message: [{type: "p", lines: [spans]}, {type: "ul"|"ol", items: [spans]}]. */
  function parseRich(text) {
    var blocks = [], para = null, list = null;
    String(text).replace(/\r\n?/g, "\n").split("\n").forEach(function (line) {
      var m = /^\s*(?:([-*\u2022])|(\d{1,3})[.)])\s+(.+)$/.exec(line);
      if (m) {
        var type = m[2] ? "ol" : "ul";
        if (!list || list.type !== type) { list = { type: type, items: [] }; blocks.push(list); }
        list.items.push(parseInline(m[3]));
        para = null;
        return;
      }
      list = null;
      if (!line.trim()) { para = null; return; }
      if (!para) { para = { type: "p", lines: [] }; blocks.push(para); }
      para.lines.push(parseInline(line));
    });
    return blocks;
  }

  /** Exponential backoff with jitter: attempt 0 -> 250-500 ms, doubling up to `cap`. */
  function backoffDelay(attempt, rnd, base, cap) {
    base = base || 500; cap = cap || 30000;
    var d = Math.min(cap, base * Math.pow(2, Math.min(attempt, 16)));
    return Math.round(d / 2 + (rnd === undefined ? Math.random() : rnd) * d / 2);
  }

  // ---- colours (WCAG contrast) ------------------------------------------------------

  function parseHex(hex) {
    var m = /^#?([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(String(hex || "").trim());
    if (!m) return null;
    var h = m[1].length === 3 ? m[1].replace(/./g, "$&$&") : m[1];
    return [0, 2, 4].map(function (i) { return parseInt(h.slice(i, i + 2), 16); });
  }

  function luminance(rgb) {
    var c = rgb.map(function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  }

  function contrast(a, b) {
    var la = luminance(a), lb = luminance(b);
    return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
  }

  function toHex(rgb) {
    return "#" + rgb.map(function (v) { return ("0" + Math.round(v).toString(16)).slice(-2); }).join("");
  }

  /** Text colour for a background: white or near-black, whichever reads better (AA). */
  function textOn(bg) {
    return contrast([255, 255, 255], bg) >= 4.5 || contrast([255, 255, 255], bg) >= contrast([17, 17, 17], bg)
      ? "#ffffff" : "#111111";
  }

  /** `color` darkened (or lightened) just enough to reach `ratio` against `bg`. */
  function ensureContrast(color, bg, ratio) {
    var target = luminance(bg) > 0.5 ? 0 : 255, c = color.slice();
    for (var i = 0; i < 20 && contrast(c, bg) < ratio; i++) {
      c = c.map(function (v) { return v + (target - v) * 0.15; });
    }
    return toHex(c);
  }

  var core = {
    VERSION: VERSION, PROTOCOL_VERSION: PROTOCOL_VERSION, STRINGS: STRINGS, pickLanguage: pickLanguage,
    fmt: fmt, frames: frames, decodeEvent: decodeEvent, isStored: isStored, Conversation: Conversation,
    parseRich: parseRich, parseInline: parseInline, safeUrl: safeUrl, backoffDelay: backoffDelay,
    parseHex: parseHex, contrast: contrast, textOn: textOn, ensureContrast: ensureContrast
  };
  if (typeof module === "object" && module && module.exports) module.exports = core;
  if (typeof document === "undefined" || !root || root.StorefrontChat) return;

  // ---- 5. the widget -----------------------------------------------------------------

  var script = document.currentScript;
  if (!script || !script.getAttribute("data-store")) {
    script = document.querySelector("script[data-store][src*='widget']");
  }
  if (!script) return;
  var SVGNS = "http://www.w3.org/2000/svg";
  var ICONS = {
    chat: "M4 5.5A2.5 2.5 0 0 1 6.5 3h11A2.5 2.5 0 0 1 20 5.5v8a2.5 2.5 0 0 1-2.5 2.5H10l-4.2 3.6c-.5.4-1.3 0-1.3-.6V16A2.5 2.5 0 0 1 4 13.5z",
    close: "M6 6l12 12M18 6L6 18",
    send: "M4 12l15-7-6 15-2.2-5.8z",
    person: "M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm-7 8a7 7 0 0 1 14 0",
    end: "M9 4H6a2 2 0 0 0-2 2v12a2 2 0 0 0 2 2h3M15 16l4-4-4-4M19 12H9",
    up: "M7 11v9H4v-9zm0 0l4-8c1.7 0 2.6 1 2.3 2.6L12.8 9H18a2 2 0 0 1 2 2.3l-1.2 6.8A2.2 2.2 0 0 1 16.6 20H7",
    down: "M7 13V4H4v9zm0 0l4 8c1.7 0 2.6-1 2.3-2.6l-.5-3.4H18a2 2 0 0 0 2-2.3l-1.2-6.8A2.2 2.2 0 0 0 16.6 4H7",
    star: "M12 3.5l2.6 5.4 5.9.8-4.3 4.1 1 5.8L12 16.9l-5.2 2.7 1-5.8-4.3-4.1 5.9-.8z",
    stop: "M7 7h10v10H7z",
    link: "M14 4h6v6M20 4l-9 9M18 14v4a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h4"
  };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) {
      if (attrs[k] === null || attrs[k] === undefined || attrs[k] === false) continue;
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
      else node.setAttribute(k, attrs[k] === true ? "" : attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function icon(name, filled) {
    var svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "i i-" + name);
    var path = document.createElementNS(SVGNS, "path");
    path.setAttribute("d", ICONS[name]);
    if (filled) path.setAttribute("class", "fill");
    svg.appendChild(path);
    return svg;
  }

  /** Render parseRich() blocks with DOM APIs only: text never becomes markup. */
  function renderRich(target, text) {
    var frag = document.createDocumentFragment();
    function spans(parent, list) {
      list.forEach(function (s) {
        if (s.t === "b") parent.appendChild(el("strong", { text: s.v }));
        else if (s.t === "a") parent.appendChild(el("a", { href: s.href, target: "_blank", rel: "noopener noreferrer nofollow", text: s.v }));
        else parent.appendChild(document.createTextNode(s.v));
      });
    }
    parseRich(text).forEach(function (b) {
      if (b.type === "p") {
        var p = el("p");
        b.lines.forEach(function (line, i) { if (i) p.appendChild(el("br")); spans(p, line); });
        frag.appendChild(p);
      } else {
        var list = el(b.type);
        b.items.forEach(function (item) { var li = el("li"); spans(li, item); list.appendChild(li); });
        frag.appendChild(list);
      }
    });
    target.textContent = "";
    target.appendChild(frag);
  }

  function newId(prefix) {
    var a = new Uint8Array(9);
    (root.crypto || {}).getRandomValues ? root.crypto.getRandomValues(a) : a.forEach(function (_, i) { a[i] = Math.random() * 256; });
    return prefix + Array.prototype.map.call(a, function (b) { return ("0" + b.toString(36)).slice(-2); }).join("");
  }

  function storage() {
    try { return root.localStorage; } catch (e) { return null; } // blocked (privacy settings)
  }

  function readJSON(key) {
    var s = storage();
    try { var raw = s && s.getItem(key); return raw ? JSON.parse(raw) : null; } catch (e) { return null; }
  }

  function Widget(cfg) {
    this.cfg = cfg;
    this.key = STORAGE_PREFIX + cfg.store;
    var saved = readJSON(this.key);
    // Nothing is written (storage, cookies) and no socket opens until the shopper has
    // opened the widget once in this browser; the stored record is that consent marker.
    this.activated = !!saved;
    this.conv = new Conversation(saved && saved.conversation);
    this.isOpen = false;
    this.unread = (saved && saved.unread) || 0;
    this.identity = cfg.identity || null;
    this.lang = pickLanguage([cfg.lang].concat(root.navigator ? (navigator.languages || [navigator.language]) : []));
    this.t = STRINGS[this.lang];
    this.ws = null; this.ready = false; this.attempt = 0; this.retryTimer = null; this.held = [];
    this.fatal = false; this.dormant = false; this.startOver = false; this.lastTyping = 0;
    this.listeners = {}; this.nodes = {}; this.announced = {}; this.dirty = {};
    this.build();
    this.applyTheme(cfg);
    this.renderAll();
    var self = this;
    root.addEventListener("online", function () { if (self.activated && !self.ws) self.connect(); });
    root.addEventListener("offline", function () { self.renderConn(); });
    root.addEventListener("pagehide", function () { self.flushSave(); });
    document.addEventListener("visibilitychange", function () {
      // Back to a tab whose socket was closed for idleness: pick up what happened since.
      if (document.visibilityState === "visible" && self.activated && self.dormant && !self.ws) {
        self.dormant = false;
        self.connect();
      }
    });
    if (this.activated) {
      this.connect();
      // Keep the panel open across page navigations, without stealing focus on load;
      // not on phones, where the open panel would cover every page the shopper visits.
      var phone = root.matchMedia && root.matchMedia("(max-width: 479.98px)").matches;
      if (saved.open && !phone) this.open({ focus: false });
    }
  }

  var W = Widget.prototype;

  W.tr = function (key, vars) { return fmt(this.t[key] || STRINGS.en[key] || key, vars); };

  W.emit = function (name, detail) {
    (this.listeners[name] || []).slice().forEach(function (fn) {
      try { fn(detail); } catch (e) { if (root.console) console.error(e); }
    });
  };

  // -- building the DOM --

  W.build = function () {
    var self = this, t = this.tr.bind(this);
    this.host = document.createElement("storefront-chat");
    this.shadow = this.host.attachShadow({ mode: "open" });
    // Constructable stylesheets are not "inline styles", so the widget works on pages
    // whose Content-Security-Policy forbids 'unsafe-inline'.
    try {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      this.shadow.adoptedStyleSheets = [sheet];
    } catch (e) {
      this.shadow.appendChild(el("style", { text: CSS }));
    }
    var n = this.nodes;
    n.badge = el("span", { class: "badge", "aria-hidden": "true", hidden: true });
    n.launcher = el("button", {
      class: "launcher", type: "button", "aria-haspopup": "dialog", "aria-expanded": "false",
      "aria-controls": "sc-panel", onclick: function () { self.toggle(); }
    }, [icon("chat"), icon("close"), n.badge]);
    n.title = el("h2", { id: "sc-title", class: "title" });
    n.sub = el("p", { id: "sc-sub", class: "sub" });
    n.endBtn = el("button", { class: "icon", type: "button", "aria-label": t("endChat"), title: t("endChat"), onclick: function () { self.askEnd(); } }, [icon("end")]);
    n.closeBtn = el("button", { class: "icon", type: "button", "aria-label": t("close"), title: t("close"), onclick: function () { self.close(); } }, [icon("close")]);
    n.conn = el("div", { class: "conn", role: "status", hidden: true });
    n.greeting = el("div", { class: "bubble" });
    n.list = el("ol", { class: "items" });
    n.activity = el("div", { class: "activity", hidden: true }, [
      el("span", { class: "dots", "aria-hidden": "true" }, [el("i"), el("i"), el("i")]), el("span", { class: "activity-text" })
    ]);
    n.csat = el("div", { class: "csat", role: "group", "aria-labelledby": "sc-csat-q", hidden: true });
    n.log = el("div", { class: "log", tabindex: "0", "aria-label": t("title") }, [
      el("div", { class: "row bot greeting" }, [n.greeting]), n.list, n.activity, n.csat
    ]);
    n.noticeText = el("span");
    n.notice = el("div", { class: "notice", role: "alert", hidden: true }, [
      n.noticeText, el("button", { type: "button", class: "link", onclick: function () { self.notice(null); } }, [t("dismiss")])
    ]);
    n.handoffBtn = el("button", { type: "button", class: "pill", onclick: function () { self.handoff(); } }, [icon("person"), t("handoff")]);
    n.stopBtn = el("button", { type: "button", class: "pill", hidden: true, onclick: function () { self.stop(); } }, [icon("stop", true), t("stop")]);
    n.input = el("textarea", { id: "sc-input", rows: "1", maxlength: "4000", placeholder: t("placeholder"), autocomplete: "off" });
    n.send = el("button", { type: "submit", class: "send", "aria-label": t("send"), title: t("send") }, [icon("send", true)]);
    n.form = el("form", { class: "composer", onsubmit: function (e) { e.preventDefault(); self.submit(); } }, [
      el("label", { for: "sc-input", class: "sr", text: t("input") }), n.input, n.send
    ]);
    n.live = el("div", { class: "sr", "aria-live": "polite", "aria-atomic": "true" });
    n.panel = el("div", {
      id: "sc-panel", class: "panel", role: "dialog", "aria-modal": "false", "aria-labelledby": "sc-title",
      "aria-describedby": "sc-sub", hidden: true
    }, [
      el("div", { class: "head" }, [
        el("div", { class: "avatar", "aria-hidden": "true" }, [icon("chat", true)]),
        el("div", { class: "heading" }, [n.title, n.sub]), n.endBtn, n.closeBtn
      ]),
      n.conn, n.log, n.notice,
      el("div", { class: "actions" }, [n.handoffBtn, n.stopBtn]),
      n.form, n.live
    ]);
    this.shadow.appendChild(n.launcher);
    this.shadow.appendChild(n.panel);
    this.shadow.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && self.isOpen) { e.stopPropagation(); self.close(); }
    });
    n.input.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); self.submit(); }
    });
    n.input.addEventListener("input", function () { self.autosize(); self.typing(); });
    (document.body || document.documentElement).appendChild(this.host);
  };

  W.applyTheme = function (o) {
    o = o || {};
    var n = this.nodes;
    if (o.color) {
      var rgb = parseHex(o.color);
      if (rgb) {
        this.host.style.setProperty("--sc-accent", toHex(rgb));
        this.host.style.setProperty("--sc-on-accent", textOn(rgb));
        // Links sit on the reply bubble, the darkest light background (lightest dark one).
        this.host.style.setProperty("--sc-link", ensureContrast(rgb, [240, 242, 245], 4.6));
        this.host.style.setProperty("--sc-link-dark", ensureContrast(rgb, [38, 43, 51], 4.6));
      } else if (root.console) {
        console.warn("storefront-chat: data-color must be a hex colour such as #1f6feb");
      }
    }
    if (o.position) this.host.setAttribute("data-position", o.position === "left" ? "left" : "right");
    if (o.theme) this.host.setAttribute("data-theme", o.theme);
    if (o.title !== undefined) this.cfg.title = o.title;
    if (o.greeting !== undefined) this.cfg.greeting = o.greeting;
    n.title.textContent = this.cfg.title || this.tr("title");
    n.greeting.textContent = this.cfg.greeting || this.tr("greeting");
    this.renderHeader();
  };

  W.autosize = function () {
    var i = this.nodes.input;
    i.style.height = "auto";
    i.style.height = Math.min(i.scrollHeight, 140) + "px";
  };

  // -- opening and closing --

  W.open = function (opts) {
    opts = opts || {};
    if (!this.activated) {
      this.activated = true;
      this.save();
    }
    if (!this.ws || this.dormant) { this.dormant = false; this.connect(); }
    if (this.isOpen) { if (opts.focus !== false) this.nodes.input.focus(); return; }
    this.isOpen = true;
    this.unread = 0;
    this.host.setAttribute("data-open", "");
    this.nodes.panel.hidden = false;
    this.nodes.launcher.setAttribute("aria-expanded", "true");
    this.renderBadge();
    this.save();
    this.scrollDown(true);
    if (opts.focus !== false) this.nodes.input.focus();
    this.emit("open");
  };

  W.close = function () {
    if (!this.isOpen) return;
    this.isOpen = false;
    this.host.removeAttribute("data-open");
    this.nodes.panel.hidden = true;
    this.nodes.launcher.setAttribute("aria-expanded", "false");
    this.renderBadge();
    this.save();
    this.nodes.launcher.focus();
    this.emit("close");
  };

  W.toggle = function () { if (this.isOpen) this.close(); else this.open(); };

  // -- storage --

  W.save = function () {
    if (!this.activated) return;
    var self = this;
    if (this.saveTimer) return;
    // Streaming replies change state many times a second; write at most every 300 ms.
    this.saveTimer = setTimeout(function () { self.saveTimer = null; self.flushSave(); }, 300);
  };

  W.flushSave = function () {
    if (this.saveTimer) { clearTimeout(this.saveTimer); this.saveTimer = null; }
    if (!this.activated) return;
    var s = storage();
    try {
      if (s) s.setItem(this.key, JSON.stringify({ conversation: this.conv.toJSON(), open: this.isOpen, unread: this.unread }));
    } catch (e) { /* quota or privacy mode: the conversation still works for this page */ }
  };

  // -- the socket --

  W.url = function () {
    // The socket lives at the root of the server that served widget.js, unless
    // data-server names another base URL (e.g. behind a reverse-proxy path prefix).
    var u = new URL(this.cfg.server || script.src, location.href);
    var path = this.cfg.server ? u.pathname.replace(/\/+$/, "") : "";
    return (u.protocol === "https:" ? "wss://" : "ws://") + u.host + path + "/ws/chat";
  };

  W.connect = function () {
    if (this.ws || this.fatal || !this.activated) return;
    clearTimeout(this.retryTimer);
    var self = this, ws;
    try { ws = new WebSocket(this.url()); } catch (e) { this.scheduleReconnect(); return; }
    this.ws = ws;
    this.ready = false;
    ws.onopen = function () {
      var c = self.conv;
      ws.send(JSON.stringify(frames.hello({
        store: self.cfg.store, conversation_id: self.startOver ? null : c.id, last_seq: c.lastSeq,
        resume_token: self.startOver ? null : c.resumeToken, identity: self.identity, new_conversation: self.startOver
      })));
    };
    ws.onmessage = function (e) { if (self.ws === ws) self.receive(e.data); };
    ws.onclose = function (e) { if (self.ws === ws) self.dropped(e); };
    ws.onerror = function () { /* onclose follows with the details */ };
    this.renderConn();
  };

  W.dropped = function (e) {
    var wasReady = this.ready;
    this.ws = null;
    this.ready = false;
    // A reply that was streaming will resume from last_seq; the indicators must not stay stuck.
    this.conv.activity = null;
    this.renderActivity();
    if (e && e.code === 1008 && !wasReady) this.fatal = this.fatal || "policy";
    if (this.fatal) { this.renderConn(); return; }
    if (this.dormant) { this.renderConn(); return; }
    this.scheduleReconnect();
  };

  W.scheduleReconnect = function () {
    var self = this;
    clearTimeout(this.retryTimer);
    var delay = backoffDelay(this.attempt++, undefined, 500, 30000);
    this.retryTimer = setTimeout(function () {
      if (root.navigator && navigator.onLine === false) return; // the "online" event reconnects
      self.connect();
    }, delay);
    this.renderConn();
  };

  W.reconnectNow = function () {
    var ws = this.ws;
    this.ws = null;
    this.ready = false;
    if (ws) { ws.onclose = null; ws.onmessage = null; try { ws.close(1000); } catch (e) { /* already closed */ } }
    this.attempt = 0;
    this.connect();
  };

  /** Send now; with `keep`, hold the frame until the next welcome if the socket is down. */
  W.sendFrame = function (obj, keep) {
    if (this.ws && this.ready) {
      try { this.ws.send(JSON.stringify(obj)); return true; } catch (e) { /* closing: fall through */ }
    }
    if (keep) this.held.push(obj);
    return false;
  };

  W.receive = function (text) {
    var ev = decodeEvent(text);
    if (!ev) return;
    var c = this.conv;
    var fx = c.apply(ev);
    if (ev.type === "error") this.serverError(ev);
    if (fx.welcome) {
      this.ready = true;
      this.attempt = 0;
      this.startOver = false;
      this.nodes.input.setAttribute("maxlength", String(c.maxChars));
      this.renderConn();
      var self = this;
      c.pending().forEach(function (it) { self.sendFrame(frames.message(it.id, it.text)); });
      // Ratings, handoff and end requests made while offline (not across page loads).
      this.held.splice(0).forEach(function (f) { self.sendFrame(f); });
    }
    this.render(fx);
  };

  W.serverError = function (ev) {
    var code = str(ev.code);
    if (FATAL_CODES[code]) {
      this.fatal = code;
      if (root.console) console.warn("storefront-chat: " + code + ": " + str(ev.message));
    } else if (code === "idle_timeout") {
      this.dormant = true; // reconnect when the shopper comes back, not in a loop
    } else if (code === "invalid_identity") {
      this.identity = null;
      this.notice(this.tr("identityError"));
      this.emit("identity_error", { code: code, message: str(ev.message) });
    } else if (code === "conversation_not_found") {
      // The server follows with a welcome for a new conversation; nothing to show.
    } else if (ev.ref && (this.conv.find("shopper", ev.ref) || {}).failed) {
      // Shown beside the message itself, with a retry button.
    } else if (ev.ref && ACTION_ERRORS[code] && this.conv.findAction(ev.ref)) {
      // A refused confirm: shown on its card.
    } else if (code !== "shutting_down") {
      var key = "e_" + code;
      this.notice(this.t[key] ? this.tr(key) : str(ev.message) || this.tr("e_generic"));
    }
    this.emit("error", { code: code, message: str(ev.message), ref: ev.ref || null });
  };

  // -- shopper actions --

  W.submit = function () {
    var text = this.nodes.input.value.replace(/^\s+|\s+$/g, "");
    if (!text) return;
    this.nodes.input.value = "";
    this.autosize();
    this.send(text);
  };

  W.send = function (text) {
    text = String(text);
    if (!text.trim()) return null;
    if (!this.activated) { this.activated = true; }
    if (this.conv.csat && this.conv.csat !== "ask") {
      // The conversation was ended: a new message starts a new one.
      this.newConversation();
    } else if (this.conv.csat === "ask") {
      this.conv.csat = null;
    }
    var id = newId("m_");
    var it = this.conv.addShopper(id, text);
    this.sendFrame(frames.message(id, text));
    if (!this.ws || this.dormant) { this.dormant = false; this.connect(); }
    this.lastTyping = 0;
    this.notice(null);
    this.render({ items: [it], state: true });
    this.scrollDown(true);
    this.emit("message", { id: id, text: text });
    return id;
  };

  W.retry = function (it) {
    it.failed = false; it.pending = true; it.error = null;
    this.sendFrame(frames.message(it.id, it.text));
    this.render({ items: [it] });
  };

  W.typing = function () {
    var now = Date.now();
    if (now - this.lastTyping > 3000 && this.nodes.input.value) {
      this.lastTyping = now;
      this.sendFrame(frames.typing(true));
    }
  };

  W.handoff = function () {
    this.sendFrame(frames.handoff(""), true);
  };

  W.stop = function () {
    var s = this.conv.streaming();
    if (s) this.sendFrame(frames.stop(s.id));
  };

  W.answerAction = function (it, accept) {
    var frame = this.conv.answerAction(it, accept);
    if (!frame) return;
    this.sendFrame(frame, true);
    this.render({ items: [it] });
    // The pressed button is disabled now: keep the keyboard on the card's status line.
    var row = this.shadow.getElementById(rowId(it));
    var status = row && row.querySelector(".action-status");
    if (status) status.focus();
    this.announce(this.tr("actionSending"));
    this.emit("action_answer", { id: it.action.id, accept: !!accept });
  };

  W.rate = function (it, rating) {
    if (it.rating === rating) return;
    it.rating = rating;
    this.sendFrame(frames.feedback(it.id, rating), true);
    this.render({ items: [it] });
  };

  W.askEnd = function () {
    if (!this.conv.id) { this.newConversation(); return; }
    if (!this.conv.csat) this.conv.csat = "ask";
    this.renderCsat();
    this.save();
    var first = this.nodes.csat.querySelector("button");
    if (first) first.focus();
  };

  W.endWith = function (rating) {
    this.sendFrame(frames.end(rating || null), true);
    this.conv.csat = rating || "ended";
    this.renderCsat();
    this.save();
    var btn = this.nodes.csat.querySelector(".primary");
    if (btn) btn.focus();
    this.emit("end", { rating: rating || null });
  };

  W.newConversation = function () {
    var pending = this.conv.pending();
    this.conv = new Conversation();
    this.conv.items = pending;
    this.startOver = true;
    this.held = []; // they were about the old conversation
    this.announced = {};
    this.renderAll();
    this.save();
    if (this.activated) this.reconnectNow();
    if (this.isOpen) this.nodes.input.focus();
  };

  W.setIdentity = function (token) {
    var changed = (token || null) !== this.identity;
    this.identity = token || null;
    if (!changed) return;
    if (!token) {
      // Signing out: do not leave the customer's conversation to the next person on this device.
      this.conv = new Conversation();
      this.renderAll();
      this.save();
    }
    if (this.ws) this.reconnectNow();
  };

  // -- rendering --

  W.render = function (fx) {
    var self = this;
    if (fx.reset) this.renderAll();
    else (fx.items || []).forEach(function (it) { self.renderItem(it); });
    if (fx.activity || fx.items) this.renderActivity();
    this.renderHeader();
    if (fx.state) this.renderCsat();
    (fx.finished || []).forEach(function (it) {
      if (self.announced[it.key]) return;
      self.announced[it.key] = true;
      if (fx.reset) return; // history, not news
      var who = it.role === "agent" ? (it.agent || self.tr("team")) : self.tr("assistant");
      var hint = it.action && it.action.status === "proposed" ? " " + self.tr("actionHint") : "";
      self.announce(who + ": " + it.text + hint);
      if (!self.isOpen) { self.unread++; self.renderBadge(); self.emit("unread", self.unread); }
      self.emit(it.role === "agent" ? "agent_message" : "reply", { id: it.id, text: it.text, sources: it.sources || [] });
    });
    (fx.actions || []).forEach(function (it) {
      if (fx.reset || it.action.status === "proposed") return;
      var text = self.actionStatusText(it.action);
      self.announce(text + (it.action.summary ? ": " + it.action.summary : ""));
      self.emit("action", { id: it.action.id, kind: it.action.kind, status: it.action.status, reason: it.action.reason });
    });
    this.nodes.stopBtn.hidden = !this.conv.streaming() || !this.ready;
    this.save();
    this.scrollDown(false);
  };

  W.renderAll = function () {
    var self = this;
    this.nodes.list.textContent = "";
    this.dirty = {};
    this.conv.items.forEach(function (it) {
      self.renderItem(it, true);
      if (it.done) self.announced[it.key] = true;
    });
    this.renderActivity();
    this.renderHeader();
    this.renderCsat();
    this.renderBadge();
    this.nodes.stopBtn.hidden = !this.conv.streaming();
  };

  W.renderItem = function (it, now) {
    var self = this;
    if (!now && it.role === "bot" && !it.done) {
      // Tokens arrive faster than frames are painted: redraw a streaming reply once per frame.
      if (this.dirty[it.key]) return;
      this.dirty[it.key] = true;
      (root.requestAnimationFrame || setTimeout)(function () {
        if (!self.dirty[it.key]) return;
        delete self.dirty[it.key];
        self.renderItem(it, true);
      });
      return;
    }
    delete this.dirty[it.key];
    var stick = this.atBottom();
    var row = this.buildItem(it);
    var old = this.shadow.getElementById(rowId(it));
    if (old) {
      // Keep keyboard focus on a rating button that was just pressed.
      var focused = this.shadow.activeElement && old.contains(this.shadow.activeElement)
        ? this.shadow.activeElement.getAttribute("data-f") : null;
      old.replaceWith(row);
      var again = focused && row.querySelector("[data-f='" + focused + "']");
      if (again) again.focus();
    } else {
      this.nodes.list.appendChild(row);
    }
    if (stick) this.scrollDown(true);
  };

  function rowId(it) { return "sc-" + it.key.replace(/[^\w-]/g, "_"); }

  W.buildItem = function (it) {
    var self = this, t = this.tr.bind(this);
    var row = el("li", { id: rowId(it), class: "row " + it.role });
    if (it.role === "system" && it.action) {
      // An outcome whose card is not in the transcript (e.g. history cut off).
      row.appendChild(this.buildActionStatus(it));
      return row;
    }
    if (it.role === "system") {
      var key = { handoff_requested: "handoffRequested", agent_joined: "agentJoined", agent_left: "agentLeft",
        resolved: "resolved", reopened: "reopened", verified: "verified" }[it.kind];
      // The server's text names the verified order, but it is English only.
      var serverText = key === "verified" && it.text && this.lang === "en";
      row.appendChild(el("span", { text: serverText ? it.text : key ? t(key, { name: it.agent || t("someone") }) : it.text }));
      return row;
    }
    var who = it.role === "shopper" ? t("you") : it.role === "agent" ? (it.agent || t("team")) : t("assistant");
    if (it.role === "agent") row.appendChild(el("div", { class: "who", "aria-hidden": "true" }, [el("span", { class: "mini" }, [who.charAt(0).toUpperCase()]), who + " \u00b7 " + t("team")]));
    var body = el("div", { class: "body" });
    if (it.role === "shopper") body.textContent = it.text; else renderRich(body, it.text);
    var bubble = el("div", { class: "bubble" + (it.role === "bot" && !it.done ? " streaming" : ""), title: this.time(it.at) }, [
      el("span", { class: "sr", text: who + ": " }), body
    ]);
    row.appendChild(bubble);
    if (it.role === "shopper") {
      if (it.failed) {
        row.appendChild(el("div", { class: "meta failed" }, [
          t("notSent") + (this.t["e_" + it.error] ? " \u00b7 " + t("e_" + it.error) + " " : " "),
          el("button", { type: "button", class: "link", "data-f": "retry", onclick: function () { self.retry(it); } }, [t("retry")])
        ]));
      } else if (it.pending) {
        row.appendChild(el("div", { class: "meta pending", text: t("sending") }));
      }
      return row;
    }
    if (it.role !== "bot" || !it.done) return row;
    if (it.interrupted) row.appendChild(el("div", { class: "meta", text: t("interrupted") }));
    var sources = (it.sources || []).filter(function (s) { return s.title || s.id; });
    if (sources.length) {
      var ul = el("ul", { class: "sources", "aria-label": t("sources") });
      sources.forEach(function (s) {
        var href = s.url ? safeUrl(s.url) : null;
        var kind = t("kind_" + (STRINGS.en["kind_" + s.kind] ? s.kind : "other"));
        var inner = [el("span", { class: "kind", text: kind }), el("span", { class: "stitle", text: str(s.title) || str(s.id) })];
        if (href) {
          inner.push(icon("link"));
          inner.push(el("span", { class: "sr", text: " " + t("newTab") }));
        }
        ul.appendChild(el("li", null, [href
          ? el("a", { class: "source", href: href, target: "_blank", rel: "noopener noreferrer" }, inner)
          : el("span", { class: "source" }, inner)]));
      });
      row.appendChild(ul);
    }
    if (it.action) row.appendChild(this.buildActionCard(it));
    if (it.handoff && this.conv.state === "bot") {
      row.appendChild(el("div", { class: "suggest" }, [
        el("span", { text: t("suggestHandoff") }),
        el("button", { type: "button", class: "pill", "data-f": "handoff", onclick: function () { self.handoff(); } }, [icon("person"), t("handoff")])
      ]));
    }
    var rateBtn = function (value, name, label) {
      return el("button", {
        type: "button", class: "rate", "data-f": name, "aria-label": label, title: label,
        "aria-pressed": it.rating === value ? "true" : "false", onclick: function () { self.rate(it, value); }
      }, [icon(name, it.rating === value)]);
    };
    row.appendChild(el("div", { class: "meta rating", role: "group", "aria-label": t("rate") }, [
      rateBtn(1, "up", t("helpful")), rateBtn(-1, "down", t("notHelpful"))
    ]));
    return row;
  };

  /** The status line of an action: what became of it (the server's reason, as text). */
  W.actionStatusText = function (a) {
    if (a.answering !== null && a.answering !== undefined && a.status === "proposed") return this.tr("actionSending");
    if (a.status === "proposed") return "";
    var text = this.tr("action_" + a.status);
    return a.reason && a.status !== "expired" ? text + ": " + a.reason : text;
  };

  W.buildActionStatus = function (it) {
    var a = it.action;
    return el("p", { class: "action-status s-" + a.status, text: this.actionStatusText(a) + (a.summary ? " \u00b7 " + a.summary : "") });
  };

  /** A proposed action: its summary, Confirm / Keep my order (real buttons), its outcome. */
  W.buildActionCard = function (it) {
    var self = this, a = it.action, t = this.tr.bind(this);
    var base = rowId(it) + "-act";
    var open = a.status === "proposed" && (a.answering === null || a.answering === undefined);
    var status = this.actionStatusText(a);
    var button = function (accept, name, cls, label) {
      return el("button", {
        type: "button", class: cls, "data-f": name, disabled: !open, "aria-describedby": base + "-sum",
        "aria-pressed": a.answering === accept ? "true" : null,
        onclick: function () { self.answerAction(it, accept); }
      }, [label]);
    };
    return el("div", {
      class: "action-card s-" + a.status, role: "group", "aria-labelledby": base + "-title",
      "data-action": a.id
    }, [
      el("p", { id: base + "-title", class: "action-title", text: t("actionTitle") }),
      el("p", { id: base + "-sum", class: "action-summary", text: a.summary }),
      el("div", { class: "action-buttons" }, [
        button(true, "confirm", "primary", t("actionConfirm")),
        button(false, "keep", "secondary", t("actionKeep"))
      ]),
      el("p", { class: "action-status", "data-f": "status", tabindex: "-1", hidden: !status, text: status })
    ]);
  };

  /** "14:05" in the shopper's language, for a server timestamp; "" when there is none. */
  W.time = function (at) {
    var d = at ? new Date(at) : null;
    if (!d || isNaN(d.getTime())) return null;
    try { return d.toLocaleTimeString(this.lang, { hour: "2-digit", minute: "2-digit" }); } catch (e) { return null; }
  };

  W.renderActivity = function () {
    var a = this.conv.activity, n = this.nodes;
    var show = !!a && !(a.kind === "thinking" && this.conv.streaming());
    n.activity.hidden = !show;
    if (show) {
      n.activity.lastChild.textContent = a.kind === "typing"
        ? this.tr("typing", { name: a.agent || this.tr("someone") }) : this.tr("thinking");
      this.scrollDown(false);
    }
    // A watchdog: if the server goes quiet, the indicator must not spin forever.
    clearTimeout(this.activityTimer);
    if (a) {
      var self = this;
      this.activityTimer = setTimeout(function () {
        self.conv.activity = null; self.renderActivity();
      }, a.kind === "typing" ? 15000 : 120000);
    }
  };

  W.renderHeader = function () {
    var c = this.conv, n = this.nodes;
    if (!n.sub) return;
    n.sub.textContent = c.state === "agent" ? this.tr("subAgent", { name: c.agent || this.tr("someone") })
      : c.state === "waiting" ? this.tr("subWaiting") : c.state === "resolved" ? this.tr("subResolved") : this.tr("subBot");
    var last = c.items[c.items.length - 1];
    n.handoffBtn.hidden = c.state !== "bot" || !!(last && last.role === "bot" && last.handoff);
    n.endBtn.hidden = !c.id;
    this.host.setAttribute("data-state", c.state);
  };

  W.renderCsat = function () {
    var self = this, c = this.conv, n = this.nodes, t = this.tr.bind(this);
    n.csat.textContent = "";
    n.csat.hidden = !c.csat;
    if (!c.csat) return;
    if (c.csat === "ask") {
      var stars = el("div", { class: "stars" });
      for (var i = 1; i <= 5; i++) {
        stars.appendChild(el("button", {
          type: "button", class: "star", "aria-label": t("csatStar", { n: i }), title: t("csatStar", { n: i }),
          onclick: (function (r) { return function () { self.endWith(r); }; })(i)
        }, [icon("star", true)]));
      }
      n.csat.appendChild(el("p", { id: "sc-csat-q", class: "q", text: t("csatQ") }));
      n.csat.appendChild(stars);
      n.csat.appendChild(el("button", { type: "button", class: "link", onclick: function () { self.endWith(null); } }, [t("csatSkip")]));
    } else {
      n.csat.appendChild(el("p", { id: "sc-csat-q", class: "q", text: c.csat === "ended" ? t("resolved") : t("csatThanks") }));
      n.csat.appendChild(el("button", { type: "button", class: "primary", onclick: function () { self.newConversation(); } }, [t("newChat")]));
    }
    this.scrollDown(false);
  };

  W.renderBadge = function () {
    var b = this.nodes.badge, l = this.nodes.launcher;
    b.hidden = !this.unread || this.isOpen;
    b.textContent = this.unread > 9 ? "9+" : String(this.unread);
    var label = this.isOpen ? this.tr("close") : this.tr("open");
    if (this.unread && !this.isOpen) label += " (" + this.tr("unread", { n: this.unread }) + ")";
    l.setAttribute("aria-label", label);
  };

  W.renderConn = function () {
    var n = this.nodes, text = "";
    if (this.fatal) text = this.tr("unavailable");
    else if (root.navigator && navigator.onLine === false && this.activated) text = this.tr("offline");
    else if (this.activated && !this.ready && !this.dormant && this.attempt > 0) text = this.tr("reconnecting");
    n.conn.textContent = text;
    n.conn.hidden = !text;
    n.conn.className = "conn" + (this.fatal ? " fatal" : "");
    n.input.disabled = !!this.fatal;
    n.send.disabled = !!this.fatal;
  };

  W.notice = function (text) {
    this.nodes.noticeText.textContent = text || "";
    this.nodes.notice.hidden = !text;
  };

  W.announce = function (text) {
    var live = this.nodes.live;
    // Clear first so that two identical replies in a row are both read out.
    live.textContent = "";
    setTimeout(function () { live.textContent = text; }, 60);
  };

  W.atBottom = function () {
    var log = this.nodes.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  };

  W.scrollDown = function (force) {
    // Follow new text only when the shopper is already at the bottom (not while reading back).
    if (force || this.atBottom()) this.nodes.log.scrollTop = this.nodes.log.scrollHeight;
  };

  var CSS = [
    ":host{all:initial;--sc-accent:#2346d8;--sc-on-accent:#fff;--sc-link:#2346d8;--sc-bg:#fff;--sc-fg:#1b1f24;",
    "--sc-muted:#586270;--sc-bubble:#f0f2f5;--sc-border:#d9dee5;--sc-shadow:0 16px 48px rgba(15,23,42,.2),0 2px 8px rgba(15,23,42,.08)}",
    ":host([data-theme=dark]){--sc-bg:#181b21;--sc-fg:#eceff3;--sc-muted:#a9b1bd;--sc-bubble:#262b33;--sc-border:#3a414c;--sc-link:var(--sc-link-dark,#8fa8ff)}",
    "*{box-sizing:border-box}[hidden]{display:none!important}",
    ".sr{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}",
    ".launcher,.panel{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:var(--sc-fg)}",
    "button{font:inherit;color:inherit;cursor:pointer}",
    ":focus-visible{outline:3px solid var(--sc-link);outline-offset:2px}",
    ".launcher{position:fixed;z-index:2147483000;bottom:24px;right:24px;width:60px;height:60px;border:0;border-radius:50%;",
    "background:var(--sc-accent);color:var(--sc-on-accent);box-shadow:0 6px 20px rgba(15,23,42,.28);display:grid;place-items:center;transition:transform .15s}",
    ".launcher:hover{transform:scale(1.06)}.launcher:focus-visible{outline-color:var(--sc-accent);outline-offset:3px}",
    ".launcher .i{width:28px;height:28px;grid-area:1/1}.launcher .i-close,:host([data-open]) .launcher .i-chat{display:none}",
    ":host([data-open]) .launcher .i-close{display:block}",
    ".i{width:20px;height:20px;fill:none;stroke:currentColor;stroke-width:1.8;stroke-linecap:round;stroke-linejoin:round;flex:none}",
    ".i .fill,.launcher .i-chat path{fill:currentColor;stroke:none}",
    ".badge{position:absolute;top:-3px;right:-3px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#c8251b;",
    "color:#fff;font:700 12px/22px system-ui,sans-serif;text-align:center;border:2px solid #fff}",
    ".panel{position:fixed;z-index:2147483001;bottom:96px;right:24px;width:384px;max-width:calc(100vw - 32px);",
    "height:min(660px,calc(100vh - 120px));display:flex;flex-direction:column;background:var(--sc-bg);border-radius:16px;",
    "box-shadow:var(--sc-shadow);overflow:hidden;animation:sc-in .18s ease-out}",
    ":host([data-position=left]) .launcher,:host([data-position=left]) .panel{right:auto;left:24px}",
    "@keyframes sc-in{from{opacity:0;transform:translateY(12px)}}",
    ".head{display:flex;align-items:center;gap:10px;padding:14px 10px 14px 16px;background:var(--sc-accent);color:var(--sc-on-accent)}",
    ".avatar{width:38px;height:38px;border-radius:50%;display:grid;place-items:center;flex:none;",
    "background:color-mix(in srgb,currentColor 16%,transparent)}",
    ".heading{flex:1;min-width:0}.title{margin:0;font-size:16px;font-weight:650;line-height:1.25}",
    ".sub{margin:2px 0 0;font-size:13px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}",
    ".icon{width:38px;height:38px;border:0;border-radius:10px;background:transparent;display:grid;place-items:center;color:inherit}",
    ".icon:hover{background:color-mix(in srgb,currentColor 16%,transparent)}.head :focus-visible{outline-color:currentColor}",
    ".conn{padding:7px 16px;font-size:13px;background:#fff4e0;color:#6b3d00;border-bottom:1px solid #f3d9a8}",
    ".conn.fatal{background:#fdecea;color:#8a1c13;border-color:#f5c2bd}",
    ".log{flex:1;overflow-y:auto;padding:16px 14px 8px;overscroll-behavior:contain}",
    ".log:focus-visible{outline-offset:-3px}",
    ".items{list-style:none;margin:0;padding:0;display:flex;flex-direction:column;gap:12px}.greeting{margin-bottom:12px}",
    ".row{display:flex;flex-direction:column;align-items:flex-start;max-width:100%}.row.shopper{align-items:flex-end}",
    ".bubble{max-width:86%;padding:9px 13px;border-radius:16px 16px 16px 5px;background:var(--sc-bubble);overflow-wrap:anywhere}",
    ".shopper .bubble{background:var(--sc-accent);color:var(--sc-on-accent);border-radius:16px 16px 5px 16px}",
    ".agent .bubble{border-left:3px solid var(--sc-accent)}",
    ".bubble p{margin:0}.bubble p+p,.bubble ul,.bubble ol{margin:.5em 0 0}.bubble ul,.bubble ol{padding-left:1.3em}",
    ".bubble a{color:var(--sc-link);text-decoration:underline;text-underline-offset:2px}",
    ".streaming .body>p:last-child::after,.streaming .body>:last-child>li:last-child::after{content:'';display:inline-block;width:7px;height:1em;margin-left:2px;vertical-align:-2px;",
    "background:currentColor;opacity:.55;animation:sc-blink 1s steps(2) infinite}",
    "@keyframes sc-blink{50%{opacity:0}}",
    ".who{display:flex;align-items:center;gap:6px;font-size:12.5px;color:var(--sc-muted);margin:0 0 4px 2px;font-weight:600}",
    ".mini{width:20px;height:20px;border-radius:50%;background:var(--sc-accent);color:var(--sc-on-accent);display:grid;place-items:center;font-size:11px}",
    ".system{align-items:center;text-align:center;font-size:12.5px;color:var(--sc-muted);padding:2px 16px}",
    ".meta{display:flex;align-items:center;gap:2px;margin-top:4px;font-size:12.5px;color:var(--sc-muted)}",
    ".failed{color:#b42318}.rate{width:32px;height:30px;border:0;border-radius:8px;background:transparent;color:var(--sc-muted);display:grid;place-items:center}",
    ".rate .i{width:17px;height:17px}.rate:hover{background:var(--sc-bubble);color:var(--sc-fg)}.rate[aria-pressed=true]{color:var(--sc-link)}",
    ".sources{list-style:none;margin:6px 0 0;padding:0;display:flex;flex-direction:column;gap:6px;max-width:86%;width:100%}",
    ".source{display:flex;align-items:center;gap:8px;padding:7px 10px;border:1px solid var(--sc-border);border-radius:10px;",
    "color:var(--sc-fg);text-decoration:none;font-size:13px;background:var(--sc-bg)}",
    "a.source:hover{border-color:var(--sc-link)}a.source .stitle{color:var(--sc-link)}.source .i{width:14px;height:14px;color:var(--sc-muted)}",
    ".kind{font-size:11px;font-weight:700;letter-spacing:.04em;text-transform:uppercase;color:var(--sc-muted);flex:none}",
    ".stitle{flex:1;min-width:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}",
    ".row:not(:last-child) .suggest{display:none}.suggest{display:flex;flex-wrap:wrap;align-items:center;gap:8px;margin-top:8px;font-size:13.5px}",
    ".activity{display:flex;align-items:center;gap:10px;margin-top:12px;font-size:13px;color:var(--sc-muted)}",
    ".dots{display:inline-flex;gap:4px;padding:11px 13px;border-radius:16px 16px 16px 5px;background:var(--sc-bubble)}",
    ".dots i{width:7px;height:7px;border-radius:50%;background:var(--sc-muted);animation:sc-dot 1.2s infinite ease-in-out}",
    ".dots i:nth-child(2){animation-delay:.15s}.dots i:nth-child(3){animation-delay:.3s}",
    "@keyframes sc-dot{0%,60%,100%{transform:none;opacity:.45}30%{transform:translateY(-4px);opacity:1}}",
    ".csat{margin:16px 0 6px;padding:16px;border:1px solid var(--sc-border);border-radius:14px;text-align:center}",
    ".csat .q{margin:0 0 10px;font-weight:600}.stars{display:flex;justify-content:center;gap:4px;margin-bottom:6px}",
    ".star{width:40px;height:40px;border:0;border-radius:10px;background:transparent;color:#9aa3ae;display:grid;place-items:center}",
    ".star .i{width:28px;height:28px}.stars:hover .star{color:#b7791f}.star:hover~.star{color:#9aa3ae}.star:focus-visible{color:#b7791f}",
    ".notice{display:flex;align-items:flex-start;gap:10px;justify-content:space-between;margin:0 12px 8px;padding:9px 12px;",
    "border-radius:10px;background:#fdecea;color:#8a1c13;font-size:13px}",
    ".link{border:0;background:none;padding:0 2px;color:var(--sc-link);text-decoration:underline;font-size:13px}.notice .link{color:inherit;flex:none}",
    ".actions{display:flex;gap:8px;padding:0 12px 8px;flex-wrap:wrap}.actions:not(:has(.pill:not([hidden]))){display:none}",
    ".pill{display:inline-flex;align-items:center;gap:6px;padding:6px 12px;border:1px solid var(--sc-border);border-radius:999px;",
    "background:var(--sc-bg);font-size:13px;font-weight:550}.pill:hover{border-color:var(--sc-link);color:var(--sc-link)}.pill .i{width:16px;height:16px}",
    ".primary{margin-top:10px;padding:9px 16px;border:0;border-radius:10px;background:var(--sc-accent);color:var(--sc-on-accent);font-weight:600}",
    ".action-card{max-width:86%;width:100%;margin-top:8px;padding:12px 14px;border:1px solid var(--sc-border);border-radius:14px;background:var(--sc-bg)}",
    ".action-card p{margin:0}.action-title{font-size:12.5px;font-weight:700;color:var(--sc-muted)}.action-summary{margin-top:4px!important;overflow-wrap:anywhere}",
    ".action-buttons{display:flex;flex-wrap:wrap;gap:8px;margin-top:10px}.action-buttons .primary{margin:0}",
    ".secondary{padding:9px 16px;border:1px solid var(--sc-border);border-radius:10px;background:var(--sc-bg);color:var(--sc-fg);font-weight:600}",
    ".action-buttons button:disabled{opacity:.55;cursor:default}.action-buttons [aria-pressed=true]{outline:2px solid var(--sc-muted);outline-offset:1px}",
    ".action-status{margin-top:8px!important;font-size:13px;font-weight:600;color:var(--sc-fg)}.action-status:focus-visible{outline-offset:2px}",
    ".s-executed .action-status,.action-status.s-executed{color:#1a7f37}.s-failed .action-status,.action-status.s-failed{color:#b42318}",
    ":host([data-theme=dark]) .s-executed .action-status{color:#6fdd8b}:host([data-theme=dark]) .s-failed .action-status{color:#ff8a80}",
    ".composer{display:flex;align-items:flex-end;gap:8px;padding:10px 12px 12px;border-top:1px solid var(--sc-border)}",
    "textarea{flex:1;min-height:42px;max-height:140px;resize:none;padding:10px 14px;border:1px solid var(--sc-border);border-radius:21px;",
    "font:inherit;color:var(--sc-fg);background:var(--sc-bg);line-height:1.4}textarea::placeholder{color:var(--sc-muted);opacity:1}",
    "textarea:focus-visible{outline:2px solid var(--sc-link);outline-offset:0;border-color:transparent}",
    ".send{width:42px;height:42px;border:0;border-radius:50%;background:var(--sc-accent);color:var(--sc-on-accent);display:grid;place-items:center;flex:none}",
    ".send:disabled,textarea:disabled{opacity:.5;cursor:not-allowed}",
    "@media (max-width:479.98px){.panel{inset:0;width:100%;max-width:none;height:100%;border-radius:0}",
    ":host([data-open]) .launcher{display:none}}",
    "@media (forced-colors:active){.icon,.rate,.star,.send,.launcher{border:1px solid ButtonText}.bubble{border:1px solid CanvasText}}",
    "@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}"
  ].join("\n");

  function configFrom(s) {
    var d = function (name) { var v = s.getAttribute("data-" + name); return v === null ? undefined : v; };
    return {
      store: d("store"), server: d("server"), lang: d("lang"), color: d("color"), position: d("position"),
      title: d("title"), greeting: d("greeting"), identity: d("identity"), theme: d("theme")
    };
  }

  function start() {
    var cfg = configFrom(script);
    if (!cfg.store) { if (root.console) console.warn("storefront-chat: the script tag needs data-store"); return; }
    var w = new Widget(cfg);
    /** The public JS API (documented in docs/widget.md). */
    root.StorefrontChat = {
      version: VERSION,
      open: function () { w.open(); },
      close: function () { w.close(); },
      toggle: function () { w.toggle(); },
      isOpen: function () { return w.isOpen; },
      send: function (text) { w.open({ focus: false }); return w.send(text); },
      setIdentity: function (token) { w.setIdentity(token); },
      setTheme: function (o) { w.applyTheme(o); },
      newConversation: function () { w.newConversation(); },
      unread: function () { return w.unread; },
      conversationId: function () { return w.conv.id; },
      on: function (name, fn) {
        (w.listeners[name] = w.listeners[name] || []).push(fn);
        return function () { w.listeners[name] = (w.listeners[name] || []).filter(function (f) { return f !== fn; }); };
      }
    };
    root.dispatchEvent(new CustomEvent("storefrontchat:ready", { detail: root.StorefrontChat }));
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})(typeof window !== "undefined" ? window : globalThis);
