"""The YAML transcript format: a store fixture, an identity, and turns with expectations.

A transcript file holds one transcript, or several as YAML documents separated by
``---``. ``docs/transcripts.md`` is the reference; in short::

    name: tracking a shipped order
    store: demo                      # or {name: tau, import: {format: tau-retail, path: ...}}
    identity: {customer: harper_jackson_8530}   # or: guest
    xfail: the model drops the carrier name      # optional, an honest reason
    turns:
      - shopper: Where is my order #NW10822?
        contains: ["#NW10822"]
        cites: [order #NW10822]
        no_unsupported_claims: true
      - agent: take_over
      - agent: {send: "Hi, this is Sam from the team."}
      - shopper: thanks Sam
        no_reply: true               # a person owns the conversation: the bot is silent
      - agent: hand_back

Everything here is plain data and checks; loading never touches the network. Every
problem is a :class:`TranscriptError` naming the file, the turn and the reason.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chatbot.errors import ChatbotError

TRANSCRIPT_KEYS = frozenset(
    {"name", "description", "store", "identity", "turns", "xfail", "skip", "tags"}
)
EXPECTATION_KEYS = frozenset(
    {
        "contains",
        "contains_any",
        "not_contains",
        "regex",
        "not_regex",
        "cites",
        "cites_any",
        "not_cites",
        "handoff",
        "no_unsupported_claims",
        "max_ttft_ms",
        "no_reply",
    }
)
# Informational keys a turn may carry (the exporter writes ``recorded``); never checked.
NOTE_KEYS = frozenset({"note", "recorded"})
AGENT_ACTIONS = ("take_over", "send", "hand_back", "resolve")
IMPORT_FORMATS = ("json", "tau-retail", "shopify-csv")
_LINE = "__line__"


class TranscriptError(ChatbotError):
    """A transcript file that cannot be used: the file, where in it, and why."""

    code = "bad_transcript"

    def __init__(self, path: str | Path, location: str, reason: str) -> None:
        self.path = str(path)
        self.location = location
        self.reason = reason
        where = f"{self.path}: {location}" if location else self.path
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class StoreFixture:
    """The store a transcript talks to: an existing one, or a named import.

    ``name`` is what the widget sends in ``hello`` (store name or widget key). With
    ``import_format``/``import_path`` the in-process runner imports that file into a
    store of that name first.
    """

    name: str
    import_format: str | None = None
    import_path: Path | None = None


@dataclass(frozen=True)
class Cite:
    """A source the reply must (or must not) cite; an empty ``id`` matches any id of ``kind``."""

    kind: str
    id: str = ""

    def matches(self, kind: str, source_id: str) -> bool:
        if kind.lower() != self.kind.lower():
            return False
        return not self.id or _norm_id(self.id) == _norm_id(source_id)

    def __str__(self) -> str:
        return f"{self.kind} {self.id}".strip()


@dataclass(frozen=True)
class Expectations:
    """What a correct reply to one shopper message must (not) do."""

    contains: tuple[str, ...] = ()
    contains_any: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    not_regex: tuple[str, ...] = ()
    cites: tuple[Cite, ...] = ()
    cites_any: tuple[Cite, ...] = ()
    not_cites: tuple[Cite, ...] = ()
    handoff: bool | None = None
    no_unsupported_claims: bool = False
    max_ttft_ms: float | None = None
    no_reply: bool = False


@dataclass(frozen=True)
class ShopperTurn:
    """The shopper sends ``text``; the bot's reply is checked against ``expect``."""

    text: str
    expect: Expectations = field(default_factory=Expectations)
    line: int = 0
    note: str = ""


@dataclass(frozen=True)
class AgentStep:
    """A console action by the runner's test agent: take over, send, hand back, resolve."""

    action: str
    text: str = ""
    line: int = 0


Step = ShopperTurn | AgentStep


@dataclass(frozen=True)
class Transcript:
    """One scripted conversation and what every reply in it must satisfy."""

    name: str
    path: Path
    store: StoreFixture
    steps: tuple[Step, ...]
    customer: str | None = None  # the signed-in customer's id in the store; None: guest
    description: str = ""
    xfail: str | None = None
    skip: str | None = None
    tags: tuple[str, ...] = ()
    document: int = 0  # position of the YAML document in its file
    line: int = 0

    @property
    def identity(self) -> str:
        return f"customer {self.customer}" if self.customer else "guest"

    @property
    def has_agent_steps(self) -> bool:
        return any(isinstance(s, AgentStep) for s in self.steps)

    def turn_label(self, index: int) -> str:
        step = self.steps[index]
        return f"turn {index + 1} (line {step.line})" if step.line else f"turn {index + 1}"


# ---- loading ------------------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """A safe loader that records the line of every mapping (for error messages)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping[_LINE] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_file(path: str | Path) -> list[Transcript]:
    """Every transcript in one YAML file (one per document), validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TranscriptError(path, "", f"cannot read the file ({exc})") from exc
    return loads(text, path)


def loads(text: str, path: str | Path = "<string>") -> list[Transcript]:
    """Parse transcript YAML ``text`` (``path`` names it in errors and anchors imports)."""
    path = Path(path)
    try:
        documents = [d for d in yaml.load_all(text, Loader=_LineLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TranscriptError(path, where, f"not valid YAML: {problem}") from exc
    if not documents:
        raise TranscriptError(path, "", "the file holds no transcript")
    _check_comments(text, path)
    many = len(documents) > 1
    return [_transcript(doc, path, i, many) for i, doc in enumerate(documents)]


_UNQUOTED_COMMENT = re.compile(r"^\s*-?\s*(shopper|send)\s*:\s*[^\s\"'|>][^#]*\s#")


def _check_comments(text: str, path: Path) -> None:
    """Refuse ``shopper: where is #NW10001?`` unquoted: YAML reads `` #...`` as a comment,
    so the order number would silently vanish from the message."""
    for number, line in enumerate(text.splitlines(), start=1):
        if _UNQUOTED_COMMENT.match(line):
            raise TranscriptError(
                path, f"line {number}",
                "' #' starts a YAML comment, so the text would be cut there; "
                "quote the message (shopper: \"where is #NW10001?\")",
            )


def collect_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Transcript files named by ``paths``: files as given, folders searched recursively."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            found.append(path)
        else:
            raise TranscriptError(path, "", "no such file or folder")
    return list(dict.fromkeys(found))


def load_paths(paths: Sequence[str | Path]) -> list[Transcript]:
    """Every transcript under ``paths`` (see :func:`collect_paths`)."""
    return [t for p in collect_paths(paths) for t in load_file(p)]


def _transcript(doc: Any, path: Path, index: int, many: bool) -> Transcript:
    where = f"document {index + 1}" if many else ""
    if not isinstance(doc, dict):
        raise TranscriptError(path, where, "a transcript must be a mapping with 'turns'")
    _check_keys(doc, TRANSCRIPT_KEYS, path, where or f"line {doc.get(_LINE, 1)}")
    name = doc.get("name", path.stem if not many else f"{path.stem}[{index + 1}]")
    if not isinstance(name, str) or not name.strip():
        raise TranscriptError(path, where, "'name' must be a non-empty string")
    steps_raw = doc.get("turns")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise TranscriptError(path, where, "'turns' must be a non-empty list")
    steps = tuple(_step(raw, path, i) for i, raw in enumerate(steps_raw))
    if not any(isinstance(s, ShopperTurn) for s in steps):
        raise TranscriptError(path, where, "a transcript needs at least one 'shopper' turn")
    if "store" not in doc:
        raise TranscriptError(path, where, "'store' is required (e.g. 'store: demo')")
    xfail, skip = doc.get("xfail"), doc.get("skip")
    for key, value in (("xfail", xfail), ("skip", skip)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise TranscriptError(path, where, f"'{key}' must be a reason (a non-empty string)")
    tags = doc.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise TranscriptError(path, where, "'tags' must be a list of strings")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise TranscriptError(path, where, "'description' must be a string")
    return Transcript(
        name=name.strip(),
        path=path,
        store=_store(doc["store"], path, where),
        steps=steps,
        customer=_identity(doc.get("identity", "guest"), path, where),
        description=description.strip(),
        xfail=xfail.strip() if xfail else None,
        skip=skip.strip() if skip else None,
        tags=tuple(tags),
        document=index,
        line=int(doc.get(_LINE, 1)),
    )


def _check_keys(obj: Mapping[str, Any], allowed: frozenset[str], path: Path, where: str) -> None:
    for key in obj:
        if key == _LINE or key in allowed:
            continue
        close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise TranscriptError(path, where, f"unknown key '{key}'{hint}")


def _store(raw: Any, path: Path, where: str) -> StoreFixture:
    if isinstance(raw, str) and raw.strip():
        return StoreFixture(raw.strip())
    if not isinstance(raw, dict):
        raise TranscriptError(path, where, "'store' must be a store name or {name, import}")
    _check_keys(raw, frozenset({"name", "import"}), path, where or "store")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TranscriptError(path, where, "'store.name' must be a non-empty string")
    spec = raw.get("import")
    if spec is None:
        return StoreFixture(name.strip())
    if not isinstance(spec, dict):
        raise TranscriptError(path, where, "'store.import' must be {format, path}")
    _check_keys(spec, frozenset({"format", "path"}), path, where or "store.import")
    fmt, rel = spec.get("format"), spec.get("path")
    if fmt not in IMPORT_FORMATS:
        raise TranscriptError(
            path, where, f"'store.import.format' must be one of {', '.join(IMPORT_FORMATS)}"
        )
    if not isinstance(rel, str) or not rel.strip():
        raise TranscriptError(path, where, "'store.import.path' must be a path")
    # Relative to the transcript file, so a suite can be run from any folder.
    target = (path.parent / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
    return StoreFixture(name.strip(), fmt, target)


def _identity(raw: Any, path: Path, where: str) -> str | None:
    if raw == "guest" or raw is None:
        return None
    if isinstance(raw, dict):
        _check_keys(raw, frozenset({"customer"}), path, where or "identity")
        customer = raw.get("customer")
        if isinstance(customer, str | int) and str(customer).strip():
            return str(customer).strip()
    raise TranscriptError(path, where, "'identity' must be 'guest' or {customer: ID}")


def _step(raw: Any, path: Path, index: int) -> Step:
    if not isinstance(raw, dict):
        raise TranscriptError(path, f"turn {index + 1}", "a turn must be a mapping")
    line = int(raw.get(_LINE, 0))
    where = f"turn {index + 1} (line {line})"
    if "agent" in raw:
        return _agent_step(raw, path, where, line)
    if "shopper" not in raw:
        raise TranscriptError(path, where, "a turn needs 'shopper: TEXT' or 'agent: ACTION'")
    _check_keys(raw, EXPECTATION_KEYS | NOTE_KEYS | {"shopper"}, path, where)
    text = raw["shopper"]
    if not isinstance(text, str | int | float) or not str(text).strip():
        raise TranscriptError(path, where, "'shopper' must be the message text")
    note = raw.get("recorded") or raw.get("note") or ""
    return ShopperTurn(str(text), _expectations(raw, path, where), line, str(note))


def _agent_step(raw: dict[str, Any], path: Path, where: str, line: int) -> AgentStep:
    _check_keys(raw, frozenset({"agent", "note"}), path, where)
    value = raw["agent"]
    if isinstance(value, str) and value.strip() in AGENT_ACTIONS and value.strip() != "send":
        return AgentStep(value.strip(), line=line)
    if isinstance(value, str) and value.startswith("send:"):
        text = value[len("send:") :].strip()
    elif isinstance(value, dict) and set(value) - {_LINE} == {"send"}:
        text = str(value["send"] or "").strip()
    else:
        raise TranscriptError(
            path, where, "'agent' must be take_over, hand_back, resolve or {send: TEXT}"
        )
    if not text:
        raise TranscriptError(path, where, "an agent 'send' needs the message text")
    return AgentStep("send", text, line)


def _strings(raw: dict[str, Any], key: str, path: Path, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str | int | float):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise TranscriptError(path, where, f"'{key}' must be a string or a list of strings")
    out = tuple(str(v) for v in value)
    if any(not v.strip() for v in out):
        raise TranscriptError(path, where, f"'{key}' has an empty entry")
    return out


def _cites(raw: dict[str, Any], key: str, path: Path, where: str) -> tuple[Cite, ...]:
    value = raw.get(key, [])
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list):
        raise TranscriptError(path, where, f"'{key}' must be a list of sources")
    cites = []
    for item in value:
        if isinstance(item, str) and item.strip():
            kind, _, ident = item.strip().replace(":", " ", 1).partition(" ")
            cites.append(Cite(kind, ident.strip()))
        elif isinstance(item, dict) and isinstance(item.get("kind"), str):
            cites.append(Cite(item["kind"], str(item.get("id") or "")))
        else:
            raise TranscriptError(
                path, where, f"'{key}' entries are 'KIND ID' strings or {{kind, id}} mappings"
            )
    return tuple(cites)


def _expectations(raw: dict[str, Any], path: Path, where: str) -> Expectations:
    for key in ("handoff", "no_unsupported_claims", "no_reply"):
        if key in raw and not isinstance(raw[key], bool):
            raise TranscriptError(path, where, f"'{key}' must be true or false")
    ttft = raw.get("max_ttft_ms")
    if ttft is not None and (isinstance(ttft, bool) or not isinstance(ttft, int | float)
                             or ttft <= 0):
        raise TranscriptError(path, where, "'max_ttft_ms' must be a positive number")
    regex = _strings(raw, "regex", path, where)
    not_regex = _strings(raw, "not_regex", path, where)
    for pattern in regex + not_regex:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise TranscriptError(path, where, f"bad regex {pattern!r}: {exc}") from exc
    expect = Expectations(
        contains=_strings(raw, "contains", path, where),
        contains_any=_strings(raw, "contains_any", path, where),
        not_contains=_strings(raw, "not_contains", path, where),
        regex=regex,
        not_regex=not_regex,
        cites=_cites(raw, "cites", path, where),
        cites_any=_cites(raw, "cites_any", path, where),
        not_cites=_cites(raw, "not_cites", path, where),
        handoff=raw.get("handoff"),
        no_unsupported_claims=bool(raw.get("no_unsupported_claims", False)),
        max_ttft_ms=float(ttft) if ttft is not None else None,
        no_reply=bool(raw.get("no_reply", False)),
    )
    if expect.no_reply and any(
        k in raw for k in EXPECTATION_KEYS - {"no_reply", "max_ttft_ms"}
    ):
        raise TranscriptError(path, where, "'no_reply' cannot be combined with reply checks")
    return expect


def _norm_id(value: str) -> str:
    return value.strip().lstrip("#").lower()


def iter_shopper_turns(t: Transcript) -> Iterator[tuple[int, ShopperTurn]]:
    """``(index, turn)`` for the shopper turns of ``t``."""
    for i, step in enumerate(t.steps):
        if isinstance(step, ShopperTurn):
            yield i, step
