"""TensorRT API conformance: every TensorRT name s3rt's code can reach, checked against one
TensorRT version's real Python bindings (imported with stub native libraries, see setup.sh and
../shared/reference/tensorrt_api_notes.md) or, weaker, against a member-list dump.

The names are found by reading the code (ast), not from a hand-kept list:
- the TensorRT module is any name bound by `import tensorrt [as X]`, `X = import_tensorrt()`,
  a parameter or attribute called `trt` (s3rt's convention);
- values get a TensorRT type from constructors (`trt.Builder(logger)` -> Builder), from the
  return type on the first line of a method's docstring (`create_network(...) ->
  INetworkDefinition`), from property getters' docstrings, from `self.x = ...` in a class, and
  from annotations `name: "trt.IExecutionContext"`;
- every attribute on a typed value must exist in that version (enum members, classes,
  methods, properties); every call of a method or constructor must fit one of its docstring
  signatures (positional count, keyword names, required parameters); every attribute assigned
  must be a writable property;
- version gates `if major >= 11:` / `if major < 11:` (a name or attribute `major` compared with
  an int) and `if version < (10, 9):` (a name or attribute `version` compared with a tuple of
  ints: (major, minor)) are evaluated for the version checked, so a branch is checked only
  against the versions it runs on.

Usage: python api_check.py [--dump FILE.json] [--major N] [--verbose] [--json] PATH... [:: PATH...]
(without --dump it imports `tensorrt_bindings`; `::` separates groups of paths checked as separate
reports, printed as one JSON list with --json; exit status 1 when anything is wrong).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import operator
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

MODULE = ("module",)
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq,
        ast.NotEq: operator.ne}


def _common_names() -> set[str]:
    names = set()
    import io

    for obj in (dict, list, str, bytes, tuple, set, int, float, object, Path, argparse.Namespace, io.IOBase,
                io.TextIOWrapper, io.BufferedWriter):
        names |= set(dir(obj))
    try:
        import torch

        for obj in (torch.Tensor, torch.nn.Module, torch.device, torch.dtype, torch.Size):
            names |= set(dir(obj))
        names |= set(dir(torch.cuda.Stream)) | set(dir(torch.cuda.CUDAGraph)) | set(dir(torch.cuda))
    except ImportError:
        pass
    # names of s3rt's own objects that TensorRT classes happen to share
    names |= {"name", "shape", "dtype", "inputs", "outputs", "profile", "engines", "contexts", "version", "major",
              "directory", "options", "spec", "describe", "run", "build", "reset", "location", "type", "mode", "data",
              "logger", "runtime", "builder", "num_objects", "scale", "axes", "kind", "flags", "values", "weights"}
    return names


_COMMON = _common_names()


class Missing(Exception):
    """A name that does not exist in the version checked."""


# ----------------------------------------------------------------------------- signatures
def _split_params(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


@dataclass
class Signature:
    params: list[tuple[str, bool]]  # (name, has default), self excluded
    varargs: bool
    returns: str

    def accepts(self, npos: int, keywords: list[str]) -> str | None:
        """None when a call with npos positional arguments and these keywords fits; else why not."""
        if self.varargs:
            return None
        names = [p for p, _ in self.params]
        if npos > len(names):
            return f"takes at most {len(names)} argument(s) ({', '.join(names) or 'none'}), given {npos}"
        for k in keywords:
            if k not in names:
                return f"has no parameter {k!r} (parameters: {', '.join(names) or 'none'})"
            if names.index(k) < npos:
                return f"gets {k!r} twice"
        missing = [p for i, (p, has_default) in enumerate(self.params)
                   if i >= npos and not has_default and p not in keywords]
        if missing:
            return f"is missing required argument(s) {', '.join(missing)}"
        return None


_SIG = re.compile(r"^(?:\d+\.\s*)?([A-Za-z_][A-Za-z0-9_]*)\((.*)\)\s*(?:->\s*(.+))?$")


def parse_signatures(doc: str | None, name: str) -> list[Signature]:
    """pybind11 docstring signatures: the first line, or the numbered overloads below
    `name(*args, **kwargs)`."""
    if not doc:
        return []
    sigs = []
    for line in doc.splitlines():
        m = _SIG.match(line.strip())
        if not m or m.group(1) != name:
            continue
        params_text = m.group(2)
        if params_text.strip() == "*args, **kwargs":
            continue  # the overload header
        params, varargs = [], False
        for p in _split_params(params_text):
            pname = p.split(":")[0].split("=")[0].strip()
            if pname.startswith("*"):
                varargs = True
                continue
            if pname == "self":
                continue
            params.append((pname, "=" in p))
        sigs.append(Signature(params, varargs, (m.group(3) or "").strip()))
    return sigs


def _return_class_name(ret: str) -> str | None:
    m = re.fullmatch(r"(?:tensorrt_bindings\.)?tensorrt\.([A-Za-z_][A-Za-z0-9_.]*)", ret.strip())
    return m.group(1) if m else None


# --------------------------------------------------------------------------- the API sources
class RealAPI:
    """The imported bindings."""

    def __init__(self, module):
        self.m = module
        self.version = module.__version__
        self.members = {n for c in vars(module).values() if isinstance(c, type) for n in dir(c)
                        if not n.startswith("_")}

    def label(self, t) -> str:
        return getattr(t[1], "__qualname__", str(t[1]))

    def _classify(self, value):
        if isinstance(value, type):
            return ("class", value)
        if callable(value) and not isinstance(value, type):
            return ("func", value)
        if type(value).__module__.startswith("tensorrt"):
            return ("obj", type(value))
        return None

    def module_attr(self, name):
        if not hasattr(self.m, name):
            raise Missing(f"tensorrt.{name}")
        return self._classify(getattr(self.m, name))

    def class_attr(self, cls, name):
        if not hasattr(cls, name):
            raise Missing(f"{cls.__qualname__}.{name}")
        static = inspect.getattr_static(cls, name)
        if isinstance(static, property):
            return None
        value = getattr(cls, name)
        if isinstance(value, type):
            return ("class", value)
        if callable(value):
            return ("smethod", cls, name) if isinstance(static, staticmethod) else None
        return self._classify(value)

    def obj_attr(self, cls, name):
        if not hasattr(cls, name):
            raise Missing(f"{cls.__qualname__}.{name}")
        static = inspect.getattr_static(cls, name)
        if isinstance(static, property):
            return self._from_return(self._getter_return(static))
        value = getattr(cls, name)
        if isinstance(value, type):
            return ("class", value)
        if callable(value):
            return ("method", cls, name)
        return self._classify(value)

    def writable(self, cls, name) -> str | None:
        if not hasattr(cls, name):
            return f"{cls.__qualname__} has no attribute {name}"
        static = inspect.getattr_static(cls, name)
        if not isinstance(static, property):
            return f"{cls.__qualname__}.{name} is not a property (cannot be assigned)"
        if static.fset is None:
            return f"{cls.__qualname__}.{name} is read-only"
        return None

    @staticmethod
    def _getter_return(prop) -> str:
        doc = (prop.fget.__doc__ or "") if prop.fget else ""
        m = re.match(r"^\s*\(.*\)\s*->\s*(.+)$", doc.splitlines()[0] if doc else "")
        return m.group(1).strip() if m else ""

    def _from_return(self, ret: str):
        name = _return_class_name(ret) if ret else None
        if not name:
            return None
        obj = self.m
        for part in name.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return ("obj", obj) if isinstance(obj, type) else None

    def signatures(self, kind):
        if kind[0] == "class":
            return parse_signatures(kind[1].__init__.__doc__, "__init__")
        if kind[0] in ("method", "smethod"):
            return parse_signatures(getattr(kind[1], kind[2]).__doc__, kind[2])
        if kind[0] == "func":
            return parse_signatures(kind[1].__doc__, getattr(kind[1], "__name__", ""))
        return []

    def call_result(self, kind, sig: Signature | None):
        if kind[0] == "class":
            return ("obj", kind[1])
        return self._from_return(sig.returns) if sig else None


class DumpAPI:
    """A member-list dump (name -> members): names only, no signatures or return types."""

    def __init__(self, data: dict, version: str):
        self.d = data
        self.version = version
        self.members = set()  # no return types here, so calls on unknown receivers are not reported

    def label(self, t) -> str:
        return str(t[1])

    def module_attr(self, name):
        if name.startswith("__") and name.endswith("__"):
            return None  # dunders (__version__) are not in the dumps
        if name not in self.d:
            raise Missing(f"tensorrt.{name}")
        return ("class", name) if isinstance(self.d[name], list) and name[:1].isupper() else None

    def class_attr(self, cls, name):
        if cls in self.d and name not in self.d[cls]:
            raise Missing(f"{cls}.{name}")
        return None

    obj_attr = class_attr

    def writable(self, cls, name):
        if cls in self.d and name not in self.d[cls]:
            return f"{cls} has no attribute {name}"
        return None

    def signatures(self, kind):
        return []

    def call_result(self, kind, sig):
        return ("obj", kind[1]) if kind[0] == "class" else None


# ------------------------------------------------------------------------------- the walk
@dataclass
class Report:
    version: str
    errors: list[str] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)  # "Class.attr" / "tensorrt.Name" / "Class.method()"
    untyped: list[str] = field(default_factory=list)  # TensorRT-only names the check could not type
    files: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.errors and not self.untyped


class Checker:
    def __init__(self, api, major, report: Report):
        """major: the major version, or (major, minor) for `version` gates too."""
        self.api = api
        self.version = tuple(major) if isinstance(major, (tuple, list)) else None
        self.major = self.version[0] if self.version else major
        self.r = report
        self.where = ""

    # ---- gates ---------------------------------------------------------------------------
    def gate(self, test) -> bool | None:
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.comparators[0], ast.Constant):
            left = test.left
            is_major = (isinstance(left, ast.Name) and left.id == "major") or \
                       (isinstance(left, ast.Attribute) and left.attr == "major")
            value = test.comparators[0].value
            if is_major and isinstance(value, int) and type(test.ops[0]) in _CMP:
                return _CMP[type(test.ops[0])](self.major, value)
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.comparators[0], ast.Tuple):
            left = test.left
            is_version = (isinstance(left, ast.Name) and left.id == "version") or \
                         (isinstance(left, ast.Attribute) and left.attr == "version")
            elts = test.comparators[0].elts
            if is_version and self.version and all(isinstance(e, ast.Constant) and isinstance(e.value, int)
                                                   for e in elts) and type(test.ops[0]) in _CMP:
                value = tuple(e.value for e in elts)
                return _CMP[type(test.ops[0])](self.version[:len(value)], value)
        if isinstance(test, ast.BoolOp):
            vals = [self.gate(v) for v in test.values]
            if isinstance(test.op, ast.And):
                return False if False in vals else (True if all(v is True for v in vals) else None)
            return True if True in vals else (False if all(v is False for v in vals) else None)
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            v = self.gate(test.operand)
            return None if v is None else not v
        return None

    def distinctive(self, name: str) -> bool:
        """A member of some TensorRT class that no common Python or PyTorch object has."""
        return name in getattr(self.api, "members", ()) and name not in _COMMON

    # ---- errors ----------------------------------------------------------------------------
    def err(self, node, msg):
        self.r.errors.append(f"{self.where}:{getattr(node, 'lineno', '?')}: {msg} (TensorRT {self.api.version})")

    # ---- expressions -----------------------------------------------------------------------
    def typeof(self, node, env):
        if node is None:
            return None
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.typeof(node.value, env)
            return self.attr(node, base, node.attr)
        if isinstance(node, ast.Call):
            kind = self.typeof(node.func, env)
            f = node.func
            if kind is None and isinstance(f, ast.Attribute) and self.distinctive(f.attr) \
                    and self.typeof(f.value, env) is None:
                msg = (f"{self.where}:{node.lineno}: {ast.unparse(f)}(): a TensorRT method called on a value of "
                       "unknown type; bind TensorRT objects to plain names or annotate them "
                       "(x: \"trt.IExecutionContext\" = ...) so that the check reaches the call")
                if msg not in self.r.untyped:
                    self.r.untyped.append(msg)
            for a in node.args:
                self.typeof(a.value if isinstance(a, ast.Starred) else a, env)
            for k in node.keywords:
                self.typeof(k.value, env)
            if isinstance(node.func, ast.Name) and node.func.id == "import_tensorrt":
                return MODULE
            if kind and kind[0] in ("class", "method", "smethod", "func"):
                return self.call(node, kind)
            return None
        if isinstance(node, ast.IfExp):
            g = self.gate(node.test)
            self.typeof(node.test, env)
            if g is None:
                a, b = self.typeof(node.body, env), self.typeof(node.orelse, env)
                return a if a == b else None
            return self.typeof(node.body if g else node.orelse, env)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = dict(env)
            for gen in node.generators:
                self.typeof(gen.iter, inner)
                for t in ast.walk(gen.target):
                    if isinstance(t, ast.Name):
                        inner[t.id] = None
                for cond in gen.ifs:
                    self.typeof(cond, inner)
            if isinstance(node, ast.DictComp):
                self.typeof(node.key, inner)
                self.typeof(node.value, inner)
            else:
                self.typeof(node.elt, inner)
            return None
        if isinstance(node, ast.Lambda):
            return None
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.typeof(child, env)
            elif isinstance(child, ast.keyword):
                self.typeof(child.value, env)
        return None

    def attr(self, node, base, name):
        if base is None:
            return None
        try:
            if base == MODULE:
                self.r.checked.add(f"tensorrt.{name}")
                return self.api.module_attr(name)
            if base[0] == "class":
                self.r.checked.add(f"{self.api.label(base)}.{name}")
                return self.api.class_attr(base[1], name)
            if base[0] == "obj":
                self.r.checked.add(f"{self.api.label(base)}.{name}")
                return self.api.obj_attr(base[1], name)
        except Missing as e:
            self.err(node, f"{ast.unparse(node)}: {e} does not exist")
            return None
        return None

    def call(self, node, kind):
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return self.api.call_result(kind, None)
        sigs = self.api.signatures(kind)
        label = f"{self.api.label(kind)}" + (f".{kind[2]}()" if kind[0] in ("method", "smethod") else "()")
        self.r.checked.add(label)
        if not sigs:
            return self.api.call_result(kind, None)
        npos, kws = len(node.args), [k.arg for k in node.keywords]
        why = [s.accepts(npos, kws) for s in sigs]
        if all(w is not None for w in why):
            self.err(node, f"{ast.unparse(node)}: {label} {why[0]}")
            return None
        fit = sigs[why.index(None)]
        return self.api.call_result(kind, fit)

    # ---- statements ------------------------------------------------------------------------
    def annotation_type(self, ann):
        if ann is None:
            return None
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(ann, ast.Attribute) and isinstance(ann.value, ast.Name) and ann.value.id in ("trt", "tensorrt"):
            t = self.attr(ann, MODULE, ann.attr)
            return ("obj", t[1]) if t and t[0] == "class" else None
        return None

    def body(self, stmts, env, selfattrs):
        for s in stmts:
            self.stmt(s, env, selfattrs)

    def assign_target(self, target, value_type, env, selfattrs):
        if isinstance(target, ast.Name):
            env[target.id] = value_type
        elif isinstance(target, ast.Attribute):
            base_node = target.value
            if isinstance(base_node, ast.Name) and base_node.id == "self":
                if value_type is not None:
                    selfattrs[target.attr] = value_type
                return
            base = self.typeof(base_node, env)
            if base is not None and base[0] == "obj":
                self.r.checked.add(f"{self.api.label(base)}.{target.attr} =")
                why = self.api.writable(base[1], target.attr)
                if why:
                    self.err(target, f"{ast.unparse(target)} = ...: {why}")
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self.assign_target(t, None, env, selfattrs)
        else:
            self.typeof(target, env)

    def stmt(self, s, env, selfattrs):
        if isinstance(s, ast.Assign):
            t = self.typeof(s.value, env)
            for target in s.targets:
                self.assign_target(target, t, env, selfattrs)
        elif isinstance(s, ast.AnnAssign):
            t = self.typeof(s.value, env) if s.value is not None else None
            ann = self.annotation_type(s.annotation)
            self.assign_target(s.target, ann or t, env, selfattrs)
        elif isinstance(s, ast.AugAssign):
            self.typeof(s.value, env)
            self.typeof(s.target, env)
        elif isinstance(s, ast.If):
            g = self.gate(s.test)
            self.typeof(s.test, env)
            if g is not False:
                self.body(s.body, env, selfattrs)
            if g is not True:
                self.body(s.orelse, env, selfattrs)
        elif isinstance(s, (ast.For, ast.AsyncFor)):
            self.typeof(s.iter, env)
            self.assign_target(s.target, None, env, selfattrs)
            self.body(s.body, env, selfattrs)
            self.body(s.orelse, env, selfattrs)
        elif isinstance(s, ast.While):
            self.typeof(s.test, env)
            self.body(s.body, env, selfattrs)
            self.body(s.orelse, env, selfattrs)
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            for item in s.items:
                t = self.typeof(item.context_expr, env)
                if item.optional_vars is not None:
                    self.assign_target(item.optional_vars, t, env, selfattrs)
            self.body(s.body, env, selfattrs)
        elif isinstance(s, ast.Try) or type(s).__name__ == "TryStar":
            self.body(s.body, env, selfattrs)
            for h in s.handlers:
                if h.name:
                    env[h.name] = None
                self.body(h.body, env, selfattrs)
            self.body(s.orelse, env, selfattrs)
            self.body(s.finalbody, env, selfattrs)
        elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.function(s, env, selfattrs=None)
        elif isinstance(s, ast.ClassDef):
            self.klass(s, env)
        elif isinstance(s, (ast.Import, ast.ImportFrom)):
            for a in s.names:
                if isinstance(s, ast.Import) and a.name in ("tensorrt", "tensorrt_bindings"):
                    env[a.asname or a.name] = MODULE
        else:
            for child in ast.iter_child_nodes(s):
                if isinstance(child, ast.expr):
                    self.typeof(child, env)

    def function(self, fn, outer_env, selfattrs, self_type=None):
        env = dict(outer_env)
        args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
        for i, a in enumerate(args):
            if a.arg == "trt":
                env[a.arg] = MODULE
            elif a.arg == "self" and i == 0 and self_type is not None:
                env[a.arg] = self_type
            else:
                env[a.arg] = self.annotation_type(a.annotation)
        for d in fn.args.defaults + [d for d in fn.args.kw_defaults if d is not None]:
            self.typeof(d, outer_env)
        self.body(fn.body, env, selfattrs if selfattrs is not None else {})

    def klass(self, cls, env):
        attrs: dict = {}
        methods = [m for m in cls.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
        # pass 1 (findings discarded): what each self.<attr> holds
        saved, self.r.errors = self.r.errors, []
        saved_untyped, self.r.untyped = self.r.untyped, []
        saved_checked = set(self.r.checked)
        for _ in range(2):
            for m in methods:
                self.function(m, env, attrs, self_type=("self", attrs))
        self.r.errors, self.r.checked, self.r.untyped = saved, saved_checked, saved_untyped
        for m in methods:
            self.function(m, env, attrs, self_type=("self", attrs))
        for s in cls.body:
            if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.stmt(s, env, attrs)

    def module(self, path: Path):
        self.where = str(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        self.body(tree.body, {"trt": MODULE}, {})


# `self.x`: the class's recorded attribute types (a tiny extension of Checker.attr)
_orig_attr = Checker.attr


def _attr(self, node, base, name):
    if base is not None and base[0] == "self":
        if name == "trt":
            return MODULE
        return base[1].get(name)
    return _orig_attr(self, node, base, name)


Checker.attr = _attr


def uses_tensorrt(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    return bool(re.search(r"\btrt\b|import tensorrt|import_tensorrt", text))


def source_files(roots) -> list[Path]:
    files = []
    for root in roots:
        root = Path(root)
        for p in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            if uses_tensorrt(p):
                files.append(p)
    return files


def check(paths, api, major: int) -> Report:
    report = Report(version=api.version)
    for p in source_files(paths):
        report.files.append(str(p))
        Checker(api, major, report).module(p)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--dump", help="a member-list JSON instead of the imported bindings")
    ap.add_argument("--major", type=int, help="the major version for the gates (default: the API's)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.dump:
        version = re.search(r"(\d+\.\d+[\d.]*)\.json$", args.dump).group(1)
        api = DumpAPI(json.loads(Path(args.dump).read_text()), version)
    else:
        import tensorrt_bindings

        api = RealAPI(tensorrt_bindings)
    parts = [int(x) for x in re.findall(r"\d+", api.version)[:2]]
    major = (args.major, 0) if args.major else tuple(parts)
    groups, cur = [], []
    for p in args.paths:
        if p == "::":
            groups.append(cur)
            cur = []
        else:
            cur.append(p)
    groups.append(cur)
    reports = [check(g, api, major) for g in groups]
    if args.json:
        print(json.dumps([{"version": r.version, "errors": r.errors, "checked": sorted(r.checked),
                           "untyped": r.untyped, "files": r.files} for r in reports]))
        return 0 if all(r.ok() for r in reports) else 1
    for report in reports:
        for e in report.errors + report.untyped:
            print(e)
        print(f"TensorRT {report.version}: {len(report.checked)} names checked in {len(report.files)} files, "
              f"{len(report.errors)} problems, {len(report.untyped)} unreachable")
        if args.verbose:
            print("\n".join(sorted(report.checked)))
    return 0 if all(r.ok() for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
