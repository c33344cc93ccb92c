# Inputs of the Conveyor module. Every name that Google Cloud keeps globally or per project
# starts with `name_prefix` (default `conveyor`), so two deployments can share a project.

variable "project_id" {
  description = "The Google Cloud project that runs Conveyor: services, topics, datasets, jobs."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services, the Artifact Registry repository and (unless overridden) the landing bucket, BigQuery datasets and Cloud Scheduler jobs, e.g. `europe-west1`."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name: services `<prefix>-<function>`, topic `<prefix>-events`, service accounts `<prefix>-<function>`. 2 to 14 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen, so every service-account id (`<prefix>-log` to `<prefix>-invoker`) has Google's 6 to 30 characters."
  type        = string
  default     = "conveyor"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,12}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2 to 14 lowercase letters, digits or hyphens, start with a letter and end with a letter or digit: service-account ids (`<prefix>-log`, `<prefix>-invoker`) must have 6 to 30 characters."
  }
}

variable "image" {
  description = "The Conveyor container image (all five binaries), e.g. `europe-west1-docker.pkg.dev/PROJECT/conveyor/conveyor:1a2b3c4`. Each service runs its own binary from it through the container command."
  type        = string
}

variable "config_file" {
  description = "Path of the pipeline configuration file (YAML or JSON). Its content is stored as a Secret Manager secret version and mounted into every service at /etc/conveyor/conveyor.yaml (CONVEYOR_CONFIG); changing the file and applying rolls out a new revision. At most 64 KiB. It must be written for Google Cloud: no `engine: local` batch, no local stage source (`conveyor validate FILE --for gcp --landing-bucket BUCKET` checks all of it; these validations repeat the two it cannot do without)."
  type        = string

  validation {
    condition     = can(yamldecode(file(var.config_file)).pipelines) && length(file(var.config_file)) <= 65536
    error_message = "config_file must be a readable YAML or JSON pipeline file with `pipelines`, at most 64 KiB (a Secret Manager secret version's limit)."
  }

  validation {
    condition = alltrue([
      for p in try(yamldecode(file(var.config_file)).pipelines, []) : alltrue(concat(
        [try(p.batch.engine, "") != "local"],
        [for j in try(p.jobs, []) : try(j.engine, "") != "local"],
      ))
    ])
    error_message = "config_file has a batch with `engine: local`: that engine runs `sh` on the machine that submitted it (the embedded mode's), which the deployed functions cannot do. Use dataproc_serverless, dataproc_cluster, dataflow_flex, data_fusion, sql or ssh; `conveyor validate FILE --for gcp` names each one."
  }

  validation {
    condition = alltrue([
      for p in try(yamldecode(file(var.config_file)).pipelines, []) : try(p.stage, null) == null || (
        can(regex("^(s3|gs|https?)://", p.stage.source)) || try(!contains(keys(p.stage.source), "path"), false)
      )
    ])
    error_message = "config_file stages from a local path: deployed, it would resolve inside the container, which holds no data. Stage from gs://, s3:// or https:// sources; `conveyor validate FILE --for gcp` names each one."
  }
}

variable "functions" {
  description = "Per-function overrides of the Cloud Run settings, keyed by function (stage, load, submit, poll, log). Unset attributes keep the defaults: stage 4 requests/instance, 1 CPU, 1Gi, 0-5 instances, 900 s; load 8, 1, 512Mi, 0-10, 600 s; submit 16, 1, 512Mi, 0-5, 300 s; poll 8, 1, 512Mi, 0-3, 300 s; log 40, 1, 256Mi, 0-10, 60 s. The request timeout also sets the Pub/Sub ack deadline (at most 600 s)."
  type = map(object({
    concurrency     = optional(number)
    cpu             = optional(string)
    memory          = optional(string)
    min_instances   = optional(number)
    max_instances   = optional(number)
    timeout_seconds = optional(number)
  }))
  default = {}

  validation {
    condition     = length(setsubtract(keys(var.functions), ["stage", "load", "submit", "poll", "log"])) == 0
    error_message = "functions may only have the keys stage, load, submit, poll and log."
  }

  # A push subscription's ack deadline is at most 600 s: a longer request is redelivered while
  # it still runs. stage is started by Cloud Scheduler only, whose attempt deadline is 30 min.
  validation {
    condition = alltrue([
      for name, f in var.functions : f.timeout_seconds == null || (
        coalesce(f.timeout_seconds, 1) >= 1 && coalesce(f.timeout_seconds, 1) <= (name == "stage" ? 1800 : 600)
      )
    ])
    error_message = "functions.*.timeout_seconds must be 1 to 600 for load, submit, poll and log (a Pub/Sub push's ack deadline is at most 600 s: a longer request would be redelivered while it runs) and 1 to 1800 for stage (Cloud Scheduler's longest attempt)."
  }
}

variable "ingress" {
  description = "Cloud Run ingress of the services. `INGRESS_TRAFFIC_ALL` (default) lets operators call them with `curl` and an identity token; `INGRESS_TRAFFIC_INTERNAL_ONLY` admits only Pub/Sub, Cloud Scheduler and VPC traffic. Every request needs an OIDC token of an identity with roles/run.invoker either way: no service allows unauthenticated calls."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "manual_invokers" {
  description = "Members allowed to start pipelines by hand (`curl` with an identity token): they get roles/run.invoker on the stage and submit services only, e.g. `[\"group:data-ops@example.com\"]`."
  type        = list(string)
  default     = []
}

variable "log_filter" {
  description = "CONVEYOR_LOG of every service: a tracing filter such as `info` or `info,conveyor=debug`."
  type        = string
  default     = "info"
}

variable "extra_env" {
  description = "More environment variables for every service (e.g. CONVEYOR_DATAPROC_ENDPOINT). They cannot replace the ones the module sets: CONVEYOR_CONFIG, CONVEYOR_ADAPTERS, CONVEYOR_LOG_FORMAT, CONVEYOR_LOG, CONVEYOR_PROJECT, CONVEYOR_EVENTS_TOPIC, CONVEYOR_REGION, CONVEYOR_BIGQUERY_LOCATION."
  type        = map(string)
  default     = {}
}

variable "landing_bucket" {
  description = "Name of the landing bucket: where `stage` copies data and whose new objects start `load` (the `bucket` of the pipelines' stage and object triggers)."
  type        = string
}

variable "create_landing_bucket" {
  description = "Create the landing bucket (true) or use an existing one of that name (false). Either way the module grants bucket-level roles on it and adds the object-arrival notification."
  type        = bool
  default     = true
}

variable "landing_bucket_location" {
  description = "Location of a created landing bucket; null means `region`. Keep it compatible with `bigquery_location`: BigQuery loads from a colocated bucket."
  type        = string
  default     = null
}

variable "landing_noncurrent_days" {
  description = "Days a replaced or deleted object version is kept in a created landing bucket (versioning is on) before it is deleted."
  type        = number
  default     = 30
}

variable "landing_access_log_bucket" {
  description = "Bucket that receives usage logs of a created landing bucket; null turns usage logging off (Cloud Audit Logs still record data access when enabled for Cloud Storage)."
  type        = string
  default     = null
}

variable "landing_object_prefix" {
  description = "Only objects whose names start with this prefix start a load; null means every object of the landing bucket."
  type        = string
  default     = null
}

variable "source_buckets" {
  description = "Buckets that `stage` reads from (pipelines whose `stage.source` is a gs:// URL); stage gets roles/storage.objectViewer on each and nothing else."
  type        = list(string)
  default     = []
}

variable "stage_secret_ids" {
  description = "Secret Manager secret ids (in this project) that pipelines' `stage.source.s3.secret` name: stage gets roles/secretmanager.secretAccessor on each and on no other secret. The credentials never sit in the pipeline file."
  type        = list(string)
  default     = []
}

variable "bigquery_location" {
  description = "Location of the BigQuery datasets and of load jobs (CONVEYOR_BIGQUERY_LOCATION), e.g. `EU` or `europe-west1`; null means `region`."
  type        = string
  default     = null
}

variable "datasets" {
  description = "BigQuery datasets that pipelines load into (the dataset part of each `load.table`). They are created here; `load` gets roles/bigquery.dataEditor on each of them only."
  type        = list(string)
  default     = []
}

variable "run_log_dataset" {
  description = "Dataset of the run-log table (the dataset of `run_log.table` in the pipeline file); created here."
  type        = string
  default     = "conveyor"
}

variable "run_log_table" {
  description = "Name of the run-log table (the table of `run_log.table` in the pipeline file). The view `run_latest_status` is created beside it."
  type        = string
  default     = "run_log"
}

variable "deletion_protection" {
  description = "Protect the Cloud Run services and the run-log table and view from `terraform destroy`; set false to tear an environment down."
  type        = bool
  default     = true
}

variable "dataproc_enabled" {
  description = "Pipelines use the `dataproc_serverless` or `dataproc_cluster` batch engine: `submit` and `poll` get a custom role `<name_prefix>_dataproc_runner` on the project with only the permissions the engines use (create, get and cancel batches, jobs and ephemeral clusters; delete the clusters) and the batch runtime service account gets roles/dataproc.worker."
  type        = bool
  default     = false
}

variable "dataflow_enabled" {
  description = "Pipelines use the `dataflow_flex` batch engine: `submit` and `poll` get roles/dataflow.developer on the project and the batch runtime service account gets roles/dataflow.worker."
  type        = bool
  default     = false
}

variable "datafusion_instance" {
  description = "Cloud Data Fusion instance whose pipelines Conveyor starts (`data_fusion` batch engine), as `{ name, region, rbac }`; `submit` and `poll` get roles/datafusion.runner on that instance only (runtime access), and with `rbac = true` (an instance with role-based access control) also roles/datafusion.developer there, the narrowest predefined role that may start and stop pipelines (datafusion.pipelines.execute): Data Fusion RBAC takes no custom roles. Null when Data Fusion is not used."
  type = object({
    name   = string
    region = string
    rbac   = optional(bool, false)
  })
  default = null
}

variable "batch_service_account_email" {
  description = "Service account (in `project_id`) the batch jobs run as: the `service_account` of the pipelines' Dataproc and Dataflow batches. Null creates `<prefix>-batch` when an engine is enabled. `submit` and `poll` get roles/iam.serviceAccountUser on this account only, so they can start jobs as it."
  type        = string
  default     = null
}

variable "dataflow_staging_buckets" {
  description = "Buckets of the Dataflow jobs' `temp_location` and `staging_location`: the batch account (the workers and the flex template launcher) gets roles/storage.objectUser on each (it writes, reads, lists and deletes its files there)."
  type        = list(string)
  default     = []
}

variable "batch_image_repositories" {
  description = "Artifact Registry repositories (`{ location, name }`, in this project) holding flex template images or Dataproc custom containers: the batch account gets roles/artifactregistry.reader on each (the launcher VM pulls the template's image as it)."
  type = list(object({
    location = string
    name     = string
  }))
  default = []
}

variable "batch_code_buckets" {
  description = "Buckets holding the batches' code and templates (PySpark files, jars, Dataflow flex template specs): `submit`, `poll` and the batch runtime account get roles/storage.objectViewer on each."
  type        = list(string)
  default     = []
}

variable "schedules" {
  description = "Cloud Scheduler jobs for the pipelines, as printed by `conveyor schedules --tfvars` (one per active pipeline with `trigger.schedule`): name (the key; the job itself is named `<name_prefix>-<pipeline>`, so deployments with different prefixes share a project), pipeline, cron, time_zone, target (`stage` or `submit`) and the JSON body sent. Terraform creates, updates and deletes the jobs to match the list."
  type = list(object({
    name      = string
    pipeline  = string
    cron      = string
    time_zone = string
    target    = string
    body = object({
      pipeline = string
      trigger  = string
    })
  }))
  default = []

  validation {
    condition     = alltrue([for s in var.schedules : contains(["stage", "submit"], s.target)])
    error_message = "Every schedule's target must be `stage` or `submit`."
  }
}

variable "scheduler_region" {
  description = "Region of the Cloud Scheduler jobs (Cloud Scheduler is not offered in every region); null means `region`."
  type        = string
  default     = null
}

variable "poll_tick_schedule" {
  description = "Cron schedule of the poll tick that checks every open batch (`{\"tick\":true}` to `poll`), in UTC."
  type        = string
  default     = "* * * * *"
}

variable "retry_minimum_backoff" {
  description = "Pub/Sub push retry policy: the first redelivery delay after a 5xx or a timeout, in seconds (`10s`); each next delay doubles up to `retry_maximum_backoff`."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.retry_minimum_backoff)) && try(tonumber(trimsuffix(var.retry_minimum_backoff, "s")) <= 600, false)
    error_message = "retry_minimum_backoff must be seconds such as `10s`, at most `600s`."
  }
}

variable "retry_maximum_backoff" {
  description = "Pub/Sub push retry policy: the longest redelivery delay, in seconds, at most `600s`."
  type        = string
  default     = "600s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.retry_maximum_backoff)) && try(tonumber(trimsuffix(var.retry_maximum_backoff, "s")) <= 600, false)
    error_message = "retry_maximum_backoff must be seconds such as `600s`, at most `600s` (Pub/Sub's limit)."
  }
}

variable "delivery_outage_window_seconds" {
  description = "How long a backend (BigQuery, a batch engine's API, PostgreSQL) may answer 429/5xx before Pub/Sub gives up on an event and dead-letters it: every such answer is a delivery attempt, so the subscriptions get the attempts whose retry backoff covers this window (with the default backoff, 6 hours take 42 deliveries). Default 21600 (6 hours)."
  type        = number
  default     = 21600

  validation {
    condition     = var.delivery_outage_window_seconds >= 60 && var.delivery_outage_window_seconds <= 57000
    error_message = "delivery_outage_window_seconds must be between 60 and 57000 (100 deliveries, Pub/Sub's most, about 600 s apart)."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries of a message (5 to 100) before Pub/Sub moves it to the dead-letter topic; null (default) takes the fewest whose retry backoff covers `delivery_outage_window_seconds`. A value too small to cover the window is refused: lower the window instead, knowingly."
  type        = number
  default     = null

  validation {
    condition     = var.max_delivery_attempts == null || (coalesce(var.max_delivery_attempts, 5) >= 5 && coalesce(var.max_delivery_attempts, 5) <= 100)
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "message_retention_duration" {
  description = "How long the subscriptions keep unacknowledged messages, e.g. `604800s` (7 days, the maximum)."
  type        = string
  default     = "604800s"
}

variable "image_retention_count" {
  description = "Artifact Registry cleanup: image versions kept whatever their age; older ones are deleted after 30 days."
  type        = number
  default     = 20
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "console_domain" {
  description = "Domain of the web console (e.g. conveyor.example.com); set to deploy the console behind IAP on an HTTPS load balancer. Null: no console."
  type        = string
  default     = null
}

variable "console_users" {
  description = "Principals who may open the console through IAP (roles/iap.httpsResourceAccessor), e.g. group:data-eng@example.com."
  type        = list(string)
  default     = []
}

variable "console_operators" {
  description = "Who may re-run and mark success in the console (after a confirmation; recorded in the run log with who): e-mails, `@example.com` for a domain, `group:ops@example.com` for a Google group's members (checked with the Cloud Identity API: transitive membership with Cloud Identity Premium or Workspace Enterprise, direct membership otherwise; the console's service account must be allowed to view the group's members). Empty (default): the console is read-only. The console's account gets roles/run.invoker on the submit function. They must also be among `console_users` to open the console at all."
  type        = list(string)
  default     = []
}

variable "console_oauth_client_id" {
  description = "OAuth client id IAP uses for the console; null uses a Google-managed client."
  type        = string
  default     = null
}

variable "console_oauth_client_secret" {
  description = "Secret of console_oauth_client_id."
  type        = string
  default     = null
  sensitive   = true
}

variable "verify_callers" {
  description = "The functions check every caller's Google-signed OIDC token themselves (audience = the function's URL, account = the Pub/Sub and Scheduler invoker or one of `callers`), besides Cloud Run's IAM: a principal with only run.invoker cannot forge events. Set false to rely on IAM alone."
  type        = bool
  default     = true
}

variable "callers" {
  description = "More accounts whose OIDC tokens the functions accept when `verify_callers` is on (emails of operators' service accounts or users who call them with `curl` or `conveyor trigger --remote`)."
  type        = list(string)
  default     = []
}

variable "operators" {
  description = "Members who operate Conveyor with `conveyor status` and `conveyor replay` (e.g. `group:data-ops@example.com`): roles/bigquery.jobUser (queries), roles/bigquery.dataEditor on the run-log dataset (read it; replay records each replay), roles/pubsub.subscriber on the dead-letter subscription, roles/pubsub.publisher on the events and notifications topics (replay re-publishes)."
  type        = list(string)
  default     = []
}

variable "poll_tick_budget_seconds" {
  description = "How long one poll tick may work (CONVEYOR_TICK_BUDGET) before it leaves the rest to the next tick; keep it under the tick's interval (`poll_tick_schedule`, every minute by default) so ticks never overlap. The tick's Cloud Scheduler attempt deadline is this plus 15 s."
  type        = number
  default     = 45

  validation {
    condition     = var.poll_tick_budget_seconds >= 5 && var.poll_tick_budget_seconds <= 1785
    error_message = "poll_tick_budget_seconds must be between 5 and 1785 (Cloud Scheduler's longest attempt deadline, 30 min, less 15 s)."
  }
}

variable "iam_propagation_wait" {
  description = "How long the apply waits after granting the roles a resource needs at creation (the config secret's readers before the services start; Cloud Storage's publisher before the bucket notification), as Google says IAM changes take up to minutes to apply everywhere: e.g. `60s`; `0s` to skip."
  type        = string
  default     = "90s"
}

variable "metric_wait" {
  description = "How long the apply waits between creating the log-based failure metric and the alert policy on it: Cloud Monitoring may answer 404 for a metric created in the last ten minutes (\"it could take up to 10 minutes to become available\"). The wait runs while the rest is created, and again only when the metric is replaced."
  type        = string
  default     = "600s"
}
