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
  description = "Prefix of every resource name: services `<prefix>-<function>`, topic `<prefix>-events`, service accounts `<prefix>-<function>`. Lowercase letters, digits and hyphens, at most 14 characters so service-account ids stay within 30."
  type        = string
  default     = "conveyor"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,13}$", var.name_prefix))
    error_message = "name_prefix must start with a letter and hold at most 14 lowercase letters, digits or hyphens."
  }
}

variable "image" {
  description = "The Conveyor container image (all five binaries), e.g. `europe-west1-docker.pkg.dev/PROJECT/conveyor/conveyor:1a2b3c4`. Each service runs its own binary from it through the container command."
  type        = string
}

variable "config_file" {
  description = "Path of the pipeline configuration file (YAML or JSON). Its content is stored as a Secret Manager secret version and mounted into every service at /etc/conveyor/conveyor.yaml (CONVEYOR_CONFIG); changing the file and applying rolls out a new revision. At most 64 KiB."
  type        = string
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
  description = "Cloud Data Fusion instance whose pipelines Conveyor starts (`data_fusion` batch engine), as `{ name, region }`; `submit` and `poll` get roles/datafusion.runner on that instance only. Null when Data Fusion is not used."
  type = object({
    name   = string
    region = string
  })
  default = null
}

variable "batch_service_account_email" {
  description = "Service account (in `project_id`) the batch jobs run as: the `service_account` of the pipelines' Dataproc and Dataflow batches. Null creates `<prefix>-batch` when an engine is enabled. `submit` and `poll` get roles/iam.serviceAccountUser on this account only, so they can start jobs as it."
  type        = string
  default     = null
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
  description = "Pub/Sub push retry policy: the first redelivery delay after a 5xx or a timeout, e.g. `10s`."
  type        = string
  default     = "10s"
}

variable "retry_maximum_backoff" {
  description = "Pub/Sub push retry policy: the longest redelivery delay, at most `600s`."
  type        = string
  default     = "600s"
}

variable "max_delivery_attempts" {
  description = "Deliveries of a message (5 to 100) before Pub/Sub moves it to the dead-letter topic."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
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
