# Conveyor on Google Cloud: five Cloud Run services (one image), chained by CloudEvents on a
# Pub/Sub topic, started by object arrivals and Cloud Scheduler, logging to BigQuery.
#
# Layout: main.tf (shared values), iam.tf (service accounts and every grant), run.tf (the
# services and their configuration), pubsub.tf (topics, push subscriptions, dead letters),
# storage.tf (landing bucket and its notification), bigquery.tf (datasets, run log, view),
# scheduler.tf (pipeline schedules and the poll tick), registry.tf (image repository).

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  prefix            = var.name_prefix
  bigquery_location = coalesce(var.bigquery_location, var.region)
  scheduler_region  = coalesce(var.scheduler_region, var.region)
  labels            = merge(var.labels, { app = "conveyor" })

  # Cloud Run settings per function; `var.functions` overrides any of them.
  function_defaults = {
    stage  = { concurrency = 4, cpu = "1", memory = "1Gi", min_instances = 0, max_instances = 5, timeout_seconds = 900 }
    load   = { concurrency = 8, cpu = "1", memory = "512Mi", min_instances = 0, max_instances = 10, timeout_seconds = 600 }
    submit = { concurrency = 16, cpu = "1", memory = "512Mi", min_instances = 0, max_instances = 5, timeout_seconds = 300 }
    poll   = { concurrency = 8, cpu = "1", memory = "512Mi", min_instances = 0, max_instances = 3, timeout_seconds = 300 }
    log    = { concurrency = 40, cpu = "1", memory = "256Mi", min_instances = 0, max_instances = 10, timeout_seconds = 60 }
  }
  functions = {
    for name, defaults in local.function_defaults : name => merge(
      defaults,
      { for k, v in try(var.functions[name], {}) : k => v if v != null },
    )
  }

  # The event types each function consumes: `conveyor::steps::subscriptions`, copied to
  # subscriptions.json and kept equal by the test `terraform_push_filters_follow_the_steps_subscriptions`.
  consumes    = jsondecode(file("${path.module}/subscriptions.json"))
  event_types = distinct(flatten(values(local.consumes)))
  # One push subscription per consuming function, filtered on the `ce-type` attribute. Types
  # are reverse-DNS (`dev.conveyor.table.loaded`); for one release the filters also accept the
  # legacy names (`conveyor.table.loaded`) that a previous release's instances publish during
  # a deployment. A function that takes every type (log) filters on the two prefixes; where
  # the equalities for both names would pass Pub/Sub's 256-byte filter limit (submit), the
  # legacy names are matched by their prefix, and the step acknowledges a legacy event of a
  # type it does not consume (`conveyor_core::http`) instead of rejecting it.
  exact_filters = {
    for step, types in local.consumes : step => join(" OR ", concat(
      [for t in types : "attributes.ce-type = \"${t}\""],
      [for t in types : "attributes.ce-type = \"${trimprefix(t, "dev.")}\""],
    ))
  }
  push_filters = {
    for step, types in local.consumes : step => (
      length(setsubtract(local.event_types, types)) == 0
      ? "hasPrefix(attributes.ce-type, \"dev.conveyor.\") OR hasPrefix(attributes.ce-type, \"conveyor.\")"
      : length(local.exact_filters[step]) <= 256 ? local.exact_filters[step]
      : join(" OR ", concat(
        [for t in types : "attributes.ce-type = \"${t}\""],
        ["hasPrefix(attributes.ce-type, \"conveyor.\")"],
      ))
    ) if length(types) > 0
  }

  # The audience of each function's callers' OIDC tokens: its deterministic URL, also a
  # custom audience of the service (so Cloud Run's IAM and the function's own check agree,
  # and the service need not know its generated URL).
  function_audience = {
    for f in keys(local.function_defaults) :
    f => "https://${local.prefix}-${f}-${data.google_project.this.number}.${var.region}.run.app"
  }
  # The functions' own check of their callers (`CONVEYOR_AUTH_*`): Pub/Sub push and Cloud
  # Scheduler call as the invoker account; `var.callers` adds operators; submit also admits
  # the console's account when it offers actions (`console_operators`). Every service requires
  # authentication (no allUsers invoker anywhere in this module), so Cloud Run has verified each
  # token's signature and forwards it with the signature removed: the functions check its
  # claims (CONVEYOR_AUTH_MODE=cloud-run), as a signature check would refuse every call.
  auth_env = {
    for f in keys(local.function_defaults) : f => var.verify_callers ? {
      CONVEYOR_AUTH_AUDIENCES = local.function_audience[f]
      CONVEYOR_AUTH_ALLOWED = join(",", concat(
        [google_service_account.invoker.email], var.callers,
        f == "submit" && local.console_actions ? [google_service_account.console[0].email] : [],
      ))
      CONVEYOR_AUTH_MODE = "cloud-run"
    } : {}
  }

  landing_bucket = var.create_landing_bucket ? google_storage_bucket.landing[0].name : var.landing_bucket
  datasets       = toset(concat([var.run_log_dataset], var.datasets))

  # The Pub/Sub service agent: it signs the pushes' OIDC tokens, dead-letters and writes the
  # native subscriptions. Enabling the API does not always create it (projects whose API was
  # enabled long ago, or by an organization policy); google_project_service_identity does.
  pubsub_agent = google_project_service_identity.pubsub.member

  # Pub/Sub's retry policy waits from `retry_minimum_backoff`, doubling, up to
  # `retry_maximum_backoff` between deliveries. The deliveries that cover
  # `delivery_outage_window` (a backend down that long loses no event: Pub/Sub keeps trying):
  # the first count whose waits add up to the window.
  backoff_min_s = tonumber(trimsuffix(var.retry_minimum_backoff, "s"))
  backoff_max_s = tonumber(trimsuffix(var.retry_maximum_backoff, "s"))
  retry_covers = {
    for n in range(5, 101) : tostring(n) => sum(concat([0], [
      for i in range(n - 1) : min(local.backoff_min_s * pow(2, i), local.backoff_max_s)
    ]))
  }
  attempts_for_window = min(concat([100], [
    for n in range(5, 101) : n if local.retry_covers[tostring(n)] >= var.delivery_outage_window_seconds
  ])...)
  max_delivery_attempts = coalesce(var.max_delivery_attempts, local.attempts_for_window)
}

resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"
}
