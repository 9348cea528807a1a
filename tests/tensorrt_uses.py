"""Every TensorRT name the project's code uses, collected from the code itself (an AST walk).

A *use* is an attribute chain rooted at the ``tensorrt`` module: ``trt.Logger.ERROR``,
``trt.Runtime(1 arg).deserialize_cuda_engine(1 arg).create_execution_context()``, with each call's
positional-argument count and keyword names, where the code makes it. The conformance test
(``tests/test_tensorrt_api.py``) resolves each chain in the genuine bindings of a TensorRT version,
step by step, following the return types of pybind11's signatures.

How values are typed (a modest, flow-insensitive propagation over the whole code base, repeated
until nothing changes):

- roots: ``X = lazy_import("tensorrt")``, ``import tensorrt [as X]``, ``from tensorrt import Y [as X]``
  (also inside functions);
- a name or ``self.<attr>`` assigned from a typed expression takes its type (``self.<attr>`` per
  class, so ``self.engine`` typed in ``__init__`` is typed in every method; an instance of a project
  class, ``x = Execution(...)`` or ``self.execution = ...``, carries its class's attributes);
- a project function whose ``return`` is typed returns that type, also across modules
  (``trt = trt_runtime.require_tensorrt()`` in a benchmark is the module);
- a parameter takes the type of the argument a call site passes it (``execute(self.context, ...)``
  types ``execute``'s ``context``), by position or keyword;
- ``getattr(x, "name"[, default])`` and ``hasattr(x, "name")`` on a typed ``x`` are uses of
  ``x.name`` marked *guarded*: the code looks them up, so they may be missing in a version (the
  test reports them per version instead of failing), and so is everything reached from them.

Not followed: subscripts, iteration, tuple unpacking, containers, values passed through
third-party code (Polygraphy's loaders take and return TensorRT objects the test cannot see).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TENSORRT = "tensorrt"


@dataclass(frozen=True)
class Chain:
    """A TensorRT-rooted value: steps from the module, ``("attr", name)`` or ``("call", nargs,
    keywords)`` (nargs None where ``*args`` / ``**kwargs`` hide the count), and whether a
    ``getattr``/``hasattr`` guard lies on the way."""

    steps: tuple = ()
    guarded: bool = False

    def attr(self, name: str, guarded: bool = False) -> Chain:
        return Chain((*self.steps, ("attr", name)), self.guarded or guarded)

    def call(self, node: ast.Call) -> Chain:
        starred = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        count = None if starred else len(node.args)
        return Chain((*self.steps, ("call", count, tuple(sorted(k.arg for k in node.keywords if k.arg)) if not starred else ())), self.guarded)


@dataclass(frozen=True)
class Instance:
    """An instance of a project class (``module_key:ClassName``), whose attributes are typed."""

    cls: str


@dataclass(frozen=True)
class Use:
    chain: Chain
    where: str  # "path:line"
    store: bool = False  # an assignment to the last attribute (it must be settable)


class _Module:
    """One source file: its name in the package, its AST, what its imports bind."""

    def __init__(self, path: Path, root: Path):
        self.path = path
        self.rel = str(path.relative_to(root))
        self.tree = ast.parse(path.read_text(), filename=str(path))
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        self.dotted = ".".join(parts)
        self.bare = parts[-1] if parts else ""  # benchmarks import each other as top-level modules
        self.functions = {n.name: n for n in self.tree.body if isinstance(n, ast.FunctionDef)}
        self.classes = {n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)}


class Collector:
    """Runs the propagation over ``files`` (see the module docstring) and lists the uses."""

    def __init__(self, files: Iterable[Path], root: Path):
        self.modules = [_Module(p, root) for p in sorted(files)]
        self.by_dotted = {m.dotted: m for m in self.modules}
        self.by_bare = {m.bare: m for m in self.modules if not m.dotted.startswith("swin_trt")}
        self.returns: dict[tuple[str, str], object] = {}  # (module, function or Class.method) -> type
        self.params: dict[tuple[str, str, str], object] = {}  # (module, function, parameter) -> type
        self.attributes: dict[tuple[str, str], object] = {}  # (module:Class, attribute) -> type
        self.uses: set[Use] = set()
        self.changed = False

    # -- the fixpoint
    def run(self) -> list[Use]:
        for _ in range(20):
            self.changed = False
            for module in self.modules:
                _Walker(self, module).visit_module()
            if not self.changed:
                break
        return sorted(self.uses, key=lambda u: (u.where, u.chain.steps))

    def learn(self, table: dict, key, value) -> None:
        """First type wins (a parameter passed different things keeps one): the fixpoint is monotone."""
        if value is not None and key not in table:
            table[key] = value
            self.changed = True

    def project_module(self, name: str) -> _Module | None:
        return self.by_dotted.get(name) or self.by_bare.get(name)


class _Walker:
    """One pass over one module: binds names, types expressions, records uses."""

    def __init__(self, collector: Collector, module: _Module):
        self.c, self.m = collector, module
        self.globals: dict[str, object] = {}
        self.imports: dict[str, tuple[str, str | None]] = {}  # local name -> (project module, member or None)

    def visit_module(self) -> None:
        self.bind_imports(self.m.tree.body, self.globals)
        for node in self.m.tree.body:
            if isinstance(node, ast.Assign):
                value = self.type_of(node.value, self.globals, None)
                for target in node.targets:
                    if isinstance(target, ast.Name) and value is not None:
                        self.globals[target.id] = value
        for node in self.m.tree.body:
            if isinstance(node, ast.FunctionDef):
                self.visit_function(node, node.name, None)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        self.visit_function(item, f"{node.name}.{item.name}", node.name)
            else:
                self.visit_statements([node], self.globals, None, None)

    def bind_imports(self, body: list[ast.stmt], env: dict) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == TENSORRT:
                        env[alias.asname or alias.name] = Chain()
                    elif self.c.project_module(alias.name) and alias.asname:
                        self.imports[alias.asname] = (alias.name, None)
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    local = alias.asname or alias.name
                    if node.module == TENSORRT:
                        env[local] = Chain().attr(alias.name)
                    elif self.c.project_module(f"{node.module}.{alias.name}"):
                        self.imports[local] = (f"{node.module}.{alias.name}", None)
                    elif self.c.project_module(node.module):
                        self.imports[local] = (node.module, alias.name)

    def visit_function(self, node: ast.FunctionDef, qualname: str, cls: str | None, enclosing: dict | None = None) -> None:
        env = dict(self.globals if enclosing is None else enclosing)
        self.bind_imports(list(ast.walk(node)), env)
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
            known = self.c.params.get((self.m.dotted, qualname, arg.arg))
            if known is not None:
                env[arg.arg] = known
        self.visit_statements(node.body, env, qualname, cls)

    def visit_statements(self, body: list[ast.stmt], env: dict, qualname: str | None, cls: str | None) -> None:
        for statement in body:
            for node in _in_order(statement):
                if isinstance(node, ast.FunctionDef):  # nested: a closure sees the enclosing names
                    self.visit_function(node, f"{qualname}.{node.name}" if qualname else node.name, cls, env)
                    continue
                if isinstance(node, ast.Assign):
                    value = self.type_of(node.value, env, cls)
                    for target in node.targets:
                        self.assign(target, value, env, cls)
                elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                    self.assign(node.target, self.type_of(node.value, env, cls), env, cls)
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    self.assign(node.optional_vars, self.type_of(node.context_expr, env, cls), env, cls)
                elif isinstance(node, ast.Return) and node.value is not None and qualname:
                    self.c.learn(self.c.returns, (self.m.dotted, qualname), self.type_of(node.value, env, cls))
                if isinstance(node, ast.expr):
                    self.record(node, env, cls)

    def assign(self, target: ast.expr, value, env: dict, cls: str | None) -> None:
        if isinstance(target, ast.Name):
            if value is not None:
                env[target.id] = value
        elif isinstance(target, ast.Attribute):
            owner = self.type_of(target.value, env, cls)
            if isinstance(owner, Chain):
                self.c.uses.add(Use(owner.attr(target.attr), f"{self.m.rel}:{target.lineno}", store=True))
            elif isinstance(target.value, ast.Name) and target.value.id == "self" and cls:
                self.c.learn(self.c.attributes, (f"{self.m.dotted}:{cls}", target.attr), value)

    def record(self, node: ast.expr, env: dict, cls: str | None) -> None:
        """A typed attribute or call is a use (its prefixes are checked along with it)."""
        if isinstance(node, (ast.Attribute, ast.Call)) and not (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)):
            value = self.type_of(node, env, cls)
            if isinstance(value, Chain) and value.steps:
                self.c.uses.add(Use(value, f"{self.m.rel}:{node.lineno}"))

    # -- types of expressions
    def type_of(self, node: ast.expr, env: dict, cls: str | None):
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id in self.m.classes:
                return ("class", f"{self.m.dotted}:{node.id}")
            return None
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and cls:
                return self.c.attributes.get((f"{self.m.dotted}:{cls}", node.attr))
            owner = self.type_of(node.value, env, cls)
            if isinstance(owner, Chain):
                return owner.attr(node.attr)
            if isinstance(owner, Instance):
                return self.c.attributes.get((owner.cls, node.attr))
            if isinstance(node.value, ast.Name) and node.value.id in self.imports:
                module, member = self.imports[node.value.id]
                if member is None:
                    target = self.c.project_module(module)
                    if target is not None:
                        return ("member", target.dotted, node.attr)
            return None
        if isinstance(node, ast.Call):
            return self.type_of_call(node, env, cls)
        return None

    def type_of_call(self, node: ast.Call, env: dict, cls: str | None):
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) >= 2:
            owner = self.type_of(node.args[0], env, cls)
            name = node.args[1]
            if isinstance(owner, Chain) and isinstance(name, ast.Constant) and isinstance(name.value, str):
                guarded = func.id == "hasattr" or len(node.args) == 3
                chain = owner.attr(name.value, guarded=guarded)
                self.c.uses.add(Use(chain, f"{self.m.rel}:{node.lineno}"))
                return chain if func.id == "getattr" else None
            return None
        if isinstance(func, ast.Name) and func.id == "lazy_import" and node.args and isinstance(node.args[0], ast.Constant):
            if node.args[0].value == TENSORRT:
                return Chain()
            return None
        callee = self.type_of(func, env, cls)
        if isinstance(callee, Chain):
            return callee.call(node)
        target = self.resolve_function(func, callee, env, cls)
        if target is None:
            return None
        module, qualname = target
        if isinstance(qualname, tuple):  # a project class: its __init__ gets the arguments
            self.pass_arguments(node, module, f"{qualname[0]}.__init__", env, cls, skip_self=True)
            return Instance(f"{module}:{qualname[0]}")
        self.pass_arguments(node, module, qualname, env, cls, skip_self="." in qualname)
        return self.c.returns.get((module, qualname))

    def resolve_function(self, func: ast.expr, callee, env: dict, cls: str | None):
        """(module, qualname) of a project function called here, or (module, (Class,)) for a class."""
        if isinstance(callee, tuple) and callee[0] == "class":
            module, name = callee[1].split(":")
            return module, (name,)
        if isinstance(callee, tuple) and callee[0] == "member":
            _, module, name = callee
            target = self.c.by_dotted[module]
            if name in target.classes:
                return module, (name,)
            return (module, name) if name in target.functions else None
        if isinstance(func, ast.Name):
            if func.id in self.m.functions:
                return self.m.dotted, func.id
            if func.id in self.imports:
                module, member = self.imports[func.id]
                target = self.c.project_module(module)
                if target is not None and member in target.functions:
                    return target.dotted, member
                if target is not None and member in target.classes:
                    return target.dotted, (member,)
            return None
        if isinstance(func, ast.Attribute):
            owner = None
            if isinstance(func.value, ast.Name) and func.value.id == "self" and cls:
                owner = f"{self.m.dotted}:{cls}"
            else:
                value = self.type_of(func.value, env, cls)
                owner = value.cls if isinstance(value, Instance) else None
            if owner:
                module, name = owner.split(":")
                return module, f"{name}.{func.attr}"
        return None

    def pass_arguments(self, node: ast.Call, module: str, qualname: str, env: dict, cls: str | None, skip_self: bool) -> None:
        target = self.c.by_dotted.get(module)
        definition = _find_function(target, qualname) if target else None
        if definition is None:
            return
        names = [a.arg for a in [*definition.args.posonlyargs, *definition.args.args]][1 if skip_self else 0:]
        for name, argument in zip(names, node.args):
            if not isinstance(argument, ast.Starred):
                self.c.learn(self.c.params, (module, qualname, name), self.type_of(argument, env, cls))
        for keyword in node.keywords:
            if keyword.arg:
                self.c.learn(self.c.params, (module, qualname, keyword.arg), self.type_of(keyword.value, env, cls))


def _find_function(module: _Module, qualname: str) -> ast.FunctionDef | None:
    head, _, tail = qualname.partition(".")
    if not tail:
        return module.functions.get(head)
    owner = module.classes.get(head)
    return next((n for n in owner.body if isinstance(n, ast.FunctionDef) and n.name == tail), None) if owner else None


def _in_order(node: ast.AST):
    """The statement's nodes, outer before inner, in source order (assignments before the uses
    below them); a function is yielded but not entered (it is walked with its own scope)."""
    yield node
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return
    for child in ast.iter_child_nodes(node):
        yield from _in_order(child)


def collect(root: Path, folders: tuple[str, ...] = ("swin_trt", "benchmarks")) -> list[Use]:
    """The TensorRT uses of every ``.py`` file under ``root``'s ``folders``."""
    files = [p for folder in folders for p in (root / folder).rglob("*.py")]
    return Collector(files, root).run()
