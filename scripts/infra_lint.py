#!/usr/bin/env python3
"""Offline checks of the Terraform under infra/, for machines that cannot `terraform init`.

Without the provider, `terraform validate` cannot run, so this does what it can from files:

1. parses every .tf file with python-hcl2 (a syntax error fails);
2. checks each module on its own: every variable has a description and a type, every output
   a description; every `var.X`, `local.X`, `module.X`, `google_*.NAME` and
   `data.google_*.NAME` that is referenced is declared; every module call passes only
   variables the module declares and all those it requires;
3. with --schema PACKAGE.tgz (the npm package @cdktf/provider-google, generated from the
   provider's schema): every argument and block of every google_* resource and data source
   exists at its place in the provider schema, every required argument is set, and every
   attribute read from a resource (`google_x.y.attr`) exists. Resources of the other providers
   the configuration uses are checked the same way against their own packages:
   `provider = google-beta` resources against --beta-schema (@cdktf/provider-google-beta),
   time_* resources (hashicorp/time: time_sleep) against --time-schema (@cdktf/provider-time);
   a resource whose provider's schema is not given is reported, never skipped silently;
4. every provider a module's resources use is declared in its required_providers.

Usage: infra_lint.py [--schema GOOGLE.tgz [--beta-schema BETA.tgz] [--time-schema TIME.tgz]] DIR
(prints one line per problem; exit 1 if any)
"""

from __future__ import annotations

import argparse
import re
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import hcl2

META_ARGUMENTS = {"count", "for_each", "provider", "depends_on", "lifecycle", "connection", "provisioner"}
INTERNAL_KEYS = {"__comments__", "__is_block__", "__inline_comments__", "__start_line__", "__end_line__"}


def unquote(name: str) -> str:
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == '"' else name


def is_block_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def strings_in(value):
    """Every string inside a parsed value: the expressions to look for references in."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in INTERNAL_KEYS:
                yield k
                yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


# ---------------------------------------------------------------------------------------------
# A module: the .tf files of one directory.


@dataclass
class Module:
    path: Path
    variables: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    locals: set[str] = field(default_factory=set)
    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    data: dict[tuple[str, str], dict] = field(default_factory=dict)
    modules: dict[str, dict] = field(default_factory=dict)
    bodies: list = field(default_factory=list)
    moves: list[tuple[str, str]] = field(default_factory=list)  # `moved` blocks: (from, to)


def load_module(directory: Path, problems: list[str]) -> Module:
    module = Module(directory)
    for tf in sorted(directory.glob("*.tf")):
        try:
            with tf.open() as fh:
                doc = hcl2.load(fh)
        except Exception as e:  # the parser raises lark errors of several kinds
            problems.append(f"{tf}: does not parse: {e}")
            continue
        # A `moved` block names an address that is gone (from): checked apart, below.
        for block in doc.pop("moved", []):
            module.moves.append((str(block.get("from", "")), str(block.get("to", ""))))
        module.bodies.append(doc)
        for block in doc.get("variable", []):
            for name, body in block.items():
                module.variables[unquote(name)] = body
        for block in doc.get("output", []):
            for name, body in block.items():
                module.outputs[unquote(name)] = body
        for block in doc.get("locals", []):
            module.locals.update(k for k in block if k not in INTERNAL_KEYS)
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    if name not in INTERNAL_KEYS:
                        module.resources[(unquote(rtype), unquote(name))] = body
        for block in doc.get("data", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    if name not in INTERNAL_KEYS:
                        module.data[(unquote(rtype), unquote(name))] = body
        for block in doc.get("module", []):
            for name, body in block.items():
                module.modules[unquote(name)] = body
    return module


REF = re.compile(r"(?<![\w.])(var|local|module|data)\.(\w+)(?:\.(\w+))?")
RESOURCE_REF = re.compile(r"(?<![\w.])((?:google|time)_\w+)\.(\w+)(?:\[[^\]]*\])?(?:\.(\w+))?")
DATA_REF = re.compile(r"(?<![\w.])data\.(google_\w+)\.(\w+)(?:\[[^\]]*\])?(?:\.(\w+))?")


def check_module(module: Module, problems: list[str]) -> list[tuple[str, str, str]]:
    """Checks declarations and references; returns the resource attributes read, for the schema."""
    where = module.path
    for name, body in module.variables.items():
        if not str(body.get("description", "")).strip('"'):
            problems.append(f"{where}: variable {name} has no description")
        if "type" not in body:
            problems.append(f"{where}: variable {name} has no type")
    for name, body in module.outputs.items():
        if not str(body.get("description", "")).strip('"'):
            problems.append(f"{where}: output {name} has no description")

    reads: list[tuple[str, str, str]] = []
    for text in (s for doc in module.bodies for s in strings_in(doc)):
        for kind, name, attr in REF.findall(text):
            if kind == "var" and name not in module.variables:
                problems.append(f"{where}: var.{name} is not declared")
            elif kind == "local" and name not in module.locals:
                problems.append(f"{where}: local.{name} is not declared")
            elif kind == "module" and name not in module.modules:
                problems.append(f"{where}: module.{name} is not declared")
        for rtype, name, attr in RESOURCE_REF.findall(text):
            if (rtype, name) not in module.resources:
                problems.append(f"{where}: {rtype}.{name} is not declared")
            elif attr:
                reads.append((rtype, attr, "resource"))
        for rtype, name, attr in DATA_REF.findall(text):
            if (rtype, name) not in module.data:
                problems.append(f"{where}: data.{rtype}.{name} is not declared")
            elif attr:
                reads.append((rtype, attr, "data"))
    # A move is from an address the configuration no longer declares to one it declares
    # (Terraform refuses a `from` that still exists).
    for source, target in module.moves:
        froms, tos = RESOURCE_REF.findall(source), RESOURCE_REF.findall(target)
        if len(froms) != 1 or len(tos) != 1:
            problems.append(f"{where}: moved from {source} to {target}: each side must name one resource")
            continue
        if froms[0][:2] in module.resources and froms[0][:2] == tos[0][:2] and "[" not in source:
            pass  # the same resource gaining count or for_each: `a.b` to `a.b["k"]`
        elif froms[0][:2] in module.resources:
            problems.append(f"{where}: moved from {froms[0][0]}.{froms[0][1]}, which is still declared")
        if tos[0][:2] not in module.resources:
            problems.append(f"{where}: moved to {tos[0][0]}.{tos[0][1]}, which is not declared")
    return reads


def check_calls(module: Module, by_path: dict[Path, Module], problems: list[str]) -> None:
    for name, body in module.modules.items():
        source = unquote(str(body.get("source", "")))
        child = by_path.get((module.path / source).resolve())
        if child is None:
            problems.append(f"{module.path}: module {name}: source {source} is not a local module")
            continue
        passed = {k for k in body if k not in INTERNAL_KEYS | META_ARGUMENTS | {"source", "version"}}
        for k in sorted(passed - set(child.variables)):
            problems.append(f"{module.path}: module {name} passes {k}, which {source} does not declare")
        required = {k for k, v in child.variables.items() if "default" not in v}
        for k in sorted(required - passed):
            problems.append(f"{module.path}: module {name} does not pass the required variable {k}")
        for text in strings_in(module.bodies):
            for output in re.findall(rf"module\.{name}\.(\w+)", text):
                if output not in child.outputs:
                    problems.append(f"{module.path}: module.{name}.{output} is not an output of {source}")


# ---------------------------------------------------------------------------------------------
# The provider schema, read from the cdktf package's generated bindings.


@dataclass
class Struct:
    attributes: set[str] = field(default_factory=set)
    blocks: dict[str, str] = field(default_factory=dict)  # block name -> struct function
    required: set[str] = field(default_factory=set)


@dataclass
class Schema:
    structs: dict[str, Struct]  # function name (or "<root>") -> struct
    getters: set[str]  # camelCase attribute getters of the resource class


ENTRY = re.compile(r"(\w+): \{\s*value: (.*?),\s*isBlock: (true|false),", re.S)
NESTED = re.compile(r"(?<!cdktf\.)\b([a-z]\w*)ToHclTerraform\b")
FUNCTION = re.compile(r"^function (\w+)ToHclTerraform\(struct\) \{(.*?)^\}", re.S | re.M)
ROOT = re.compile(r"synthesizeHclAttributes\(\) \{(.*?)^    \}", re.S | re.M)
INTERFACE = re.compile(r"^export interface (\w+)( extends cdktf\.TerraformMetaArguments)? \{(.*?)^\}", re.S | re.M)
MEMBER = re.compile(r"#(\w+) \w+#\w+\}\s*\*/\s*readonly (\w+)(\?)?:", re.S)


def parse_entries(body: str) -> Struct:
    struct = Struct()
    for key, value, is_block in ENTRY.findall(body):
        if is_block == "true":
            nested = NESTED.search(value)
            struct.blocks[key] = nested.group(1) if nested else ""
        else:
            struct.attributes.add(key)
    return struct


def parse_schema(js: str, dts: str) -> Schema:
    structs = {name: parse_entries(body) for name, body in FUNCTION.findall(js)}
    root = ROOT.search(js)
    structs["<root>"] = parse_entries(root.group(1) if root else "")
    for interface, is_root, body in INTERFACE.findall(dts):
        target = "<root>" if is_root else interface[0].lower() + interface[1:]
        if target in structs:
            structs[target].required = {snake for snake, _camel, optional in MEMBER.findall(body) if not optional}
    getters = set(re.findall(r"^    get (\w+)\(\) \{", js, re.M))
    return Schema(structs, getters)


def provider_of(rtype: str, body: dict) -> str:
    """The provider of a resource: its `provider` meta-argument, else its type's prefix."""
    explicit = unquote(str(body.get("provider", ""))).removeprefix("${").removesuffix("}")
    return explicit.split(".")[0] if explicit else rtype.split("_")[0]


def package_dir(rtype: str, kind: str, provider: str = "google") -> str:
    """Where a resource's bindings are in its provider's cdktf package: google's drop the
    `google_` prefix (`lib/pubsub-topic`), google-beta's keep it (`lib/google-pubsub-topic`),
    time's drop `time_` (`lib/sleep`)."""
    if provider == "google-beta":
        base = rtype.replace("_", "-")
        return f"package/lib/{'data-' if kind == 'data' else ''}{base}"
    prefix = "time_" if provider == "time" else "google_"
    base = rtype.removeprefix(prefix).replace("_", "-")
    data = f"data-{provider}-" if kind == "data" else ""
    return f"package/lib/{data}{base}"


def load_schemas(tgz: Path, wanted: set[tuple[str, str]], provider: str = "google") -> dict[tuple[str, str], Schema]:
    members = {f"{package_dir(t, k, provider)}/{f}": (t, k, f) for t, k in wanted for f in ("index.js", "index.d.ts")}
    texts: dict[tuple[str, str], dict[str, str]] = {}
    with tarfile.open(tgz) as tar:
        for info in tar:
            if info.name in members:
                rtype, kind, f = members[info.name]
                fh = tar.extractfile(info)
                if fh is not None:
                    texts.setdefault((rtype, kind), {})[f] = fh.read().decode()
    return {key: parse_schema(files.get("index.js", ""), files.get("index.d.ts", "")) for key, files in texts.items()}


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.capitalize() for p in rest)


def check_body(schema: Schema, struct_name: str, body: dict, where: str, problems: list[str]) -> None:
    struct = schema.structs.get(struct_name)
    if struct is None:
        return
    present = set()
    for key, value in body.items():
        if key in INTERNAL_KEYS or (struct_name == "<root>" and key in META_ARGUMENTS):
            continue
        if key == "dynamic":
            for dyn in value:
                for name, spec in dyn.items():
                    name = unquote(name)
                    present.add(name)
                    if name not in struct.blocks:
                        problems.append(f"{where}: no block {name}")
                        continue
                    for content in spec.get("content", []):
                        check_body(schema, struct.blocks[name], content, f"{where}.{name}", problems)
            continue
        present.add(key)
        if is_block_list(value):
            if key not in struct.blocks:
                problems.append(f"{where}: no block {key}" + (" (it is an argument: use `=`)" if key in struct.attributes else ""))
                continue
            for item in value:
                check_body(schema, struct.blocks[key], item, f"{where}.{key}", problems)
        elif key not in struct.attributes:
            problems.append(f"{where}: no argument {key}" + (" (it is a block)" if key in struct.blocks else ""))
    for key in sorted(struct.required - present):
        problems.append(f"{where}: the required {key} is not set")


def check_schema(modules: list[Module], reads: list[tuple[str, str, str]], packages: dict[str, Path | None], problems: list[str]) -> int:
    """Checks every resource and data source against its provider's package (`packages`:
    provider name -> the .tgz, or None when not given)."""
    by_provider: dict[str, set[tuple[str, str]]] = {}
    for m in modules:
        for kind, blocks in (("resource", m.resources), ("data", m.data)):
            for (rtype, _), body in blocks.items():
                by_provider.setdefault(provider_of(rtype, body), set()).add((rtype, kind))
    schemas: dict[tuple[str, str, str], Schema] = {}
    for provider, wanted in sorted(by_provider.items()):
        tgz = packages.get(provider)
        if tgz is None:
            for rtype, kind in sorted(wanted):
                problems.append(f"provider schema: no schema package given for provider {provider} ({kind} {rtype})")
            continue
        found = load_schemas(tgz, wanted, provider)
        for rtype, kind in sorted(wanted - set(found)):
            problems.append(f"provider schema: provider {provider} has no {kind} {rtype}")
        schemas.update({(provider, t, k): v for (t, k), v in found.items()})
    checked = 0
    providers_of_type: dict[tuple[str, str], set[str]] = {}
    for module in modules:
        for kind, blocks in (("resource", module.resources), ("data", module.data)):
            for (rtype, name), body in blocks.items():
                provider = provider_of(rtype, body)
                providers_of_type.setdefault((rtype, kind), set()).add(provider)
                schema = schemas.get((provider, rtype, kind))
                if schema is not None:
                    check_body(schema, "<root>", body, f"{module.path}: {rtype}.{name}", problems)
                    checked += 1
    for rtype, attr, kind in reads:
        for provider in providers_of_type.get((rtype, kind), set()):
            schema = schemas.get((provider, rtype, kind))
            if schema is not None and camel(attr) not in schema.getters and attr not in schema.structs["<root>"].blocks:
                problems.append(f"provider schema: {rtype} has no attribute {attr}")
    return checked


def check_providers(module: Module, problems: list[str]) -> None:
    """Every provider a module's resources use is declared in its required_providers."""
    declared: set[str] = set()
    for doc in module.bodies:
        for block in doc.get("terraform", []):
            for req in block.get("required_providers", []):
                declared |= {k for k in req if k not in INTERNAL_KEYS}
    used = {provider_of(t, b) for (t, _), b in module.resources.items()} | {provider_of(t, b) for (t, _), b in module.data.items()}
    for provider in sorted(used - declared):
        problems.append(f"{module.path}: provider {provider} is used but not in required_providers")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schema", type=Path, help="the @cdktf/provider-google package (.tgz)")
    parser.add_argument("--beta-schema", type=Path, help="the @cdktf/provider-google-beta package (.tgz)")
    parser.add_argument("--time-schema", type=Path, help="the @cdktf/provider-time package (.tgz)")
    parser.add_argument("root", type=Path)
    args = parser.parse_args()

    problems: list[str] = []
    directories = sorted({tf.parent for tf in args.root.rglob("*.tf") if ".terraform" not in tf.parts})
    modules = [load_module(d, problems) for d in directories]
    by_path = {m.path.resolve(): m for m in modules}
    reads = []
    for m in modules:
        reads += check_module(m, problems)
        check_calls(m, by_path, problems)
        check_providers(m, problems)
    files = sum(1 for d in directories for _ in d.glob("*.tf"))
    summary = f"{files} files in {len(modules)} modules parsed"
    if args.schema:
        packages = {"google": args.schema, "google-beta": args.beta_schema, "time": args.time_schema}
        checked = check_schema(modules, reads, packages, problems)
        summary += f"; {checked} resources and data sources checked against the provider schema"
    for p in problems:
        print(p)
    print(f"infra_lint: {summary}; {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
