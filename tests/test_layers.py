"""The layer rules of DESIGN.md, checked on the imports of lib/ (parsed, not run).

Every lib module is classified in LAYERS; a new module (one split from another included)
fails `test_every_lib_module_is_classified` until it is given a layer here, so the rules
cover it from its first commit. Imports anywhere in a module count, function bodies too.
"""
import ast
import pathlib

import pytest

LIB = pathlib.Path(__file__).resolve().parent.parent / "lib"

LEAF = "leaf"          # imports nothing from lib
CORE = "core"          # the server's model: config, plans, the store, processes, the runtime
PROTOCOL = "protocol"  # the wire vocabulary of protocol V1
SERVER = "server"      # the server's edges: session API, terminal echo, its CLI
CLIENT = "client"      # the client tower: transport, model, TUI and its CLI
SHARED = "shared"      # used by both CLIs: the package version, flag parsing

LAYERS = {
    "entry": LEAF, "framing": LEAF, "jsonc": LEAF, "dotenv": LEAF, "shell_syntax": LEAF,
    "listening": LEAF,
    "__init__": SHARED, "flags": SHARED,
    "config": CORE, "plan": CORE, "logstore": CORE, "process": CORE, "probes": CORE,
    "port_holder": CORE, "readiness": CORE, "groups": CORE, "service_state": CORE,
    "summary": CORE, "reload": CORE, "runtime": CORE, "guardian": CORE,
    "protocol": PROTOCOL,
    "commands": SERVER, "session": SERVER, "echo": SERVER, "server_cli": SERVER,
    "transport": CLIENT, "log_feed": CLIENT, "ansi": CLIENT, "client": CLIENT, "tui_app": CLIENT,
    "tui_cli": CLIENT, "connect": CLIENT, "ctl": CLIENT,
}

# What a layer may not import: a layer name, or a module name.
FORBIDDEN = {
    LEAF: {"everything"},
    CORE: {PROTOCOL, SERVER, CLIENT, "framing"},
    PROTOCOL: {CORE, SERVER, CLIENT, SHARED},   # leaves only
    CLIENT: {"logstore", "runtime", "session", "echo"},
    SHARED: {CORE, PROTOCOL, SERVER, CLIENT},
    SERVER: {CLIENT},
}

def lib_modules():
    return sorted(path.stem for path in LIB.glob("*.py"))


def lib_imports(module, lib=LIB):
    """The lib modules that `module` imports (relative imports, and absolute `lib.` ones)."""
    tree = ast.parse((lib / f"{module}.py").read_text(), filename=f"lib/{module}.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:          # from . import x
                found.update(alias.name for alias in node.names)
            elif node.level == 1:                                 # from .x import y
                found.add(node.module.split(".")[0])
            elif node.module and node.module.split(".")[0] == "lib":
                found.add(node.module.split(".")[1] if "." in node.module else "__init__")
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("lib."))
    found.discard(module)
    return found


def breaks(module, lib=LIB):
    """The (module, imported) pairs of `module` that break its layer's rule."""
    forbidden = FORBIDDEN[LAYERS[module]]
    return {(module, name) for name in lib_imports(module, lib)
            if "everything" in forbidden or name in forbidden
            or LAYERS.get(name) in forbidden}


def test_every_lib_module_is_classified():
    unclassified = [m for m in lib_modules() if m not in LAYERS]
    assert not unclassified, f"give these lib modules a layer in LAYERS: {unclassified}"


@pytest.mark.parametrize("module", [m for m in lib_modules() if m in LAYERS])
def test_layer_rules(module):
    assert not breaks(module), f"lib/{module}.py ({LAYERS[module]}) breaks a layer rule"


def test_the_checker_sees_a_break(tmp_path):
    """The rules can fail: a core module importing the session (inside a function), a leaf
    importing anything, a client module importing the store."""
    (tmp_path / "plan.py").write_text("def f():\n    from .session import SessionServer\n")
    (tmp_path / "entry.py").write_text("from . import framing\n")
    (tmp_path / "tui_app.py").write_text("import lib.logstore\nfrom .protocol import encode\n")
    assert breaks("plan", tmp_path) == {("plan", "session")}
    assert breaks("entry", tmp_path) == {("entry", "framing")}
    assert breaks("tui_app", tmp_path) == {("tui_app", "logstore")}
