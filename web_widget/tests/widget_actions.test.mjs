// Order actions in the widget's transcript state machine (issue #19), against the shared
// example frames. Run: node --test web_widget/tests/
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

function proposed() {
  const c = new W.Conversation();
  c.apply(wire(server("welcome (new)")));
  const fx = c.apply(wire(server("done (proposes an action)")));
  return { c, fx, reply: c.find("bot", "r_Kp2x") };
}

test("confirm frames built by the widget equal the example frames", () => {
  const yes = client("confirm (yes)");
  assert.deepEqual(W.frames.confirm(yes.action_id, true), yes);
  assert.deepEqual(W.frames.confirm(yes.action_id, false), client("confirm (keep my order)"));
  assert.equal(W.isStored(wire(server("action (executed)"))), true, "action events are stored");
});

test("a done with a proposed action becomes a card on the reply", () => {
  const { fx, reply } = proposed();
  const example = server("done (proposes an action)").action;
  assert.deepEqual(reply.action, {
    id: example.id, kind: "cancel_order", summary: example.summary, status: "proposed", reason: "", answering: null,
  });
  assert.deepEqual(fx.finished, [reply]);
});

test("a done without an action, or with an outcome dict, has no card", () => {
  const c = new W.Conversation();
  c.apply(wire(server("welcome (new)")));
  c.apply(wire(server("done")));
  assert.equal(c.find("bot", "r_7f3a9c").action, undefined);
  const odd = { ...server("done"), seq: 10, reply_id: "r_2", action: { id: "x", status: "executed" } };
  c.apply(wire(odd));
  assert.equal(c.find("bot", "r_2").action, undefined);
});

test("pressing Confirm sends one frame and locks the card until the outcome", () => {
  const { c, reply } = proposed();
  const frame = c.answerAction(reply, true);
  assert.deepEqual(frame, client("confirm (yes)"));
  assert.equal(reply.action.answering, true);
  assert.equal(c.answerAction(reply, false), null, "a second press sends nothing");
  const fx = c.apply(wire(server("action (executed)")));
  assert.equal(reply.action.status, "executed");
  assert.equal(reply.action.answering, null);
  assert.deepEqual(fx.actions, [reply]);
  assert.deepEqual(fx.items, [reply]);
  assert.equal(c.lastSeq, 23);
  assert.equal(c.answerAction(reply, true), null, "an answered card sends nothing");
});

test("an answer in words closes the card when its outcome arrives", () => {
  const { c, reply } = proposed();
  c.addShopper("m_6", "no, keep it");
  c.apply({ v: 1, type: "ack", seq: 22, id: "m_6", text: "no, keep it" });
  c.apply(wire(server("action (declined)")));
  assert.equal(reply.action.status, "declined");
  assert.equal(c.answerAction(reply, true), null);
});

test("approval: awaiting, then the team's decision on the same card", () => {
  const { c, reply } = proposed();
  c.apply(wire(server("action (awaiting approval)")));
  assert.equal(reply.action.status, "awaiting_approval");
  c.apply(wire({ ...server("action (executed)"), seq: 30 }));
  assert.equal(reply.action.status, "executed");
});

test("a failed outcome keeps its reason; a duplicate event is dropped by seq", () => {
  const { c, reply } = proposed();
  c.apply(wire(server("action (failed)")));
  assert.match(reply.action.reason, /shipped/);
  const again = c.apply(wire(server("action (executed)")));
  assert.equal(reply.action.status, "failed", "same seq: a replay overlap, ignored");
  assert.deepEqual(again.actions, []);
});

test("a refused confirm unlocks nothing and marks the card", () => {
  const { c, reply } = proposed();
  c.answerAction(reply, true);
  const used = server("error (action used)");
  const fx = c.apply(wire(used));
  assert.equal(reply.action.status, "used");
  assert.equal(reply.action.answering, null);
  assert.equal(fx.error.code, "action_used");
  assert.equal(c.answerAction(reply, true), null);
});

test("an unanswered card expires: the expiry's event closes it, no answer can be sent", () => {
  const { c, reply } = proposed();
  const fx = c.apply(wire(server("action (expired)")));
  assert.equal(reply.action.status, "expired");
  assert.equal(reply.action.reason, "The offer expired.");
  assert.deepEqual(fx.actions, [reply]);
  assert.equal(c.answerAction(reply, true), null);
});

test("a new request: the open card is declined and the reply's new card opens", () => {
  const { c, reply } = proposed();
  c.addShopper("m_7", "actually, change the address instead");
  c.apply({ v: 1, type: "ack", seq: 22, id: "m_7", text: "actually, change the address instead" });
  c.apply(wire(server("action (declined)")));
  const next = { ...server("done (proposes an action)"), seq: 24, reply_id: "r_New1", in_reply_to: "m_7",
    action: { id: "act_new", kind: "modify_order_address", status: "proposed", summary: "Ship order #W5442520 to ...", details: {} } };
  c.apply(wire(next));
  assert.equal(reply.action.status, "declined");
  assert.equal(c.answerAction(reply, true), null, "the old card stays closed");
  const card = c.find("bot", "r_New1");
  assert.equal(card.action.status, "proposed");
  assert.deepEqual(c.answerAction(card, true), W.frames.confirm("act_new", true));
});

test("an outcome without its card in the transcript becomes a status line", () => {
  const c = new W.Conversation();
  c.apply(wire(server("welcome (new)")));
  c.apply(wire(server("action (expired)")));
  const line = c.items[c.items.length - 1];
  assert.equal(line.role, "system");
  assert.equal(line.action.status, "expired");
});

test("resume replays the card and its outcome; a stored 'answering' is cleared on load", () => {
  const { c, reply } = proposed();
  c.answerAction(reply, false);
  const restored = new W.Conversation(JSON.parse(JSON.stringify(c.toJSON())));
  const card = restored.find("bot", "r_Kp2x");
  assert.equal(card.action.answering, null, "the answer may never have left: answerable again");
  const fresh = new W.Conversation();
  fresh.apply(wire({
    ...server("welcome (new)"), resumed: true, seq: 23,
    events: [server("done (proposes an action)"), server("action (declined)")],
  }));
  assert.equal(fresh.find("bot", "r_Kp2x").action.status, "declined");
});

test("another refusal (an agent owns the chat, a rate limit) makes the card answerable again", () => {
  const { c, reply } = proposed();
  c.answerAction(reply, true);
  const fx = c.apply(wire({ v: 1, type: "error", seq: 21, code: "not_allowed", message: "a team member is handling this conversation", ref: reply.action.id }));
  assert.equal(reply.action.status, "proposed");
  assert.equal(reply.action.answering, null);
  assert.deepEqual(fx.items, [reply]);
  assert.ok(c.answerAction(reply, true));
});
