// The widget's protocol handling, checked against the shared example frames.
// Run: node --test web_widget/tests/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const W = require("../widget.js");
const EXAMPLES = JSON.parse(readFileSync(new URL("../protocol-examples.json", import.meta.url), "utf8"));

const client = (name) => EXAMPLES.client.find((e) => e.name === name).frame;
const server = (name) => structuredClone(EXAMPLES.server.find((e) => e.name === name).frame);
const wire = (frame) => W.decodeEvent(JSON.stringify(frame));

test("the widget speaks the same protocol version as the examples", () => {
  assert.equal(W.PROTOCOL_VERSION, EXAMPLES.version);
});

test("client frames built by the widget equal the example frames", () => {
  const hello = client("hello (resume)");
  assert.deepEqual(W.frames.hello({ store: "demo" }), client("hello (new guest)"));
  assert.deepEqual(
    W.frames.hello({
      store: "demo", conversation_id: hello.conversation_id, last_seq: 12,
      resume_token: hello.resume_token, identity: hello.identity,
    }),
    hello,
  );
  assert.deepEqual(
    W.frames.hello({ store: "demo", new_conversation: true, conversation_id: null, resume_token: null }),
    client("hello (start over)"),
  );
  assert.deepEqual(W.frames.message("m_1", "How long does shipping take?"), client("message"));
  assert.deepEqual(W.frames.typing(true), client("typing"));
  assert.deepEqual(W.frames.handoff("I want to talk to a person"), client("handoff"));
  assert.deepEqual(W.frames.feedback("r_7f3a9c", 1), client("feedback"));
  assert.deepEqual(W.frames.feedback("r_7f3a9c", -1, "wrong order"), client("feedback (down, with comment)"));
  assert.deepEqual(W.frames.stop("r_7f3a9c"), client("stop"));
  assert.deepEqual(W.frames.end(5, "quick and helpful"), client("end"));
});

test("every client example type has a builder, and every server example decodes", () => {
  for (const { frame } of EXAMPLES.client) assert.equal(typeof W.frames[frame.type], "function", frame.type);
  for (const { name, frame } of EXAMPLES.server) {
    const ev = wire(frame);
    assert.ok(ev, name);
    assert.equal(typeof ev.seq, "number", `${name} carries seq`);
  }
});

test("resume from last_seq 0 keeps the hello field (0 is a real resume point)", () => {
  assert.equal(W.frames.hello({ store: "demo", conversation_id: "c_1", last_seq: 0 }).last_seq, 0);
});

test("a streamed reply: ack, thinking, tokens, done with a source", () => {
  const c = new W.Conversation();
  c.apply(wire(server("welcome (new)")));
  assert.equal(c.id, "c_8Jq2vYw1nK3xT0aB");
  assert.equal(c.resumeToken, "r_Zt6b3kq0w9PpGd1cL4aYx2s7mVnE5hJu");

  c.addShopper("m_1", "How long does shipping take?");
  assert.equal(c.pending().length, 1);
  c.apply(wire(server("ack")));
  assert.equal(c.pending().length, 0);

  let fx = c.apply(wire(server("status (thinking)")));
  assert.equal(c.activity.kind, "thinking", "thinking is applied although its seq repeats the ack's");
  assert.ok(fx.activity);

  const pieces = ["Standard", " shipping", " takes", " 3-5", " business", " days", "."];
  pieces.forEach((text, i) => c.apply(wire({ v: 1, type: "token", seq: 2 + i, reply_id: "r_7f3a9c", text })));
  const reply = c.find("bot", "r_7f3a9c");
  assert.equal(reply.text, "Standard shipping takes 3-5 business days.");
  assert.equal(reply.done, false);
  assert.equal(c.streaming(), reply);
  assert.equal(c.activity, null, "the first token ends 'thinking'");

  fx = c.apply(wire(server("done")));
  assert.equal(reply.done, true);
  assert.deepEqual(fx.finished, [reply], "announced once, when finished");
  assert.equal(reply.sources[0].id, "shipping-policy");
  assert.equal(c.lastSeq, 9);
  assert.equal(c.streaming(), null);
});

test("events are deduplicated by seq; ephemeral events are not", () => {
  const c = new W.Conversation();
  c.apply(wire(server("welcome (new)")));
  const tok = server("token");
  c.apply(wire(tok));
  c.apply(wire(tok)); // a replay overlap after reconnecting
  assert.equal(c.find("bot", "r_7f3a9c").text, "Standard");
  const done = server("done");
  c.apply(wire(done));
  const again = c.apply(wire(done));
  assert.deepEqual(again.finished, [], "a duplicated done is not announced twice");
  const err = c.apply(wire({ ...server("error"), seq: 9 }));
  assert.equal(err.error.code, "rate_limited", "an error repeating the last seq still applies");
});

test("resume: the missed events in welcome finish a reply cut by a disconnect", () => {
  const c = new W.Conversation({ id: "c_8Jq2vYw1nK3xT0aB", lastSeq: 12, resumeToken: "r_x", items: [] });
  const partial = c.add({ role: "bot", id: "r_7f3a9c", text: "Standard shipping takes 3-5", done: false });
  const fx = c.apply(wire(server("welcome (resumed, missed events)")));
  assert.equal(fx.reset, false, "same conversation: the transcript is kept");
  assert.equal(partial.text, "Standard shipping takes 3-5 business days.");
  assert.equal(partial.done, true);
  assert.equal(c.lastSeq, 14);
  assert.equal(c.resumeToken, "r_x", "a null resume_token keeps the one we have");
  assert.deepEqual(fx.finished, [partial]);
  assert.equal(c.customer.name, "Mia");
});

test("a welcome for another conversation resets the transcript but keeps unsent messages", () => {
  const c = new W.Conversation({ id: "c_old", lastSeq: 40, resumeToken: "r_old", items: [] });
  c.add({ role: "bot", id: "r_1", text: "old reply", done: true });
  c.addShopper("m_9", "still sending");
  c.apply(wire({ v: 1, type: "error", seq: 0, code: "conversation_not_found", message: "x" }));
  const fx = c.apply(wire(server("welcome (new)")));
  assert.equal(fx.reset, true);
  assert.deepEqual(c.items.map((i) => i.id), ["m_9"]);
  assert.equal(c.lastSeq, 0);
  assert.equal(c.resumeToken, "r_Zt6b3kq0w9PpGd1cL4aYx2s7mVnE5hJu");
});

test("handoff, agent joined, agent typing, agent message, agent left, resolved", () => {
  const c = new W.Conversation();
  c.apply(wire(server("welcome (new)")));
  c.apply(wire(server("status (handoff requested)")));
  assert.equal(c.state, "waiting");
  c.apply(wire(server("status (agent joined)")));
  assert.equal(c.state, "agent");
  assert.equal(c.agent, "Sam");
  c.apply(wire(server("status (agent typing)")));
  assert.deepEqual(c.activity, { kind: "typing", agent: "Sam" });
  const fx = c.apply(wire(server("agent_message")));
  assert.equal(c.activity, null, "a message ends the typing indicator");
  assert.equal(fx.finished[0].text, "Hi, I'm Sam. Let me check that for you.");
  assert.equal(fx.finished[0].agent, "Sam");
  c.apply(wire(server("status (agent left)")));
  assert.equal(c.state, "bot");
  assert.equal(c.agent, null);
  c.apply(wire(server("status (resolved)")));
  assert.equal(c.state, "resolved");
  assert.equal(c.csat, "ask", "a resolved conversation asks for a satisfaction rating");
  const kinds = c.items.filter((i) => i.role === "system").map((i) => i.kind);
  assert.deepEqual(kinds, ["handoff_requested", "agent_joined", "agent_left", "resolved"]);
});

test("repeated sources are shown once", () => {
  const c = new W.Conversation();
  const done = server("done");
  done.sources = [...done.sources, ...done.sources, { kind: "faq", id: "x", title: "X", url: "" }];
  c.apply(wire(done));
  assert.deepEqual(c.find("bot", "r_7f3a9c").sources.map((s) => s.id), ["shipping-policy", "x"]);
});

test("an interrupted reply is kept and marked", () => {
  const c = new W.Conversation();
  c.apply(wire(server("welcome (new)")));
  c.apply(wire(server("done (interrupted)")));
  const r = c.find("bot", "r_1b2c3d");
  assert.equal(r.interrupted, true);
  assert.equal(r.text, "Your order #W2611340 ");
});

test("an error about a message marks it failed, and clears the thinking indicator", () => {
  const c = new W.Conversation();
  c.apply(wire(server("welcome (new)")));
  c.addShopper("m_4", "hi again");
  c.apply(wire({ v: 1, type: "status", seq: 0, kind: "thinking", text: "", agent: null, state: "bot" }));
  const fx = c.apply(wire(server("error")));
  const m = c.find("shopper", "m_4");
  assert.equal(m.failed, true);
  assert.equal(m.error, "rate_limited");
  assert.equal(c.activity, null);
  assert.equal(fx.error.ref, "m_4");
  assert.deepEqual(c.pending(), [], "a failed message is not resent automatically");
});

test("frames the widget cannot read are ignored without throwing", () => {
  for (const { name, text } of EXAMPLES.invalid) {
    const ev = W.decodeEvent(text);
    const c = new W.Conversation();
    const before = JSON.stringify(c.toJSON());
    c.apply(ev);
    assert.equal(JSON.stringify(c.toJSON()), before, name);
  }
  assert.equal(W.decodeEvent("null"), null);
  assert.equal(W.decodeEvent('{"v":2,"type":"token"}'), null);
});

test("the conversation survives a JSON round trip (what localStorage keeps)", () => {
  const c = new W.Conversation();
  c.apply(wire(server("welcome (new)")));
  c.apply(wire(server("token")));
  const restored = new W.Conversation(JSON.parse(JSON.stringify(c.toJSON())));
  assert.equal(restored.lastSeq, 2);
  assert.equal(restored.find("bot", "r_7f3a9c").text, "Standard");
  assert.equal(restored.activity, null, "indicators are never restored");
});

test("rich text: HTML stays text, only http(s) links, bold and lists", () => {
  const blocks = W.parseRich('<img src=x onerror=alert(1)> **bold** [a](javascript:alert(1)) [b](https://shop.example/x)');
  assert.equal(blocks.length, 1);
  const spans = blocks[0].lines[0];
  assert.deepEqual(spans[0], { t: "text", v: "<img src=x onerror=alert(1)> " });
  assert.deepEqual(spans[1], { t: "b", v: "bold" });
  assert.ok(!spans.some((s) => s.t === "a" && s.href.startsWith("javascript")));
  assert.deepEqual(spans.find((s) => s.t === "a"), { t: "a", v: "b", href: "https://shop.example/x" });

  const list = W.parseRich("You can:\n- return it\n- exchange it\n\n1. first\n2. second");
  assert.deepEqual(list.map((b) => b.type), ["p", "ul", "ol"]);
  assert.equal(list[1].items.length, 2);

  const bare = W.parseInline("See https://shop.example/returns.");
  assert.deepEqual(bare[1], { t: "a", v: "https://shop.example/returns", href: "https://shop.example/returns" });
  assert.deepEqual(bare[2], { t: "text", v: "." });
  assert.equal(W.safeUrl("data:text/html,<b>"), null);
  assert.equal(W.safeUrl("/relative"), null);
});

test("reconnect backoff grows exponentially with jitter and is capped", () => {
  assert.equal(W.backoffDelay(0, 0, 500, 30000), 250);
  assert.equal(W.backoffDelay(0, 1, 500, 30000), 500);
  assert.equal(W.backoffDelay(3, 1, 500, 30000), 4000);
  assert.equal(W.backoffDelay(30, 1, 500, 30000), 30000);
  for (let i = 0; i < 50; i++) {
    const d = W.backoffDelay(4);
    assert.ok(d >= 4000 && d <= 8000, String(d));
  }
});

test("theme colours keep WCAG AA contrast", () => {
  for (const hex of ["#2346d8", "#ffd400", "#00c853", "#111111", "#ff7aa2", "#7c3aed"]) {
    const rgb = W.parseHex(hex);
    const on = W.parseHex(W.textOn(rgb));
    assert.ok(W.contrast(on, rgb) >= 4.5,
      `${hex} text ${W.textOn(rgb)} contrast ${W.contrast(on, rgb)}`);
    const link = W.parseHex(W.ensureContrast(rgb, [255, 255, 255], 4.6));
    assert.ok(W.contrast(link, [255, 255, 255]) >= 4.5, `${hex} link colour on white`);
  }
});

test("strings: every language has every English key; language picking", () => {
  const keys = Object.keys(W.STRINGS.en).sort();
  for (const [lang, table] of Object.entries(W.STRINGS)) assert.deepEqual(Object.keys(table).sort(), keys, lang);
  assert.equal(W.pickLanguage(["es-MX", "en"]), "es");
  assert.equal(W.pickLanguage([undefined, "de-AT"]), "de");
  assert.equal(W.pickLanguage(["fr-FR"]), "en");
  assert.equal(W.fmt(W.STRINGS.en.agentJoined, { name: "Sam" }), "Sam joined the conversation");
});
