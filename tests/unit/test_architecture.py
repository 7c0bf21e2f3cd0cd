"""Layering contracts, read from the source (no imports of the checked modules).

An equivalent of import-linter contracts, plus the habits that keep the layers honest
(docs/architecture.md, "Layers"): the protocol is the only place that builds frames,
settings is the only reader of the environment, and the import graph has no cycle.
Each rule names its exceptions, with the reason, right here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chatbot", "knowledge_base")
# chatbot's domain packages: everything but the roots every layer may use
# (chatbot.errors, chatbot.settings, chatbot.types, chatbot.text, chatbot.storage,
# chatbot.security).
DOMAIN = (
    "chatbot.actions",
    "chatbot.agents",
    "chatbot.answering",
    "chatbot.commands",
    "chatbot.conversations",
    "chatbot.engine",
    "chatbot.evaluation",
    "chatbot.protocol",
    "chatbot.replay",
    "chatbot.server",
    "chatbot.session",
    "chatbot.training",
)


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    imported: str  # module name (a module of ours when it is one, else as written)
    line: int
    top_level: bool  # runs at import time (not in a function, not under TYPE_CHECKING)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(p): p
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if "tests" not in p.relative_to(ROOT).parts
    }


MODULES = _sources()


def _imports(name: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        return ".".join([*base, *([node.module] if node.module else [])])

    def walk(nodes: list[ast.stmt], top: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, node.lineno, top)
            elif isinstance(node, ast.ImportFrom):
                module = resolve(node)
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    yield Import(name, sub if sub in MODULES else module, node.lineno, top)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from walk(node.body, False)
                yield from walk(node.orelse, top)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(node.body, False)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        stmts = [c for c in children if isinstance(c, ast.stmt)]
                        stmts += [s for h in children if isinstance(h, ast.ExceptHandler)
                                  for s in h.body]
                        yield from walk(stmts, top)

    yield from walk(tree.body, True)


IMPORTS = [imp for name, path in MODULES.items() for imp in _imports(name, path)]


def _within(module: str, packages: str | tuple[str, ...]) -> bool:
    packages = (packages,) if isinstance(packages, str) else packages
    return any(module == p or module.startswith(p + ".") for p in packages)


def _violations(
    importers: str | tuple[str, ...], forbidden: str | tuple[str, ...]
) -> set[tuple[str, str]]:
    return {
        (imp.importer, imp.imported)
        for imp in IMPORTS
        if _within(imp.importer, importers) and _within(imp.imported, forbidden)
    }


# ---- import contracts ------------------------------------------------------------------


def test_the_import_reader_sees_real_imports() -> None:
    """The contracts below are not vacuous: known imports are found, at the right level."""
    found = {(i.importer, i.imported, i.top_level) for i in IMPORTS}
    assert ("chatbot.server.app", "chatbot.conversations.service", True) in found
    assert ("knowledge_base.models", "chatbot.storage.db", True) in found
    assert any(i.importer == "chatbot.commands.serve" and not i.top_level for i in IMPORTS)


def test_protocol_imports_only_the_error_tree() -> None:
    """The wire protocol is sans-I/O: no server, no database, no domain."""
    allowed = ("chatbot.protocol", "chatbot.errors")
    bad = {
        (imp.importer, imp.imported)
        for imp in IMPORTS
        if _within(imp.importer, "chatbot.protocol")
        and _within(imp.imported, ("chatbot", "knowledge_base"))
        and not _within(imp.imported, allowed)
    }
    assert not bad


def test_knowledge_base_imports_no_chatbot_domain_package() -> None:
    """knowledge_base is what the store knows; it stands on storage and the error tree."""
    assert not _violations("knowledge_base", DOMAIN)


def test_storage_imports_no_domain_package() -> None:
    """Storage sits under everything: no knowledge_base, no chatbot domain package."""
    assert not _violations("chatbot.storage", (*DOMAIN, "knowledge_base"))


def test_sessions_and_protocol_do_no_io() -> None:
    """The socket sessions and the protocol are sans-I/O: no sockets, event loop or SQL."""
    io = ("asyncio", "websockets", "socket", "sqlalchemy", "chatbot.server")
    assert not _violations(("chatbot.session", "chatbot.protocol"), io)


def test_agents_do_not_import_answering() -> None:
    """The console labels topics with the router the server hands in (``Classify``) and
    shares the text helpers through the root ``chatbot.text``: no exception is left."""
    assert not _violations("chatbot.agents", "chatbot.answering")


# The roots every layer may use; they import nothing of ours.
ROOTS = ("chatbot.errors", "chatbot.settings", "chatbot.types", "chatbot.text")


def test_the_roots_import_nothing_of_ours() -> None:
    assert all(root in MODULES for root in ROOTS)
    assert not _violations(ROOTS, ("chatbot", "knowledge_base"))


def test_no_import_cycle() -> None:
    """Module-level imports form a DAG (imports inside functions are not counted)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in IMPORTS:
        target = imp.imported
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if imp.top_level and target and target != imp.importer:
            graph[imp.importer].add(target)
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, " -> ".join(cycles[0])


# ---- only settings reads the environment -----------------------------------------------

# chatbot/__init__.py sets OMP_WAIT_POLICY=PASSIVE (setdefault) before anything can load
# torch: libgomp reads the variable when it is loaded, which happens before any Settings
# exists (importing knowledge_base's embeddings is enough), so it cannot be passed in.
ENVIRONMENT_READERS = {"chatbot.settings", "chatbot"}


ENVIRONMENT_NAMES = frozenset({"environ", "environb", "getenv", "putenv", "unsetenv"})


def _environment_uses(tree: ast.AST) -> list[int]:
    """Lines that touch the process environment (``os.environ``, ``os.getenv``, ...)."""
    lines = []
    for node in ast.walk(tree):
        attribute = isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT_NAMES
        imported = isinstance(node, ast.ImportFrom) and node.module == "os" and any(
            a.name in ENVIRONMENT_NAMES for a in node.names
        )
        if attribute or imported:
            lines.append(node.lineno)  # type: ignore[attr-defined]
    return lines


@pytest.mark.parametrize(
    "source", ["import os\nos.environ.get('X')", "from os import getenv", "os.getenv('X')"]
)
def test_the_environment_check_catches_readers(source: str) -> None:
    assert _environment_uses(ast.parse(source))


def test_only_settings_reads_the_environment() -> None:
    found = {
        f"{name}:{line}"
        for name, path in MODULES.items()
        if name not in ENVIRONMENT_READERS
        for line in _environment_uses(ast.parse(path.read_text(encoding="utf-8")))
    }
    assert not found


# ---- only the protocol builds frames ---------------------------------------------------


def _wire_types() -> set[str]:
    from chatbot.protocol import agent, chat

    return (
        set(chat.CLIENT_TYPES) | set(chat._SERVER_NAMES.values()) | set(chat._LOG_NAMES.values())
        | set(agent.CLIENT_TYPES) | set(agent.SERVER_TYPES)
    )


def _frame_literals(tree: ast.AST, types: set[str]) -> list[int]:
    """Dict literals that look like a frame: a ``v`` key, or ``type`` naming a message."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if not isinstance(key, ast.Constant):
                continue
            if key.value == "v" or (
                key.value == "type" and isinstance(value, ast.Constant) and value.value in types
            ):
                lines.append(node.lineno)
    return lines


def test_no_frame_is_built_outside_the_protocol() -> None:
    types = _wire_types()
    found = {
        f"{name}:{line}"
        for name, path in MODULES.items()
        if not _within(name, "chatbot.protocol")
        for line in _frame_literals(ast.parse(path.read_text(encoding="utf-8")), types)
    }
    assert not found


def test_only_the_protocol_uses_the_frame_encoder() -> None:
    low_level = {"encode_frame", "frame_fields"}
    found = set()
    for name, path in MODULES.items():
        if _within(name, "chatbot.protocol"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "chatbot.protocol"
            ):
                found |= {f"{name}:{a.name}" for a in node.names if a.name in low_level}
            elif isinstance(node, ast.Attribute) and node.attr in low_level:
                found.add(f"{name}:{node.attr}")
    assert not found


@pytest.mark.parametrize(
    "source",
    [
        'x = {"v": 1, "type": "ack", "seq": 3}',
        'send({"type": "status", "kind": "typing"})',
    ],
)
def test_the_frame_check_catches_hand_built_frames(source: str) -> None:
    assert _frame_literals(ast.parse(source), _wire_types())


# ---- the conversation service is no SQL executor ---------------------------------------

# ``ConversationService.run(fn)`` runs any function in a transaction on the database
# thread, ``.executor`` is that thread, and ``.write(conv, fn)`` runs a function that
# appends to a conversation's log under its lock, then publishes. Outside
# chatbot/conversations nobody calls them: a question or a write gets a named method on
# the service that owns the data (``ConversationService.find``, ``.shopper``,
# ``.expire_action``, ``TeamService.finish_login``, ``AsyncActionService.approve``, ...).
# ``run`` and ``executor`` are only handed, uncalled, to the narrow services below, whose
# methods are those named questions (one call each, on that thread); ``write`` to nobody.
RUNNER_HOLDERS = frozenset({"InboxService", "TeamService", "StoreLookup", "AsyncActionService"})
HANDED = frozenset({"run", "executor"})
NEVER_OUTSIDE = frozenset({"write"})


def _conversation_service_runs(tree: ast.AST) -> tuple[list[int], list[int]]:
    """Lines where the conversation service's ``run``, ``executor`` or ``write`` is used,
    split into (``run`` or ``executor`` handed to a narrow service, anything else). The
    service is ``<...>.conversations``, a name or attribute assigned from one, or a
    parameter annotated ``ConversationService``."""
    aliases: set[str] = set()

    def is_service(node: ast.expr) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "conversations") or (
            ast.unparse(node) in aliases
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (
                    zip(target.elts, node.value.elts, strict=False)
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                    else [(target, node.value)]
                )
                aliases |= {ast.unparse(t) for t, v in pairs if is_service(v)}
        elif isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None and (
            "ConversationService" in ast.unparse(node.annotation)
        ):
            aliases.add(node.arg if isinstance(node, ast.arg) else ast.unparse(node.target))
    handed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in RUNNER_HOLDERS:
            handed |= {id(a) for a in node.args}
    ok: list[int] = []
    bad: list[int] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and is_service(node.value)):
            continue
        if node.attr in HANDED:
            (ok if id(node) in handed else bad).append(node.lineno)
        elif node.attr in NEVER_OUTSIDE:
            bad.append(node.lineno)
    return ok, bad


@pytest.mark.parametrize(
    "source",
    [
        "async def f(self): await self.conversations.run(fn, 1)",
        "async def f(app): await app.conversations.run(fn)",
        "service = app.conversations\nservice.run(fn)",
        "app, service = self.app, self.app.conversations\nservice.run(fn)",
        "self.service = app.conversations\nself.service.run(fn)",
        "def f(s: ConversationService) -> None:\n    s.run(fn)",
        "runner = app.conversations.run",  # held for later, by no narrow service
        "Anything(app.conversations.run)",
        # The conversation's write with a function of the caller's:
        "async def f(self): await self.conversations.write(conv, self._expire, 1)",
        "def f(s: ConversationService) -> None:\n    s.write(conv, fn)",
        "AsyncActionService(app.conversations.write)",
        # The database thread used for the caller's own function:
        "loop.run_in_executor(self.conversations.executor, fn)",
        "def f(conversations: ConversationService) -> None:\n"
        "    loop.run_in_executor(conversations.executor, fn)",
    ],
)
def test_the_runner_check_catches_sql_run_through_the_service(source: str) -> None:
    assert _conversation_service_runs(ast.parse(source))[1]


@pytest.mark.parametrize(
    "source",
    [
        "InboxService(app.conversations.run, route)",
        "self.team = TeamService(self.app.conversations.run)",
        "def f(conversations: ConversationService) -> None:\n"
        "    AsyncActionService(ActionService(db), conversations.executor)",
        "await self.conversations.expire_action(conv, actions, 'a_1')",
        "fh.write(text)",
        "await self.conversations.find(1, 'c_1')",
        "await self.session.run([t])",
        "asyncio.run(main())",
    ],
)
def test_the_runner_check_lets_narrow_services_be(source: str) -> None:
    assert not _conversation_service_runs(ast.parse(source))[1]


def test_only_the_conversations_package_runs_functions_on_the_conversation_service() -> None:
    handed: set[str] = set()
    found: set[str] = set()
    for name, path in MODULES.items():
        if _within(name, "chatbot.conversations"):
            continue
        ok, bad = _conversation_service_runs(ast.parse(path.read_text(encoding="utf-8")))
        if ok:
            handed.add(name)
        found |= {f"{name}:{line}" for line in bad}
    assert not found
    # Not vacuous: the runner and the thread are seen where the server hands them to the
    # narrow services.
    assert {"chatbot.server.agent_services", "chatbot.server.chat_services",
            "chatbot.server.actions"} <= handed
