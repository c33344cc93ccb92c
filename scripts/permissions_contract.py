#!/usr/bin/env python3
"""The permissions contract: every call an account of Conveyor makes is allowed by its grants.

infra/permissions/contract.toml lists each request kind the adapters send (Google API method
ids, CDAP routes), who sends it and where, and the IAM permissions it needs, with Google's page
for each. This script evaluates the Terraform (scripts/tf_eval.py: no provider, no project) for
each scenario below, collects every IAM binding it creates, resolves each role to its
permissions (infra/permissions/roles.json for Google's predefined roles, the Terraform's own
google_project_iam_custom_role for the custom ones), and reports:

- an under-grant: an account can make a call it holds no permission for (a 403 at run time);
- an over-grant: a binding that no call of its account needs (unless listed as [[justified]]);
- a role the Terraform grants that roles.json does not list.

Usage: permissions_contract.py [--root infra] [--quiet]   (exit 1 on any finding)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tf_eval  # noqa: E402

PROJECT = "acme-prod"
NUMBER = "123456789012"

# The scenarios: the Terraform's inputs, and the features they turn on (the `when` of calls).
EVERYTHING: dict[str, Any] = {
    "project_id": PROJECT,
    "region": "europe-west1",
    "image": "europe-west1-docker.pkg.dev/acme-prod/conveyor/conveyor:1",
    "config_file": "../examples/deploy.yaml",
    "landing_bucket": "acme-landing",
    "datasets": ["analytics"],
    "source_buckets": ["acme-exports"],
    "stage_secret_ids": ["s3-keys"],
    "batch_code_buckets": ["acme-code"],
    "dataflow_staging_buckets": ["acme-dataflow"],
    "batch_image_repositories": [{"location": "europe-west1", "name": "templates"}],
    "dataproc_enabled": True,
    "dataflow_enabled": True,
    "cloud_run_jobs_enabled": True,
    "datafusion_instance": {"name": "cdf", "region": "europe-west1", "rbac": True},
    "console_domain": "conveyor.example.com",
    "console_users": ["group:data-eng@example.com"],
    "console_operators": ["group:data-ops@example.com"],
    "alerts_topic_enabled": True,
    "lineage_enabled": True,
    "ssh_key_secret_ids": ["edge-key"],
    "postgres_url_secret_id": "runlog-postgres",
    "cloudsql_instances": ["acme-prod:europe-west1:runlog"],
    "manual_invokers": ["group:data-ops@example.com"],
    "operators": ["group:data-ops@example.com"],
    "message_pipelines": [{"pipeline": "issues", "topic": "mobile-app-issues", "table": "analytics.issues"}],
}
EVERY_FEATURE = {
    "dataproc", "dataflow", "datafusion", "datafusion_rbac", "console", "alerts_topic", "postgres",
    "cloudsql", "ssh", "stage_secrets", "source_buckets", "code_buckets", "dataflow_staging",
    "batch_images", "operators", "manual_invokers", "batch_account", "lineage", "cloud_run_jobs",
    "console_actions",
}
DEFAULTS: dict[str, Any] = {
    "project_id": PROJECT,
    "region": "europe-west1",
    "image": "europe-west1-docker.pkg.dev/acme-prod/conveyor/conveyor:1",
    "config_file": "../examples/deploy.yaml",
    "landing_bucket": "acme-landing",
}
SCENARIOS = {"everything": (EVERYTHING, EVERY_FEATURE), "defaults": (DEFAULTS, set())}
FACTS = {
    "project_number": NUMBER,
    "service_agents": {
        "pubsub.googleapis.com": f"service-{NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com",
        "iap.googleapis.com": f"service-{NUMBER}@gcp-sa-iap.iam.gserviceaccount.com",
    },
}

# Where each IAM member resource grants, by its arguments.
IAM_RESOURCES = {
    "google_project_iam_member": ("project", "project"),
    "google_storage_bucket_iam_member": ("bucket", "bucket"),
    "google_bigquery_dataset_iam_member": ("dataset", "dataset_id"),
    "google_pubsub_topic_iam_member": ("topic", "topic"),
    "google_pubsub_subscription_iam_member": ("subscription", "subscription"),
    "google_secret_manager_secret_iam_member": ("secret", "secret_id"),
    "google_service_account_iam_member": ("service_account", "service_account_id"),
    "google_data_fusion_instance_iam_member": ("datafusion", "name"),
    "google_cloud_run_v2_service_iam_member": ("run", "name"),
    "google_artifact_registry_repository_iam_member": ("repository", "repository"),
    "google_iap_web_backend_service_iam_member": ("iap", "web_backend_service"),
}


@dataclass(frozen=True)
class Binding:
    member: str
    role: str
    kind: str
    name: str
    condition: str  # the IAM condition's expression, "" when none
    address: str


def last_segment(v: str) -> str:
    return v.rsplit("/", 1)[-1]


def bindings(ev: tf_eval.Evaluation) -> list[Binding]:
    out = []
    for inst in ev.all_instances():
        if inst.type not in IAM_RESOURCES:
            continue
        kind, arg = IAM_RESOURCES[inst.type]
        args = inst.args()
        name = args[arg]
        if kind in ("topic", "subscription", "secret", "service_account", "run", "repository"):
            name = last_segment(name)
        conditions = inst.blocks("condition")
        out.append(Binding(args["member"], args["role"], kind, name, conditions[0]["expression"] if conditions else "", inst.address))
    return out


def custom_roles(ev: tf_eval.Evaluation) -> dict[str, list[str]]:
    return {
        f"projects/{PROJECT}/roles/{i.args()['role_id']}": i.args()["permissions"]
        for i in ev.all_instances()
        if i.type == "google_project_iam_custom_role"
    }


def accounts(inputs: dict[str, Any], ev: tf_eval.Evaluation) -> dict[str, list[str]]:
    prefix = inputs.get("name_prefix", "conveyor")
    sa = lambda n: f"serviceAccount:{prefix}-{n}@{PROJECT}.iam.gserviceaccount.com"  # noqa: E731
    out = {f: [sa(f)] for f in ("stage", "load", "submit", "poll", "log", "console", "invoker", "batch")}
    out["operator"] = list(inputs.get("operators", []))
    out["manual_invoker"] = list(inputs.get("manual_invokers", []))
    out["console_user"] = list(inputs.get("console_users", []))
    out["pubsub_agent"] = [f"serviceAccount:service-{NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"]
    out["gcs_agent"] = [f"serviceAccount:service-{NUMBER}@gs-project-accounts.iam.gserviceaccount.com"]
    out["iap_agent"] = [f"serviceAccount:service-{NUMBER}@gcp-sa-iap.iam.gserviceaccount.com"]
    return out


def scopes(inputs: dict[str, Any], ev: tf_eval.Evaluation) -> dict[str, list[tuple[str, str]]]:
    """Each scope of the contract, as the (kind, name) resources it means in this scenario."""
    prefix = inputs.get("name_prefix", "conveyor")
    mod = ev.child("conveyor")
    v = mod.variables
    push = [i.args()["name"] for i in mod.instances("google_pubsub_subscription", "push")]
    messages = [i.args()["name"] for i in mod.instances("google_pubsub_subscription", "message")]
    df = v.get("datafusion_instance")
    return {
        "project": [("project", PROJECT)],
        "bucket:landing": [("bucket", inputs["landing_bucket"])],
        "bucket:source": [("bucket", b) for b in v["source_buckets"]],
        "bucket:code": [("bucket", b) for b in v["batch_code_buckets"]],
        "bucket:dataflow_staging": [("bucket", b) for b in v.get("dataflow_staging_buckets", [])],
        "dataset:run_log": [("dataset", v["run_log_dataset"])],
        "dataset:data": [("dataset", d) for d in v["datasets"]],
        "topic:events": [("topic", f"{prefix}-events")],
        "topic:gcs_notifications": [("topic", f"{prefix}-gcs-notifications")],
        "topic:alerts": [("topic", f"{prefix}-alerts")],
        "topic:dead_letter": [("topic", f"{prefix}-events-dead-letter")],
        "topic:messages_dead_letter": [("topic", f"{prefix}-messages-dead-letter")],
        "subscription:dead_letter": [("subscription", f"{prefix}-events-dead-letter")],
        "subscription:push": [("subscription", s) for s in push],
        "subscription:messages": [("subscription", s) for s in messages],
        "secret:config": [("secret", f"{prefix}-config")],
        "secret:stage": [("secret", s) for s in v["stage_secret_ids"]],
        "secret:ssh": [("secret", s) for s in v["ssh_key_secret_ids"]],
        "secret:postgres": [("secret", v["postgres_url_secret_id"])] if v["postgres_url_secret_id"] else [],
        "service_account:batch": [("service_account", f"{prefix}-batch@{PROJECT}.iam.gserviceaccount.com")],
        "service_account:invoker": [("service_account", f"{prefix}-invoker@{PROJECT}.iam.gserviceaccount.com")],
        "datafusion:instance": [("datafusion", df["name"])] if df else [],
        "run:functions": [("run", f"{prefix}-{f}") for f in ("stage", "load", "submit", "poll", "log")],
        "run:manual": [("run", f"{prefix}-{f}") for f in ("stage", "submit")],
        "run:console": [("run", f"{prefix}-console")],
        "run:submit": [("run", f"{prefix}-submit")],
        "repository:batch_images": [("repository", r["name"]) for r in v.get("batch_image_repositories", [])],
        # Cloud SQL's IAM resource name: projects/P/instances/I (from PROJECT:REGION:INSTANCE).
        "cloudsql:instances": [
            ("cloudsql", f"projects/{i.split(':')[0]}/instances/{i.split(':')[2]}") for i in v["cloudsql_instances"]
        ],
        "iap:console": [("iap", f"{prefix}-console")],
    }


def covers(b: Binding, kind: str, name: str) -> bool:
    """Whether binding `b` applies to the resource (kind, name): granted on it, or on the
    project (everything in it inherits), limited by the binding's condition."""
    if b.kind == "project":
        if b.condition:
            return name in b.condition
        return True
    return b.kind == kind and b.name == name and not b.condition


def check(root: Path, contract: dict[str, Any], roles: dict[str, Any], scenario: str) -> tuple[list[str], int]:
    inputs, features = SCENARIOS[scenario]
    ev = tf_eval.evaluate(root, inputs, FACTS)
    found: list[str] = []
    all_bindings = bindings(ev)
    role_perms = {r: set(v["permissions"]) for r, v in roles.items()}
    role_perms.update({r: set(p) for r, p in custom_roles(ev).items()})
    for b in all_bindings:
        if b.role not in role_perms:
            found.append(f"{scenario}: {b.address} grants {b.role}, which infra/permissions/roles.json does not list (add it, with its permissions)")
    members = accounts(inputs, ev)
    where = scopes(inputs, ev)
    methods = {m["id"]: m for m in contract["method"]}
    # (member, resource) -> permissions its calls need there
    needed: dict[tuple[str, str, str], set[str]] = {}
    checked = 0
    for call in contract["call"]:
        if call.get("when") and call["when"] not in features:
            continue
        method = methods[call["method"]]
        perms = call.get("permissions", method["permissions"])
        resources = where[call["on"]]
        for account in call["account"]:
            for member in members[account]:
                for kind, name in resources:
                    for perm in perms:
                        needed.setdefault((member, kind, name), set()).add(perm)
                        checked += 1
                        if not any(b.member == member and perm in role_perms.get(b.role, set()) and covers(b, kind, name) for b in all_bindings):
                            found.append(
                                f"{scenario}: under-grant: {account} makes {call['method']} on {kind} {name} "
                                f"({call['by']}) and needs {perm}, which none of its roles there grants"
                            )
    justified = {(j["account"], j["role"], j["on"]) for j in contract.get("justified", [])}
    member_account = {m: a for a, ms in members.items() for m in ms}
    for b in all_bindings:
        account = member_account.get(b.member)
        if account is None:
            found.append(f"{scenario}: {b.address} grants {b.role} to {b.member}, no account of the contract")
            continue
        grants = role_perms.get(b.role, set())
        # A binding is needed where it was made: a project-wide one by calls on the project (or,
        # with a condition, on the resource it names), any other by calls on its resource.
        used = any(
            m == b.member and grants & perms and (
                (b.kind, b.name) == (kind, name) and not b.condition
                or (b.kind == "project" and bool(b.condition) and covers(b, kind, name))
            )
            for (m, kind, name), perms in needed.items()
        )
        why = any(
            ja == account and jr == b.role and (b.kind, b.name) in where.get(jon, [])
            for ja, jr, jon in justified
        )
        if not used and not why:
            found.append(f"{scenario}: over-grant: {b.address} gives {account} {b.role} on {b.kind} {b.name}, which no call of {account} needs there")
    return found, checked


def wire_kinds(repo: Path) -> set[str]:
    """The request kinds the Google adapters can send, as the wire contract lists them
    (shared/contract/src/kinds.rs: string literals, and the resumable upload's chunk)."""
    text = (repo / "shared/contract/src/kinds.rs").read_text()
    body = text[text.index("pub const KINDS"):]
    body = body[: body.index("];")]
    kinds = set(re.findall(r'^\s*"([^"]+)",', body, re.M))
    if "crate::check::UPLOAD_CHUNK" in body:
        check = (repo / "shared/contract/src/check.rs").read_text()
        kinds |= set(re.findall(r'pub\(crate\) const UPLOAD_CHUNK: &str = "([^"]+)";', check))
    return kinds


def uncovered_wire_kinds(repo: Path, contract: dict[str, Any]) -> list[str]:
    """Every request kind of the wire contract needs a permission entry here: a call the adapters
    can make that this contract does not know is a grant nobody checked."""
    covered = {k for m in contract["method"] for k in m.get("wire", [])}
    kinds = wire_kinds(repo)
    out = [f"contract: the wire contract's request kind {k!r} is covered by no [[method]] (add it to a method's `wire`)" for k in sorted(kinds - covered)]
    out += [f"contract: `wire` names {k!r}, which is not a request kind of shared/contract/src/kinds.rs" for k in sorted(covered - kinds)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent / "infra")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    contract = tomllib.loads((args.root / "permissions/contract.toml").read_text())
    roles = json.loads((args.root / "permissions/roles.json").read_text())["roles"]
    methods = {m["id"] for m in contract["method"]}
    problems = [f"contract: call {c['method']!r} names no [[method]]" for c in contract["call"] if c["method"] not in methods]
    problems += uncovered_wire_kinds(args.root.parent, contract)
    if problems:
        print("\n".join(problems))
        return 1
    total = 0
    for scenario in SCENARIOS:
        found, checked = check(args.root, contract, roles, scenario)
        problems += found
        total += checked
    for p in problems:
        print(p)
    print(
        f"permissions contract: {len(contract['call'])} calls of {len(methods)} request kinds, "
        f"{total} (account, resource, permission) checks in {len(SCENARIOS)} scenarios; {len(problems)} finding(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
