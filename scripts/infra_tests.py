#!/usr/bin/env python3
"""Plan-free tests of the Terraform under infra/: what a first `terraform apply` meets.

Each test evaluates the configuration with scripts/tf_eval.py for a deployment's inputs (no
provider, no project) and checks a property a first deployment depends on: the functions'
caller check behind Cloud Run, the waits for what Google makes visible late, the service
agents, the grants (the permissions contract), delivery timing and the inputs refused.

Usage: infra_tests.py [--root infra] [unittest options]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tomllib
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import permissions_contract  # noqa: E402
import tf_eval  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent / "infra"
FACTS = permissions_contract.FACTS


def inputs(**over) -> dict:
    base = copy.deepcopy(permissions_contract.DEFAULTS)
    base["schedules"] = json.loads((ROOT / "schedules.auto.tfvars.json").read_text())["schedules"]
    base.update(over)
    return base


def evaluate(**over) -> tf_eval.Evaluation:
    return tf_eval.evaluate(ROOT, inputs(**over), FACTS)


def module(**over) -> tf_eval.Evaluation:
    return evaluate(**over).child("conveyor")


def one(ev: tf_eval.Evaluation, rtype: str, name: str, key=None) -> tf_eval.Instance:
    for i in ev.instances(rtype, name):
        if i.key == key:
            return i
    raise AssertionError(f"no {rtype}.{name}[{key!r}]")


def refusals(**over) -> list[str]:
    """The validation errors and failed preconditions of a deployment's inputs."""
    ev = evaluate(**over)
    out = [m for _, m in ev.validation_failures]
    mod = ev.child("conveyor")
    out += [m for _, m in mod.validation_failures]
    for inst in mod.all_instances():
        out += [msg for ok, msg in inst.preconditions() if ok is False]
    return out


class CallersBehindCloudRun(unittest.TestCase):
    """Item 1: Cloud Run verifies the tokens; the functions check their claims."""

    def test_every_function_checks_claims_of_tokens_cloud_run_verified(self):
        mod = module()
        for f in ("stage", "load", "submit", "poll", "log"):
            service = one(mod, "google_cloud_run_v2_service", "function", f)
            env = {e["name"]: e["value"] for e in service.blocks("template")[0]["containers"][0]["env"]}
            self.assertEqual(env.get("CONVEYOR_AUTH_MODE"), "cloud-run", f)
            self.assertIn(f"conveyor-{f}", env["CONVEYOR_AUTH_AUDIENCES"])

    def test_no_service_admits_unauthenticated_calls(self):
        # The claims-only mode is sound only while Cloud Run's IAM checks every call.
        mod = module(console_domain="c.example.com", manual_invokers=["user:a@example.com"])
        for inst in mod.all_instances():
            if inst.type.endswith("_iam_member") or inst.type.endswith("_iam_binding"):
                self.assertNotIn(inst.args().get("member"), ("allUsers", "allAuthenticatedUsers"), inst.address)


class WaitsForGoogle(unittest.TestCase):
    """Items 2 and 7: what Google makes visible late is waited for."""

    def test_the_failure_alert_waits_ten_minutes_for_its_new_metric(self):
        mod = module()
        policy = one(mod, "google_monitoring_alert_policy", "run_failures", 0)
        self.assertIn("time_sleep.metric", policy.depends_on())
        wait = one(mod, "time_sleep", "metric", 0).args()
        self.assertGreaterEqual(tf_eval.parse_duration(wait["create_duration"]), 600)
        self.assertIn("metric", wait["triggers"], "a replaced metric is waited for again")
        # The metric names the log service by name: it (and the wait) need not wait for it.
        metric = one(mod, "google_logging_metric", "run_failures", 0).block
        self.assertNotIn("google_cloud_run_v2_service", tf_eval.tree_text(metric.attributes["filter"]))

    def test_services_and_the_notification_wait_for_the_grants_they_need(self):
        mod = module(console_domain="c.example.com")
        sleep = one(mod, "time_sleep", "iam_propagation").args()
        self.assertGreaterEqual(tf_eval.parse_duration(sleep["create_duration"]), 60)
        services = {i.key for i in mod.instances("google_cloud_run_v2_service", "function")}
        self.assertEqual(services, {"stage", "load", "submit", "poll", "log", "console"})
        for rtype, name in [
            ("google_cloud_run_v2_service", "function"),
            ("google_storage_notification", "landing"),
        ]:
            inst = mod.instances(rtype, name)[0]
            self.assertIn("time_sleep.iam_propagation", inst.depends_on(), f"{rtype}.{name}")
        grants = tf_eval.tree_text(one(mod, "time_sleep", "iam_propagation").block.attributes["triggers"])
        for granted in ("config_reader", "console_config_reader", "gcs_publisher"):
            self.assertIn(granted, grants)

    def test_the_iap_and_pubsub_service_agents_are_created_before_their_grants(self):
        mod = module(console_domain="c.example.com")
        services = {i.args()["service"] for i in mod.all_instances(recursive=False) if i.type == "google_project_service_identity"}
        self.assertEqual(services, {"iap.googleapis.com", "pubsub.googleapis.com"})
        invoker = one(mod, "google_cloud_run_v2_service_iam_member", "console_iap_invoker", 0)
        self.assertIn("google_project_service_identity", tf_eval.tree_text(invoker.block.attributes["member"]))
        self.assertIn("time_sleep.service_agents", invoker.depends_on())
        token = one(mod, "google_service_account_iam_member", "pubsub_token_creator")
        self.assertIn("time_sleep.service_agents", token.depends_on())
        self.assertEqual(token.args()["member"], f"serviceAccount:{FACTS['service_agents']['pubsub.googleapis.com']}")


class Grants(unittest.TestCase):
    """Items 4 and 8: the permissions contract, and that it catches what it should."""

    @classmethod
    def setUpClass(cls):
        cls.contract = tomllib.loads((ROOT / "permissions/contract.toml").read_text())
        cls.roles = json.loads((ROOT / "permissions/roles.json").read_text())["roles"]

    def test_every_call_is_granted_and_every_grant_is_used(self):
        for scenario in permissions_contract.SCENARIOS:
            found, checked = permissions_contract.check(ROOT, self.contract, self.roles, scenario)
            self.assertEqual(found, [], scenario)
            self.assertGreater(checked, 50)

    def test_every_request_kind_of_the_wire_contract_has_its_permissions(self):
        self.assertEqual(permissions_contract.uncovered_wire_kinds(ROOT.parent, self.contract), [])
        kinds = permissions_contract.wire_kinds(ROOT.parent)
        self.assertIn("bigquery.jobs.insert", kinds)
        self.assertIn("storage.objects.insert (resumable upload chunk)", kinds)
        # A kind the adapters send that no method covers is a finding.
        planted = {"method": [dict(m) for m in self.contract["method"]]}
        for m in planted["method"]:
            m["wire"] = [k for k in m.get("wire", []) if k != "bigquery.jobs.cancel"]
        found = permissions_contract.uncovered_wire_kinds(ROOT.parent, planted)
        self.assertTrue(any("'bigquery.jobs.cancel' is covered by no [[method]]" in f for f in found), found)

    def test_on_failure_notices_grant_the_log_function_their_topics_and_secrets(self):
        import tempfile

        import yaml

        doc = yaml.safe_load((ROOT.parent / "examples/deploy.yaml").read_text())
        doc["pipelines"][0]["on_failure"] = [
            {"publish": "sales-failures"},
            {"webhook": {"url_secret": "projects/acme-prod/secrets/chat-webhook"}},
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump(doc, f)
            f.flush()
            mod = module(config_file=f.name)
            topic = one(mod, "google_pubsub_topic_iam_member", "on_failure_publisher", "projects/acme-prod/topics/sales-failures")
            secret = one(mod, "google_secret_manager_secret_iam_member", "on_failure_webhook", "projects/acme-prod/secrets/chat-webhook")
        for grant, role in ((topic, "roles/pubsub.publisher"), (secret, "roles/secretmanager.secretAccessor")):
            self.assertEqual(grant.args()["role"], role)
            self.assertTrue(grant.args()["member"].startswith("serviceAccount:conveyor-log@"), grant.args())
        # Without on_failure: no such grant.
        self.assertEqual(list(module().instances("google_pubsub_topic_iam_member", "on_failure_publisher")), [])

    def test_a_removed_grant_is_an_under_grant(self):
        real = permissions_contract.bindings

        def without_load_landing(ev):
            return [b for b in real(ev) if not (b.member.startswith("serviceAccount:conveyor-load@") and b.kind == "bucket")]

        permissions_contract.bindings = without_load_landing
        try:
            found, _ = permissions_contract.check(ROOT, self.contract, self.roles, "defaults")
        finally:
            permissions_contract.bindings = real
        self.assertTrue(any("under-grant: load makes storage.objects.insert on bucket acme-landing" in f for f in found), found)

    def test_an_unused_grant_is_an_over_grant(self):
        real = permissions_contract.bindings

        def with_extra(ev):
            extra = permissions_contract.Binding(
                "serviceAccount:conveyor-log@acme-prod.iam.gserviceaccount.com", "roles/storage.objectViewer", "bucket", "acme-landing", "", "planted"
            )
            return real(ev) + [extra]

        permissions_contract.bindings = with_extra
        try:
            found, _ = permissions_contract.check(ROOT, self.contract, self.roles, "defaults")
        finally:
            permissions_contract.bindings = real
        self.assertTrue(any(f.startswith("defaults: over-grant: planted") for f in found), found)


class Delivery(unittest.TestCase):
    """Items 5 and 6: timing and what reaches the functions."""

    def test_a_push_timeout_above_the_ack_deadline_is_refused(self):
        msgs = refusals(functions={"load": {"timeout_seconds": 900}})
        self.assertTrue(any("ack deadline" in m for m in msgs), msgs)
        self.assertEqual(refusals(functions={"stage": {"timeout_seconds": 1200}}), [])

    def test_dead_lettering_waits_out_the_documented_outage_window(self):
        mod = module()
        window = mod.variables["delivery_outage_window_seconds"]
        self.assertGreaterEqual(window, 6 * 3600)
        subscriptions = mod.instances("google_pubsub_subscription", "push")
        self.assertIn("load-objects", {s.key for s in subscriptions})
        for sub in subscriptions:
            args = sub.args()
            retry = sub.blocks("retry_policy")[0]
            attempts = sub.blocks("dead_letter_policy")[0]["max_delivery_attempts"]
            lo = tf_eval.parse_duration(retry["minimum_backoff"])
            hi = tf_eval.parse_duration(retry["maximum_backoff"])
            covered = sum(min(lo * 2**i, hi) for i in range(attempts - 1))
            self.assertGreaterEqual(covered, window, f"{args['name']}: {attempts} deliveries cover {covered} s")
        msgs = refusals(max_delivery_attempts=10)
        self.assertTrue(any("delivery_outage_window_seconds" in m for m in msgs), msgs)

    def test_the_poll_tick_ends_before_the_next_one(self):
        mod = module()
        tick = one(mod, "google_cloud_scheduler_job", "poll_tick").args()
        self.assertEqual(tick["schedule"], "* * * * *")
        self.assertLessEqual(tf_eval.parse_duration(tick["attempt_deadline"]), 60)
        poll = one(mod, "google_cloud_run_v2_service", "function", "poll")
        env = {e["name"]: e["value"] for e in poll.blocks("template")[0]["containers"][0]["env"]}
        self.assertLess(tf_eval.parse_duration(env["CONVEYOR_TICK_BUDGET"]), 60)
        self.assertTrue(any("overlap" in m for m in refusals(poll_tick_budget_seconds=90)))

    def test_conveyor_state_writes_are_not_pushed_to_load(self):
        sub = one(module(), "google_pubsub_subscription", "push", "load-objects").args()
        self.assertEqual(sub["topic"], "projects/acme-prod/topics/conveyor-gcs-notifications")
        self.assertEqual(sub.get("filter"), 'NOT hasPrefix(attributes.objectId, "_conveyor/")')

    def test_staged_objects_reach_load_by_their_arrival_only(self):
        push = module().instances("google_pubsub_subscription", "push")
        on_events = {i.key for i in push if i.args()["topic"] == "projects/acme-prod/topics/conveyor-events"}
        self.assertNotIn("load", on_events, "load also gets dev.conveyor.object.staged: each staged object twice")
        self.assertEqual(on_events, {"submit", "poll", "log"})
        self.assertEqual({i.key for i in push} - on_events, {"load-objects"})


class Upgrades(unittest.TestCase):
    """A subscription or service recreated loses its backlog or its revisions: one that moved
    (a `moved` block) keeps the name and the topic it had."""

    def test_moved_resources_keep_their_names_and_topics(self):
        moved = {}
        for tf in sorted((ROOT / "modules/conveyor").glob("*.tf")):
            for b in tf_eval.parse_file(tf):
                if b.type == "moved":
                    moved[tf_eval.tree_text(b.attributes["to"]).replace(" ", "")] = tf_eval.tree_text(b.attributes["from"]).replace(" ", "")
        topics = "projects/acme-prod/topics/"
        # Where each one stood in the previous release, and its name and topic there.
        before = {
            'google_pubsub_subscription.push["load-objects"]': (
                "google_pubsub_subscription.objects", {"name": "conveyor-load-objects", "topic": topics + "conveyor-gcs-notifications"}),
            'google_pubsub_subscription.dead_letter["events"]': (
                "google_pubsub_subscription.dead_letter", {"name": "conveyor-events-dead-letter", "topic": topics + "conveyor-events-dead-letter"}),
            'google_pubsub_subscription.dead_letter["messages"]': (
                "google_pubsub_subscription.messages_dead_letter[0]", {"name": "conveyor-messages-dead-letter", "topic": topics + "conveyor-messages-dead-letter"}),
            'google_cloud_run_v2_service.function["console"]': (
                "google_cloud_run_v2_service.console[0]", {"name": "conveyor-console"}),
        }
        self.assertEqual(set(moved), set(before))
        mod = module(
            message_pipelines=[{"pipeline": "issues", "topic": "mobile-app-issues", "table": "analytics.issues"}],
            console_domain="c.example.com",
        )
        for to, (source, kept) in before.items():
            self.assertEqual(moved[to], source, to)
            rtype, rest = to.split(".", 1)
            args = one(mod, rtype, rest.split("[")[0], to.split('"')[1]).args()
            self.assertEqual({k: args[k] for k in kept}, kept, to)


class Inputs(unittest.TestCase):
    """Item 7: defaults that work, and inputs that cannot work refused at plan."""

    def test_the_apis_of_the_whole_procedure_are_enabled(self):
        apis = {i.key for i in evaluate().instances("google_project_service", "api")}
        for api in ("iamcredentials.googleapis.com", "cloudbuild.googleapis.com", "cloudresourcemanager.googleapis.com",
                    "artifactregistry.googleapis.com", "run.googleapis.com", "serviceusage.googleapis.com"):
            self.assertIn(api, apis)
        console = {i.key for i in evaluate(console_domain="c.example.com").instances("google_project_service", "api")}
        self.assertTrue({"iap.googleapis.com", "compute.googleapis.com"} <= console)

    def test_the_pipeline_file_is_required_and_must_be_written_for_google_cloud(self):
        self.assertNotIn("default", tf_eval.Module.load(ROOT).variables["config_file"].attributes)
        msgs = refusals(config_file="../examples/conveyor.yaml", landing_bucket="landing")
        self.assertTrue(any("engine: local" in m for m in msgs), msgs)
        self.assertTrue(any("local path" in m for m in msgs), msgs)
        self.assertEqual(refusals(), [], "examples/deploy.yaml deploys")
        msgs = refusals(landing_bucket="other-landing")
        self.assertTrue(any("only the landing bucket other-landing" in m for m in msgs), msgs)

    def test_a_name_prefix_too_short_for_service_account_ids_is_refused(self):
        self.assertTrue(any("6 to 30" in m for m in refusals(name_prefix="a")))
        self.assertTrue(any("6 to 30" in m for m in refusals(name_prefix="ab-")))
        self.assertEqual(refusals(name_prefix="cv"), [])
        mod = module(name_prefix="cv")
        for sa in mod.instances("google_service_account", "function"):
            self.assertTrue(6 <= len(sa.args()["account_id"]) <= 30, sa.args()["account_id"])

    def test_bigquery_and_the_landing_bucket_must_be_in_compatible_locations(self):
        self.assertTrue(any("cannot load from a landing bucket" in m for m in refusals(bigquery_location="EU", region="europe-west2")))
        self.assertTrue(any("cannot load from a landing bucket" in m for m in refusals(bigquery_location="asia-northeast1", landing_bucket_location="ASIA")))
        self.assertEqual(refusals(bigquery_location="EU", region="europe-west1"), [])
        self.assertEqual(refusals(bigquery_location="US", region="asia-northeast1"), [])
        self.assertEqual(refusals(bigquery_location="europe-west2", region="europe-west2"), [])


def main() -> int:
    global ROOT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT)
    args, rest = parser.parse_known_args()
    ROOT = args.root.resolve()
    program = unittest.main(module=__name__, argv=[sys.argv[0], *rest], exit=False, verbosity=2)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
