# Seed 000's on-prem side: the SSH engine's private keys (`engine: ssh`, `key_secret`) and the
# run log's PostgreSQL (Cloud SQL) sink (`run_log.postgres`). Secrets are read by exactly the
# functions that need them: the keys by submit and poll, the connection string by log.

variable "ssh_key_secret_ids" {
  description = "Secret Manager secret ids (in this project) holding the private keys that pipelines' `engine: ssh` batches name as `key_secret`: submit and poll get roles/secretmanager.secretAccessor on each and on no other secret. The on-prem host must be reachable from Cloud Run (Direct VPC egress or a connector, and a VPN or Interconnect to the site): see `vpc_egress`."
  type        = list(string)
  default     = []
}

variable "postgres_url_secret_id" {
  description = "Secret Manager secret id (in this project) holding the connection string of the `run_log.postgres` sink, its `url_secret`: the log function gets roles/secretmanager.secretAccessor on it. Null when no pipeline file names a PostgreSQL sink."
  type        = string
  default     = null
}

variable "cloudsql_instances" {
  description = "Cloud SQL instances (`PROJECT:REGION:INSTANCE`) the log function connects to through Cloud Run's built-in Cloud SQL connection (the Cloud SQL Auth Proxy, as a Unix socket under /cloudsql): the connection string then reads `postgresql://USER:PASSWORD@/DB?host=/cloudsql/PROJECT:REGION:INSTANCE`. The log function gets roles/cloudsql.client, limited to each instance by an IAM condition. Empty for a connection over private IP with TLS."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for i in var.cloudsql_instances : can(regex("^[^:]+:[^:]+:[^:]+$", i))])
    error_message = "cloudsql_instances are connection names PROJECT:REGION:INSTANCE."
  }
}

variable "vpc_egress" {
  description = "Direct VPC egress of the functions that reach a private network (submit and poll for SSH hosts, log for Cloud SQL over private IP): `{ network, subnetwork }` names; null keeps the default egress (public internet only)."
  type = object({
    network    = string
    subnetwork = string
  })
  default = null
}

locals {
  # Environment variables of single functions, over `local.env`.
  function_env = {
    log = merge(var.alerts_topic_enabled ? { CONVEYOR_ALERTS_TOPIC = google_pubsub_topic.alerts[0].id } : {}, local.lineage_env)
    # The max_active_runs slots and the submit claims (_conveyor/slots/, _conveyor/claims/).
    submit = { CONVEYOR_STATE_BUCKET = local.landing_bucket }
    stage  = local.lineage_env
    poll   = { CONVEYOR_TICK_BUDGET = "${var.poll_tick_budget_seconds}s", CONVEYOR_STATE_BUCKET = local.landing_bucket }
  }
  # The functions that reach private networks, when `vpc_egress` is set.
  private_egress = var.vpc_egress == null ? toset([]) : toset(["submit", "poll", "log"])

  secret_grants = merge(
    { for pair in setproduct(["submit", "poll"], var.ssh_key_secret_ids) : "${pair[0]}-ssh-${pair[1]}" => { function = pair[0], secret = pair[1] } },
    var.postgres_url_secret_id == null ? {} : { "log-postgres" = { function = "log", secret = var.postgres_url_secret_id } },
  )
}

resource "google_secret_manager_secret_iam_member" "onprem" {
  for_each = local.secret_grants

  project   = var.project_id
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function[each.value.function].member
}

# roles/cloudsql.client is granted on projects only; an IAM condition limits each grant to one
# of `cloudsql_instances` (Cloud SQL's resource name `projects/P/instances/I`).
resource "google_project_iam_member" "log_cloudsql_client" {
  for_each = toset(var.cloudsql_instances)

  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = google_service_account.function["log"].member

  condition {
    title       = "cloudsql-${split(":", each.key)[2]}"
    description = "The log function's PostgreSQL sink, only this instance."
    expression  = "resource.name == \"projects/${split(":", each.key)[0]}/instances/${split(":", each.key)[2]}\""
  }
}
