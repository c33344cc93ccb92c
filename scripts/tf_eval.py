#!/usr/bin/env python3
"""A plan-free evaluator of the Terraform under infra/, for checks that need values, not text.

`terraform plan` needs the provider and a project; these checks need neither. The evaluator
parses every .tf file with python-hcl2 (its lark parse tree), and evaluates the configuration
for a set of input variables the way Terraform would at plan time: variables (type conversion
with `optional()` defaults, validations), locals, module calls, `count` and `for_each`
expansion, `dynamic` blocks, preconditions and the built-in functions the configuration uses.
Values only the provider or Google know (a service's generated URL, a secret version) are
`UNKNOWN`, and propagate as in a plan; a few computed attributes whose value Google documents
(a service account's email and member, a topic's id, a custom role's id) are derived.

It covers the subset of the language infra/ is written in and raises `EvalError` on anything
else, so a construct it does not know fails loudly instead of evaluating wrongly.

Used by scripts/infra_tests.py and scripts/permissions_contract.py.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import hcl2
from lark import Token, Tree


class EvalError(Exception):
    """The configuration uses something this evaluator does not know, or is wrong."""


class _Unknown:
    """A value known only after apply."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


def is_unknown(v: Any) -> bool:
    if v is UNKNOWN:
        return True
    if isinstance(v, list):
        return any(is_unknown(x) for x in v)
    if isinstance(v, dict):
        return any(is_unknown(x) for x in v.values())
    return False


# ---------------------------------------------------------------------------------------------
# Parse trees


def rule(t) -> str:
    return str(t.data) if isinstance(t, Tree) else ""


def subtrees(t: Tree) -> list[Tree]:
    return [c for c in t.children if isinstance(c, Tree) and rule(c) != "new_line_or_comment"]


def name_of(t) -> str:
    """An identifier, keyword or string label as text."""
    if isinstance(t, Token):
        return str(t)
    r = rule(t)
    if r in ("identifier", "keyword", "literal_value"):
        return str(t.children[0])
    if r == "string":
        return "".join(str(p.children[0]) for p in t.children if rule(p) == "string_part")
    if r == "expr_term":
        return name_of(subtrees(t)[0])
    raise EvalError(f"not a name: {rule(t)}")


@dataclass
class Block:
    type: str
    labels: list[str]
    attributes: dict[str, Tree]
    blocks: list["Block"]
    file: str = ""

    def blocks_of(self, type_: str) -> list["Block"]:
        return [b for b in self.blocks if b.type == type_]


def read_body(body: Tree, file: str) -> tuple[dict[str, Tree], list[Block]]:
    attributes: dict[str, Tree] = {}
    blocks: list[Block] = []
    for item in subtrees(body):
        if rule(item) == "attribute":
            parts = subtrees(item)
            attributes[name_of(parts[0])] = parts[-1]
        elif rule(item) == "block":
            heads = [c for c in item.children if isinstance(c, Tree) and rule(c) in ("identifier", "keyword", "string", "literal_value")]
            inner = next(c for c in item.children if rule(c) == "body")
            a, b = read_body(inner, file)
            blocks.append(Block(name_of(heads[0]), [name_of(h) for h in heads[1:]], a, b, file))
    return attributes, blocks


_parsed: dict[tuple[str, str], list[Block]] = {}


def parse_file(path: Path) -> list[Block]:
    """The blocks of one .tf file. Parsed once per text: the tests evaluate the same files
    for dozens of inputs, and parsing was three quarters of their time. The blocks are only
    read, never changed, so sharing them is safe."""
    text = path.read_text()
    key = (str(path), text)
    if key not in _parsed:
        tree = hcl2.parses_to_tree(text)
        _, blocks = read_body(subtrees(tree)[0], str(path))
        _parsed[key] = blocks
    return _parsed[key]


def tree_text(t) -> str:
    """The source text of an expression, tokens joined by spaces: for checks that look at
    what an expression refers to, not at its value."""
    if isinstance(t, Token):
        return str(t)
    return " ".join(tree_text(c) for c in t.children)


def reference_text(t: Tree) -> str:
    """The text of a traversal (`time_sleep.x`, `google_a.b["k"]`), for depends_on."""
    r = rule(t)
    if r == "expr_term":
        return reference_text(subtrees(t)[0])
    if r == "identifier":
        return str(t.children[0])
    if r == "get_attr_expr_term":
        base, attr = subtrees(t)
        return f"{reference_text(base)}.{name_of(subtrees(attr)[0])}"
    if r == "index_expr_term":
        base, index = subtrees(t)
        return f"{reference_text(base)}[...]"
    raise EvalError(f"not a reference: {r}")


# ---------------------------------------------------------------------------------------------
# Modules


@dataclass
class Module:
    path: Path
    variables: dict[str, Block] = field(default_factory=dict)
    locals: dict[str, Tree] = field(default_factory=dict)
    outputs: dict[str, Block] = field(default_factory=dict)
    resources: dict[tuple[str, str], Block] = field(default_factory=dict)
    data: dict[tuple[str, str], Block] = field(default_factory=dict)
    calls: dict[str, Block] = field(default_factory=dict)
    terraform: list[Block] = field(default_factory=list)

    @staticmethod
    def load(directory: Path) -> "Module":
        m = Module(directory)
        for tf in sorted(directory.glob("*.tf")):
            for b in parse_file(tf):
                if b.type == "variable":
                    m.variables[b.labels[0]] = b
                elif b.type == "locals":
                    m.locals.update(b.attributes)
                elif b.type == "output":
                    m.outputs[b.labels[0]] = b
                elif b.type == "resource":
                    m.resources[(b.labels[0], b.labels[1])] = b
                elif b.type == "data":
                    m.data[(b.labels[0], b.labels[1])] = b
                elif b.type == "module":
                    m.calls[b.labels[0]] = b
                elif b.type == "terraform":
                    m.terraform.append(b)
        return m


# ---------------------------------------------------------------------------------------------
# Values of things only Google knows: documented shapes, or UNKNOWN.


def computed(rtype: str, attr: str, args: dict[str, Any], scenario: dict[str, Any]) -> Any:
    project = args.get("project") or scenario.get("project_id", UNKNOWN)
    if rtype == "google_service_account":
        email = f"{args['account_id']}@{project}.iam.gserviceaccount.com"
        return {
            "email": email,
            "member": f"serviceAccount:{email}",
            "name": f"projects/{project}/serviceAccounts/{email}",
            "id": f"projects/{project}/serviceAccounts/{email}",
        }.get(attr, UNKNOWN)
    if rtype in ("google_pubsub_topic", "google_pubsub_subscription"):
        kind = "topics" if rtype.endswith("topic") else "subscriptions"
        if attr == "id":
            return f"projects/{project}/{kind}/{args['name']}"
    if rtype == "google_project_iam_custom_role" and attr in ("id", "name"):
        return f"projects/{project}/roles/{args['role_id']}"
    if rtype == "google_secret_manager_secret" and attr in ("id", "name"):
        return f"projects/{project}/secrets/{args['secret_id']}"
    if rtype == "google_bigquery_dataset" and attr == "id":
        return f"projects/{project}/datasets/{args['dataset_id']}"
    if rtype == "google_project_service_identity" and attr in ("email", "member"):
        agents = scenario.get("service_agents", {})
        email = agents.get(args.get("service"), UNKNOWN)
        if email is UNKNOWN:
            return UNKNOWN
        return email if attr == "email" else f"serviceAccount:{email}"
    return UNKNOWN


def data_value(dtype: str, attr: str, args: dict[str, Any], scenario: dict[str, Any]) -> Any:
    number = scenario.get("project_number", UNKNOWN)
    if dtype == "google_project":
        return {"number": number, "project_id": args.get("project_id")}.get(attr, UNKNOWN)
    if dtype == "google_storage_project_service_account":
        email = f"service-{number}@gs-project-accounts.iam.gserviceaccount.com"
        return {"email_address": email, "member": f"serviceAccount:{email}"}.get(attr, UNKNOWN)
    return UNKNOWN


# ---------------------------------------------------------------------------------------------
# Evaluation


class Namespace:
    """`var`, `local`, `module`, `data`, `path`, `each`, `count`, or a resource type."""

    def __init__(self, get: Callable[[str], Any], what: str):
        self.get = get
        self.what = what


@dataclass
class Instance:
    """One resource (or data source) instance: its address and its evaluated arguments."""

    module: "Evaluation"
    kind: str  # resource | data
    type: str
    name: str
    key: Any  # None, an int (count) or a string (for_each)
    block: Block
    each: Any = None

    @property
    def address(self) -> str:
        prefix = "".join(f"module.{m}." for m in self.module.path)
        key = "" if self.key is None else f"[{json.dumps(self.key)}]"
        kind = "data." if self.kind == "data" else ""
        return f"{prefix}{kind}{self.type}.{self.name}{key}"

    def scope(self) -> dict[str, Any]:
        s: dict[str, Any] = {}
        if isinstance(self.key, int):
            s["count"] = Namespace(lambda a: self.key if a == "index" else _missing("count", a), "count")
        elif self.key is not None:
            s["each"] = Namespace(lambda a: {"key": self.key, "value": self.each}.get(a, UNKNOWN) if a in ("key", "value") else _missing("each", a), "each")
        return s

    def arg(self, name: str) -> Any:
        if name not in self.block.attributes:
            raise KeyError(name)
        return self.module.eval(self.block.attributes[name], self.scope())

    def args(self) -> dict[str, Any]:
        return {
            k: self.module.eval(v, self.scope())
            for k, v in self.block.attributes.items()
            if k not in ("count", "for_each", "depends_on", "provider")
        }

    def blocks(self, type_: str) -> list[dict[str, Any]]:
        """The instance's nested blocks of `type_` (dynamic ones expanded), evaluated."""
        return self.module.eval_blocks(self.block, type_, self.scope())

    def depends_on(self) -> list[str]:
        t = self.block.attributes.get("depends_on")
        if t is None:
            return []
        tup = subtrees(subtrees(t)[0]) if rule(t) == "expr_term" else subtrees(t)
        return [reference_text(x) for x in tup]

    def attr(self, name: str, scenario: dict[str, Any]) -> Any:
        if self.kind == "data":
            return data_value(self.type, name, self.args(), scenario)
        if name in self.block.attributes:
            return self.arg(name)
        value = computed(self.type, name, self.args(), scenario)
        return value

    def preconditions(self) -> list[tuple[Any, Any]]:
        out = []
        for lc in self.block.blocks_of("lifecycle"):
            for pre in lc.blocks_of("precondition"):
                out.append((
                    self.module.eval(pre.attributes["condition"], self.scope()),
                    self.module.eval(pre.attributes["error_message"], self.scope()),
                ))
        return out


def _missing(ns: str, attr: str):
    raise EvalError(f"{ns}.{attr} is not defined")


class Evaluation:
    """One module instance evaluated with its input variables."""

    def __init__(self, module: Module, inputs: dict[str, Any], scenario: dict[str, Any], path: tuple[str, ...] = (), modules: dict[Path, Module] | None = None, root: Path | None = None):
        self.module = module
        self.root = root or module.path
        self.scenario = scenario
        self.path = path
        self.modules = modules if modules is not None else {}
        self._locals: dict[str, Any] = {}
        self._resolving: set[str] = set()
        self._instances: dict[tuple[str, str, str], list[Instance]] = {}
        self._children: dict[str, Evaluation] = {}
        self.variables: dict[str, Any] = {}
        self.validation_failures: list[tuple[str, str]] = []
        for name, block in module.variables.items():
            if name in inputs and inputs[name] is not None:
                value = inputs[name]
            elif "default" in block.attributes:
                value = self.eval(block.attributes["default"], {})
            elif name in inputs:
                value = None
            else:
                raise EvalError(f"{module.path}: the required variable {name} is not set")
            if "type" in block.attributes and value is not None:
                value = convert(value, block.attributes["type"], self)
            self.variables[name] = value
        for name, block in module.variables.items():
            for v in block.blocks_of("validation"):
                ok = self.eval(v.attributes["condition"], {})
                if ok is False:
                    self.validation_failures.append((name, self.eval(v.attributes["error_message"], {})))

    # -- lookups --

    def local(self, name: str) -> Any:
        if name in self._locals:
            return self._locals[name]
        if name not in self.module.locals:
            raise EvalError(f"{self.module.path}: local.{name} is not declared")
        if name in self._resolving:
            raise EvalError(f"{self.module.path}: local.{name} refers to itself")
        self._resolving.add(name)
        try:
            value = self.eval(self.module.locals[name], {})
        finally:
            self._resolving.discard(name)
        self._locals[name] = value
        return value

    def child(self, name: str) -> "Evaluation":
        if name not in self._children:
            call = self.module.calls[name]
            source = self.eval(call.attributes["source"], {})
            directory = (self.module.path / source).resolve()
            mod = self.modules.get(directory) or Module.load(directory)
            self.modules[directory] = mod
            inputs = {k: self.eval(v, {}) for k, v in call.attributes.items() if k not in ("source", "version", "depends_on", "providers", "count", "for_each")}
            self._children[name] = Evaluation(mod, inputs, self.scenario, self.path + (name,), self.modules, self.root)
        return self._children[name]

    def output(self, name: str) -> Any:
        return self.eval(self.module.outputs[name].attributes["value"], {})

    def instances(self, rtype: str, name: str, kind: str = "resource") -> list[Instance]:
        key = (kind, rtype, name)
        if key in self._instances:
            return self._instances[key]
        table = self.module.resources if kind == "resource" else self.module.data
        if (rtype, name) not in table:
            raise EvalError(f"{self.module.path}: {kind} {rtype}.{name} is not declared")
        block = table[(rtype, name)]
        out: list[Instance] = []
        if "count" in block.attributes:
            n = self.eval(block.attributes["count"], {})
            if is_unknown(n):
                raise EvalError(f"{rtype}.{name}: count is unknown at plan time")
            out = [Instance(self, kind, rtype, name, i, block) for i in range(int(n))]
        elif "for_each" in block.attributes:
            each = self.eval(block.attributes["for_each"], {})
            if is_unknown(each if not isinstance(each, dict) else list(each.keys())):
                raise EvalError(f"{rtype}.{name}: for_each keys are unknown at plan time")
            if isinstance(each, dict):
                out = [Instance(self, kind, rtype, name, k, block, v) for k, v in each.items()]
            elif isinstance(each, list):
                out = [Instance(self, kind, rtype, name, k, block, k) for k in each]
            else:
                raise EvalError(f"{rtype}.{name}: for_each over {type(each).__name__}")
        else:
            out = [Instance(self, kind, rtype, name, None, block)]
        self._instances[key] = out
        return out

    def all_instances(self, recursive: bool = True) -> list[Instance]:
        out = []
        for (rtype, name) in self.module.resources:
            out += self.instances(rtype, name)
        if recursive:
            for name in self.module.calls:
                out += self.child(name).all_instances()
        return out

    # -- expressions --

    def eval(self, t: Tree, scope: dict[str, Any]) -> Any:
        r = rule(t)
        method = getattr(self, f"_e_{r}", None)
        if method is None:
            raise EvalError(f"{self.module.path}: cannot evaluate {r}")
        return method(t, scope)

    def _e_expr_term(self, t, scope):
        inner = subtrees(t)
        if len(inner) != 1:
            raise EvalError("unexpected expression term")
        return self.eval(inner[0], scope)

    def _e_int_lit(self, t, scope):
        return int(str(t.children[0]))

    def _e_float_lit(self, t, scope):
        return float(str(t.children[0]))

    def _e_literal_value(self, t, scope):
        return {"true": True, "false": False, "null": None}[str(t.children[0])]

    def _e_string(self, t, scope):
        parts = []
        for p in t.children:
            if rule(p) != "string_part":
                continue
            c = p.children[0]
            if isinstance(c, Token):
                text = str(c)
                if c.type == "ESCAPED_INTERPOLATION":
                    parts.append(text[1:])
                elif c.type == "ESCAPED_DIRECTIVE":
                    parts.append(text[1:])
                else:
                    parts.append(unescape(text))
            elif rule(c) == "interpolation":
                v = self.eval(subtrees(c)[0], scope)
                parts.append(v if v is UNKNOWN else to_string(v))
            else:
                raise EvalError(f"template directive {rule(c)} is not supported")
        if any(p is UNKNOWN for p in parts):
            return UNKNOWN
        return "".join(parts)

    def _heredoc(self, t, scope, trim: bool):
        text = str(t.children[0])
        m = re.match(r"<<-?([A-Za-z][A-Za-z0-9._-]*)\r?\n", text)
        body = text[m.end():]
        body = body[: body.rstrip().rfind("\n") + 1] if "\n" in body.rstrip() else ""
        if trim:
            lines = body.split("\n")
            indents = [len(l) - len(l.lstrip(" ")) for l in lines if l.strip()]
            cut = min(indents) if indents else 0
            body = "\n".join(l[cut:] for l in lines)
        return self.template(body, scope)

    def _e_heredoc_template(self, t, scope):
        return self._heredoc(t, scope, False)

    def _e_heredoc_template_trim(self, t, scope):
        return self._heredoc(t, scope, True)

    def template(self, text: str, scope) -> Any:
        """`${...}` interpolations in a heredoc body."""
        out = []
        i = 0
        while i < len(text):
            j = text.find("${", i)
            if j < 0:
                out.append(text[i:])
                break
            if j > 0 and text[j - 1] == "$":
                out.append(text[i:j - 1] + "${")
                i = j + 2
                continue
            out.append(text[i:j])
            depth, k, quote = 1, j + 2, False
            while depth:
                ch = text[k]
                if quote:
                    if ch == "\\":
                        k += 1
                    elif ch == '"':
                        quote = False
                elif ch == '"':
                    quote = True
                elif ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                k += 1
            expr = text[j + 2:k - 1]
            tree = hcl2.parses_to_tree(f"x = {expr}\n")
            attr = subtrees(subtrees(tree)[0])[0]
            v = self.eval(subtrees(attr)[-1], scope)
            out.append(v if v is UNKNOWN else to_string(v))
            i = k
        if any(p is UNKNOWN for p in out):
            return UNKNOWN
        return "".join(out)

    def _e_identifier(self, t, scope):
        n = str(t.children[0])
        if n in scope:
            return scope[n]
        if n == "var":
            return Namespace(lambda a: self.variables[a] if a in self.variables else _missing("var", a), "var")
        if n == "local":
            return Namespace(self.local, "local")
        if n == "module":
            return Namespace(lambda a: Namespace(lambda o: self.child(a).output(o), f"module.{a}"), "module")
        if n == "path":
            return Namespace(lambda a: {"module": str(self.module.path), "root": str(self.root), "cwd": str(self.root)}[a], "path")
        if n == "data":
            return Namespace(lambda dtype: Namespace(lambda dname: self.collection(dtype, dname, "data"), f"data.{dtype}"), "data")
        if any(rt == n for rt, _ in self.module.resources):
            return Namespace(lambda rname: self.collection(n, rname, "resource"), n)
        raise EvalError(f"{self.module.path}: unknown name {n}")

    def collection(self, rtype: str, name: str, kind: str) -> Any:
        insts = self.instances(rtype, name, kind)
        block = (self.module.resources if kind == "resource" else self.module.data)[(rtype, name)]
        if "count" in block.attributes:
            return [InstanceRef(i) for i in insts]
        if "for_each" in block.attributes:
            return {i.key: InstanceRef(i) for i in insts}
        return InstanceRef(insts[0])

    def _e_get_attr_expr_term(self, t, scope):
        base_t, attr_t = subtrees(t)
        base = self.eval(base_t, scope)
        attr = name_of(subtrees(attr_t)[0])
        return get_attr(base, attr, self.scenario)

    def _e_index_expr_term(self, t, scope):
        base_t, index_t = subtrees(t)
        base = self.eval(base_t, scope)
        if rule(index_t) == "short_index":
            key = int(str(index_t.children[1]))
        else:
            key = self.eval(subtrees(index_t)[0], scope)
        if base is UNKNOWN or key is UNKNOWN:
            return UNKNOWN
        if isinstance(base, list):
            return base[int(key)]
        if isinstance(base, dict):
            if key not in base:
                raise EvalError(f"no key {key!r} in a map of {sorted(base)[:8]}")
            return base[key]
        raise EvalError(f"cannot index {type(base).__name__}")

    def _e_function_call(self, t, scope):
        name = name_of(subtrees(t)[0])
        args_t = next((c for c in t.children if rule(c) == "arguments"), None)
        raw = subtrees(args_t) if args_t is not None else []
        expand = args_t is not None and any(isinstance(c, Token) and c.type == "ELLIPSIS" for c in args_t.children)
        if name in ("try", "can"):
            return self._try_can(name, raw, scope)
        args = [self.eval(a, scope) for a in raw]
        if expand:
            args = args[:-1] + list(args[-1])
        if name in ("file", "fileexists", "templatefile"):
            p = Path(args[0]) if Path(args[0]).is_absolute() else self.root / args[0]
            if name == "fileexists":
                return p.exists()
            if name == "file":
                return p.read_text()
            # templatefile: plain ${name} interpolations only (no %{ } directives).
            values = args[1] if len(args) > 1 else {}
            if values is UNKNOWN or any(is_unknown(v) for v in values.values()):
                return UNKNOWN
            def interpolate(m):
                if m.group(1) not in values:
                    raise EvalError(f"templatefile(): no value for {m.group(1)!r} in {p.name}")
                return str(values[m.group(1)])
            return re.sub(r"(?<!\$)\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}", interpolate, p.read_text())
        fn = FUNCTIONS.get(name)
        if fn is None:
            raise EvalError(f"function {name}() is not supported")
        structural = ("merge", "concat", "length", "keys", "values", "tolist", "flatten", "coalesce", "lookup", "slice", "setproduct", "one")
        if name in structural:
            if any(a is UNKNOWN for a in args):
                return UNKNOWN
        elif any(is_unknown(a) for a in args):
            return UNKNOWN
        try:
            return fn(*args)
        except EvalError:
            raise
        except (AttributeError, TypeError, KeyError, ValueError, IndexError, re.error, json.JSONDecodeError) as e:
            raise EvalError(f"{name}(): {e}") from e

    def _try_can(self, name, raw, scope):
        for a in raw:
            try:
                v = self.eval(a, scope)
                return True if name == "can" else v
            except (EvalError, KeyError, IndexError, ValueError, TypeError, re.error, json.JSONDecodeError):
                if name == "can":
                    return False
        if name == "try":
            raise EvalError("no expression of try() succeeded")
        return False

    def _e_tuple(self, t, scope):
        return [self.eval(x, scope) for x in subtrees(t)]

    def _e_object(self, t, scope):
        out = {}
        for elem in subtrees(t):
            k_t, v_t = subtrees(elem)
            inner = subtrees(k_t)[0]
            if rule(inner) == "expr_term" and rule(subtrees(inner)[0]) == "identifier":
                key = name_of(subtrees(inner)[0])
            elif rule(inner) == "keyword":
                key = name_of(inner)
            else:
                key = self.eval(inner, scope)
            out[to_string(key) if not isinstance(key, str) else key] = self.eval(v_t, scope)
        return out

    def _for(self, t, scope):
        intro = next(c for c in t.children if rule(c) == "for_intro")
        names = [name_of(c) for c in intro.children if rule(c) == "identifier"]
        coll = self.eval(subtrees(intro)[-1], scope)
        if is_unknown(coll) and not isinstance(coll, (list, dict)):
            raise EvalError("a for expression over an unknown collection")
        items = list(coll.items()) if isinstance(coll, dict) else list(enumerate(coll))
        cond = next((c for c in t.children if rule(c) == "for_cond"), None)
        rest = [c for c in subtrees(t) if rule(c) not in ("for_intro", "for_cond")]
        for k, v in items:
            inner = dict(scope)
            if len(names) == 2:
                inner[names[0]], inner[names[1]] = k, v
            else:
                inner[names[0]] = v
            if cond is not None:
                ok = self.eval(subtrees(cond)[0], inner)
                if ok is UNKNOWN:
                    raise EvalError("a for condition is unknown at plan time")
                if not ok:
                    continue
            yield inner, rest

    def _e_for_tuple_expr(self, t, scope):
        return [self.eval(rest[0], inner) for inner, rest in self._for(t, scope)]

    def _e_for_object_expr(self, t, scope):
        group = any(isinstance(c, Token) and c.type == "ELLIPSIS" for c in t.children)
        out: dict[str, Any] = {}
        for inner, rest in self._for(t, scope):
            k = self.eval(rest[0], inner)
            v = self.eval(rest[1], inner)
            if k is UNKNOWN:
                raise EvalError("a for expression's key is unknown at plan time")
            k = to_string(k)
            if group:
                out.setdefault(k, []).append(v)
            elif k in out:
                raise EvalError(f"duplicate key {k!r} in a for expression")
            else:
                out[k] = v
        return out

    def _e_conditional(self, t, scope):
        c, a, b = subtrees(t)
        cond = self.eval(c, scope)
        if cond is UNKNOWN:
            return UNKNOWN
        if not isinstance(cond, bool):
            raise EvalError(f"a condition is {type(cond).__name__}, not bool")
        return self.eval(a if cond else b, scope)

    def _e_unary_op(self, t, scope):
        op = str(t.children[0]).strip()
        v = self.eval(subtrees(t)[0], scope)
        if v is UNKNOWN:
            return UNKNOWN
        return (not v) if op == "!" else -v

    def _e_binary_op(self, t, scope):
        lhs_t, term = subtrees(t)
        op_t, rhs_t = subtrees(term)
        op = str(op_t.children[0]).strip()
        lhs = self.eval(lhs_t, scope)
        if op == "&&" and lhs is False:
            return False
        if op == "||" and lhs is True:
            return True
        rhs = self.eval(rhs_t, scope)
        if lhs is UNKNOWN or rhs is UNKNOWN:
            return UNKNOWN
        ops = {
            "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
            "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
            "/": lambda a, b: a / b, "%": lambda a, b: a % b,
            "&&": lambda a, b: bool(a and b), "||": lambda a, b: bool(a or b),
        }
        if op in ("+", "-", "*", "/", "%", "<", ">", "<=", ">="):
            lhs, rhs = number(lhs), number(rhs)
        return ops[op](lhs, rhs)

    # -- blocks --

    def eval_blocks(self, block: Block, type_: str, scope) -> list[dict[str, Any]]:
        out = []
        for b in block.blocks:
            if b.type == type_:
                out.append(self.eval_block(b, scope))
            elif b.type == "dynamic" and b.labels[0] == type_:
                iterator = self.eval(b.attributes["iterator"], scope) if "iterator" in b.attributes else type_
                each = self.eval(b.attributes["for_each"], scope)
                items = list(each.items()) if isinstance(each, dict) else list(enumerate(each))
                content = b.blocks_of("content")[0]
                for k, v in items:
                    inner = dict(scope)
                    inner[iterator] = Namespace(lambda a, k=k, v=v: {"key": k, "value": v}[a], "iterator")
                    out.append(self.eval_block(content, inner))
        return out

    def eval_block(self, b: Block, scope) -> dict[str, Any]:
        value: dict[str, Any] = {k: self.eval(v, scope) for k, v in b.attributes.items()}
        for nested in {x.type if x.type != "dynamic" else x.labels[0] for x in b.blocks}:
            value[nested] = self.eval_blocks(b, nested, scope)
        return value


class InstanceRef:
    """A reference to a resource instance: its attributes evaluate when read."""

    def __init__(self, inst: Instance):
        self.inst = inst


def get_attr(base: Any, attr: str, scenario: dict[str, Any]) -> Any:
    if base is UNKNOWN:
        return UNKNOWN
    if isinstance(base, Namespace):
        return base.get(attr)
    if isinstance(base, InstanceRef):
        return base.inst.attr(attr, scenario)
    if isinstance(base, dict):
        if attr not in base:
            raise EvalError(f"no attribute {attr} in an object of {sorted(base)[:8]}")
        return base[attr]
    raise EvalError(f"cannot read .{attr} of {type(base).__name__}")


# ---------------------------------------------------------------------------------------------
# Types


def convert(value: Any, type_t: Tree, ev: Evaluation) -> Any:
    t = subtrees(type_t)[0] if rule(type_t) == "expr_term" else type_t
    if rule(t) == "identifier":
        n = name_of(t)
        if value is None or value is UNKNOWN:
            return value
        if n == "string":
            return to_string(value)
        if n == "number":
            return number(value)
        if n == "bool":
            return value if isinstance(value, bool) else {"true": True, "false": False}[str(value)]
        return value
    if rule(t) != "function_call":
        raise EvalError(f"type {rule(t)} is not supported")
    fn = name_of(subtrees(t)[0])
    args = subtrees(next(c for c in t.children if rule(c) == "arguments"))
    if value is None or value is UNKNOWN:
        return value
    if fn in ("list", "set"):
        out = [convert(v, args[0], ev) for v in value]
        return sorted(set(out)) if fn == "set" and all(isinstance(x, str) for x in out) else out
    if fn == "map":
        return {k: convert(v, args[0], ev) for k, v in value.items()}
    if fn == "object":
        spec = subtrees(subtrees(args[0])[0]) if rule(args[0]) == "expr_term" else subtrees(args[0])
        out = {}
        for elem in spec:
            k_t, v_t = subtrees(elem)
            key = name_of(subtrees(k_t)[0])
            inner = subtrees(v_t)[0] if rule(v_t) == "expr_term" else v_t
            optional = rule(inner) == "function_call" and name_of(subtrees(inner)[0]) == "optional"
            if optional:
                oargs = subtrees(next(c for c in inner.children if rule(c) == "arguments"))
                if key in value and value[key] is not None:
                    out[key] = convert(value[key], oargs[0], ev)
                elif len(oargs) > 1:
                    out[key] = convert(ev.eval(oargs[1], {}), oargs[0], ev)
                else:
                    out[key] = None
            elif key in value:
                out[key] = convert(value[key], v_t, ev)
            else:
                raise EvalError(f"attribute {key} is required")
        return out
    raise EvalError(f"type {fn}() is not supported")


# ---------------------------------------------------------------------------------------------
# Functions


def unescape(s: str) -> str:
    return re.sub(r'\\(["\\nrt])', lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), s)


def number(v: Any) -> Any:
    if isinstance(v, bool):
        raise EvalError("a bool is not a number")
    if isinstance(v, (int, float)):
        return v
    f = float(v)
    return int(f) if f.is_integer() else f


def to_string(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (int, float, str)):
        return str(v)
    if v is None:
        raise EvalError("null in a string")
    raise EvalError(f"a {type(v).__name__} is not a string")


def toset(xs):
    out = []
    for x in xs:
        if x not in out:
            out.append(x)
    return sorted(out) if all(isinstance(x, str) for x in out) else out


def merge(*maps):
    out = {}
    for m in maps:
        if m is None:
            continue
        if not isinstance(m, dict):
            raise EvalError("merge() of a non-map")
        out.update(m)
    return out


def coalesce(*xs):
    for x in xs:
        if x is UNKNOWN:
            return UNKNOWN
        if x is not None and x != "":
            return x
    raise EvalError("coalesce(): every argument is null or empty")


def lookup(m, k, *default):
    if m is UNKNOWN:
        return UNKNOWN
    if k in m:
        return m[k]
    if default:
        return default[0]
    raise EvalError(f"lookup(): no key {k}")


def regex_fn(pattern, s):
    m = re.search(pattern, s)
    if not m:
        raise EvalError("regex(): no match")
    if m.groupdict():
        return m.groupdict()
    if m.groups():
        return list(m.groups())
    return m.group(0)


def flatten(xs):
    out = []
    for x in xs:
        out += flatten(x) if isinstance(x, list) else [x]
    return out


def setproduct(*sets):
    out = [[]]
    for s in sets:
        out = [a + [b] for a in out for b in s]
    return out


def yamldecode(text):
    import yaml  # installed beside python-hcl2 by scripts/infra-check.sh

    return yaml.safe_load(text)


def format_fn(fmt, *args):
    it = iter(args)
    return re.sub(r"%(-?\d*)([dsvq%])", lambda m: "%" if m.group(2) == "%" else (json.dumps(next(it)) if m.group(2) == "q" else to_string(next(it))), fmt)


def parse_duration(s: str) -> float:
    """Seconds of a Go duration (`600s`, `10m`, `1h30m`), as time_sleep and Terraform read them."""
    total = 0.0
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", s):
        total += float(value) * units[unit]
    if not re.fullmatch(r"(\d+(\.\d+)?(ms|h|m|s))+", s):
        raise EvalError(f"{s!r} is not a duration")
    return total


FUNCTIONS: dict[str, Callable] = {
    "merge": merge,
    "concat": lambda *ls: [x for l in ls for x in l],
    "toset": toset,
    "tolist": list,
    "tomap": dict,
    "tostring": to_string,
    "tonumber": number,
    "length": lambda x: UNKNOWN if x is UNKNOWN else len(x),
    "keys": lambda m: sorted(m.keys()),
    "values": lambda m: [m[k] for k in sorted(m.keys())],
    "contains": lambda xs, x: x in xs,
    "coalesce": coalesce,
    "lookup": lookup,
    "startswith": lambda s, p: s.startswith(p),
    "endswith": lambda s, p: s.endswith(p),
    "trimprefix": lambda s, p: s[len(p):] if s.startswith(p) else s,
    "trimsuffix": lambda s, p: s[: -len(p)] if p and s.endswith(p) else s,
    "replace": lambda s, a, b: re.sub(a[1:-1], b.replace("$", "\\"), s) if len(a) > 1 and a.startswith("/") and a.endswith("/") else s.replace(a, b),
    "split": lambda sep, s: s.split(sep),
    "join": lambda sep, xs: sep.join(to_string(x) for x in xs),
    "lower": str.lower,
    "upper": str.upper,
    "min": lambda *xs: min(number(x) for x in xs),
    "max": lambda *xs: max(number(x) for x in xs),
    "abs": abs,
    "ceil": math.ceil,
    "floor": math.floor,
    "pow": lambda a, b: a ** b,
    "slice": lambda xs, a, b: xs[a:b],
    "distinct": toset,
    "flatten": flatten,
    "setproduct": setproduct,
    "setsubtract": lambda a, b: [x for x in toset(a) if x not in b],
    "setunion": lambda *ss: toset([x for s in ss for x in s]),
    "setintersection": lambda a, *ss: [x for x in toset(a) if all(x in s for s in ss)],
    "alltrue": lambda xs: all(x is True or x == "true" for x in xs),
    "anytrue": lambda xs: any(x is True or x == "true" for x in xs),
    "regex": regex_fn,
    "jsonencode": lambda v: json.dumps(v, separators=(",", ":")),
    "jsondecode": json.loads,
    "yamldecode": yamldecode,
    "base64encode": lambda s: base64.b64encode(s.encode()).decode(),
    "format": format_fn,
    "range": lambda *a: list(range(*[int(x) for x in a])),
    "sum": lambda xs: sum(number(x) for x in xs),
    "substr": lambda s, o, n: s[o:] if n < 0 else s[o:o + n],
    "one": lambda xs: xs[0] if len(xs) == 1 else (None if not xs else (_ for _ in ()).throw(EvalError("one() of many"))),
    "compact": lambda xs: [x for x in xs if x not in (None, "")],
    "sort": lambda xs: sorted(to_string(x) for x in xs),
    "reverse": lambda xs: list(reversed(xs)),
    "fileexists": lambda p: Path(p).exists(),
}


# ---------------------------------------------------------------------------------------------
# Entry point


def evaluate(root: Path, inputs: dict[str, Any], scenario: dict[str, Any] | None = None) -> Evaluation:
    """The root module at `root` evaluated with `inputs` (what terraform.tfvars and the
    `*.auto.tfvars.json` files would give); `scenario` holds what Google would tell a plan
    (`project_number`, the `service_agents` emails by service)."""
    scenario = dict(scenario or {})
    scenario.setdefault("project_id", inputs.get("project_id"))
    return Evaluation(Module.load(root.resolve()), inputs, scenario)
