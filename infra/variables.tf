# Inputs of the example deployment. Put yours in terraform.tfvars (see
# terraform.tfvars.example); `schedules` comes from schedules.auto.tfvars.json, written by
# `conveyor schedules --tfvars`.

variable "project_id" {
  description = "The Google Cloud project to deploy Conveyor into."
  type        = string
}

variable "region" {
  description = "Region of the services, the image repository and, by default, the landing bucket, datasets and scheduler jobs, e.g. `europe-west1`."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name (services, topics, service accounts, secret, repository): 2 to 14 lowercase letters, digits and hyphens, so every service-account id has Google's 6 to 30 characters."
  type        = string
  default     = "conveyor"
}

variable "image" {
  description = "The Conveyor image to run, e.g. `europe-west1-docker.pkg.dev/PROJECT/conveyor/conveyor:TAG` (output `image_repository` names the repository). Only needed for the full apply; the first, targeted apply that creates the repository can pass a placeholder."
  type        = string
}

variable "config_file" {
  description = "Path of the pipeline file deployed to the services (and from which `schedules` was generated); relative paths start at this directory. Required: it must be written for Google Cloud (no `engine: local`, no local stage source, its buckets the landing bucket); check it with `conveyor validate FILE --for gcp --landing-bucket BUCKET` (examples/deploy.yaml is one)."
  type        = string

  validation {
    condition     = fileexists(var.config_file)
    error_message = "config_file names no file (relative paths start at infra/)."
  }
}

variable "landing_bucket" {
  description = "Name of the landing bucket (globally unique); pipelines name it in `stage.bucket` and `trigger.object.bucket`."
  type        = string
}

variable "create_landing_bucket" {
  description = "Create the landing bucket (true) or use an existing bucket of that name (false)."
  type        = bool
  default     = true
}

variable "landing_bucket_location" {
  description = "Location of a created landing bucket; null means `region`. It must suit `bigquery_location` (BigQuery loads from a bucket in the dataset's region or inside its multi-region); the plan fails otherwise."
  type        = string
  default     = null
}

variable "source_buckets" {
  description = "Buckets that `stage` copies from (gs:// sources); it gets read access to these only."
  type        = list(string)
  default     = []
}

variable "stage_secret_ids" {
  description = "Secret Manager secret ids holding stage sources' credentials (S3 keys); only the stage service may read them."
  type        = list(string)
  default     = []
}

variable "bigquery_location" {
  description = "Location of the BigQuery datasets and load jobs, e.g. `EU`; null means `region`."
  type        = string
  default     = null
}

variable "datasets" {
  description = "BigQuery datasets the pipelines load into (the dataset of each `load.table`); created, and writable by `load` only."
  type        = list(string)
  default     = ["analytics"]
}

variable "run_log_dataset" {
  description = "Dataset of the run-log table, as in the pipeline file's `run_log.table`."
  type        = string
  default     = "conveyor"
}

variable "run_log_table" {
  description = "Table name of the run log, as in the pipeline file's `run_log.table`."
  type        = string
  default     = "run_log"
}

variable "functions" {
  description = "Per-function settings (cpu, memory, instances, timeout); the module's variable `functions` has the shape and checks it."
  type        = any # the module's variable checks the shape
  default     = {}
}

variable "ingress" {
  description = "Cloud Run ingress: `INGRESS_TRAFFIC_ALL` (authenticated calls from anywhere, e.g. curl) or `INGRESS_TRAFFIC_INTERNAL_ONLY` (Pub/Sub, Scheduler and VPC only)."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"
}

variable "manual_invokers" {
  description = "Members who may start pipelines by hand with curl (roles/run.invoker on stage and submit), e.g. `[\"user:you@example.com\"]`."
  type        = list(string)
  default     = []
}

variable "log_filter" {
  description = "CONVEYOR_LOG of the services, e.g. `info` or `info,conveyor=debug`."
  type        = string
  default     = "info"
}

variable "dataproc_enabled" {
  description = "Pipelines use the `dataproc_serverless` or `dataproc_cluster` engine (grants submit/poll the custom role `<name_prefix>_dataproc_runner`: create, get and cancel batches, jobs and ephemeral clusters)."
  type        = bool
  default     = false
}

variable "dataflow_enabled" {
  description = "Pipelines use the `dataflow_flex` engine (grants submit/poll roles/dataflow.developer)."
  type        = bool
  default     = false
}

variable "cloud_run_jobs_enabled" {
  description = "Pipelines use the `cloud_run_job` engine (grants submit/poll the custom role `<name_prefix>_cloud_run_job_runner`: run a job with overrides, get, list and cancel its executions)."
  type        = bool
  default     = false
}

variable "datafusion_instance" {
  description = "The Data Fusion instance the `data_fusion` engine starts pipelines on; the module's variable `datafusion_instance` has the shape. Null: no Data Fusion."
  type        = any # the module's variable checks the shape
  default     = null
}

variable "batch_service_account_email" {
  description = "Service account batch jobs run as (the pipelines' `batch.service_account`); null creates `<prefix>-batch` when a batch engine is enabled (output `batch_service_account`)."
  type        = string
  default     = null
}

variable "batch_code_buckets" {
  description = "Buckets holding batch code and templates (PySpark files, jars, flex template specs), readable by submit, poll and the batch account."
  type        = list(string)
  default     = []
}

variable "dataflow_staging_buckets" {
  description = "Buckets of the Dataflow jobs' `temp_location` and `staging_location`, writable by the batch account."
  type        = list(string)
  default     = []
}

variable "batch_image_repositories" {
  description = "Artifact Registry repositories the batch service account pulls custom images from; the module's variable `batch_image_repositories` has the shape."
  type        = any # the module's variable checks the shape
  default     = []
}

variable "schedules" {
  description = "Cloud Scheduler jobs, generated by `conveyor schedules` into schedules.auto.tfvars.json; the module's variable `schedules` has the shape and checks it."
  type        = any # the module's variable checks the shape
  default     = []
}

variable "scheduler_region" {
  description = "Region of the Cloud Scheduler jobs when `region` has no Cloud Scheduler; null means `region`."
  type        = string
  default     = null
}

variable "delivery_outage_window_seconds" {
  description = "How long a backend may fail (429/5xx) before Pub/Sub dead-letters an event: the subscriptions retry for at least this long. Default 21600 (6 hours)."
  type        = number
  default     = 21600
}

variable "max_delivery_attempts" {
  description = "Deliveries of an event (5 to 100) before it goes to the dead-letter topic; null (default) takes the fewest that cover `delivery_outage_window_seconds`."
  type        = number
  default     = null
}

variable "poll_tick_budget_seconds" {
  description = "How long one poll tick may work before leaving the rest to the next tick (under the tick's minute)."
  type        = number
  default     = 45
}

variable "operators" {
  description = "Members who run `conveyor status` and `conveyor replay` (the roles they need: see the module's variable)."
  type        = list(string)
  default     = []
}

variable "iam_propagation_wait" {
  description = "How long the first apply waits after the grants a new resource needs at creation (IAM changes take a while to apply everywhere)."
  type        = string
  default     = "90s"
}

variable "metric_wait" {
  description = "How long the first apply waits between the log-based failure metric and its alert policy (a new metric may be unknown to Cloud Monitoring for up to ten minutes)."
  type        = string
  default     = "600s"
}

variable "deletion_protection" {
  description = "Protect the services, run-log table and view from `terraform destroy`."
  type        = bool
  default     = true
}

variable "enable_apis" {
  description = "Enable the Google Cloud APIs Conveyor uses (Cloud Run, Pub/Sub, Scheduler, BigQuery, Storage, Secret Manager, Artifact Registry, IAM, and the enabled batch engines'). Set false when the project's APIs are managed elsewhere."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels for every resource that takes them (passed to the module)."
  type        = map(string)
  default     = {}
}

variable "console_domain" {
  description = "Domain of the web console (e.g. conveyor.example.com): deploys it behind IAP on an HTTPS load balancer. Null: no console."
  type        = string
  default     = null
}

variable "console_users" {
  description = "Who may open the console through IAP (IAM principals, e.g. group:data-eng@example.com)."
  type        = list(string)
  default     = []
}

variable "console_operators" {
  description = "Who may re-run and mark success in the console: e-mails, `@example.com`, or `group:ops@example.com` (Cloud Identity; see the module's variable). Empty: a read-only console."
  type        = list(string)
  default     = []
}

variable "console_oauth_client_id" {
  description = "The OAuth client IAP uses for the console; null: a Google-managed one."
  type        = string
  default     = null
}

variable "console_oauth_client_secret" {
  description = "The secret of console_oauth_client_id (sensitive; never printed in a plan)."
  type        = string
  default     = null
  sensitive   = true
}

variable "verify_callers" {
  description = "The functions verify every caller's Google-signed OIDC token themselves (audience and account), besides Cloud Run's IAM."
  type        = bool
  default     = true
}

variable "callers" {
  description = "More accounts (emails) the functions accept calls from when verify_callers is on: operators who use curl or `conveyor trigger --remote`."
  type        = list(string)
  default     = []
}

# The source documents' remaining systems: message pipelines and native subscriptions
# (modules/conveyor/messages.tf), alerting (alerting.tf), SSH keys and the PostgreSQL sink
# (onprem.tf). See the module's variables for details.

variable "message_pipelines" {
  description = "Message pipelines' push subscriptions; the module's variable `message_pipelines` has the shape."
  type        = any # the module's variable checks the shape
  default     = []
}

variable "create_message_topics" {
  description = "Create the topics message pipelines name without a project; false when the publishing application owns them."
  type        = bool
  default     = true
}

variable "bigquery_subscriptions" {
  description = "Native Pub/Sub → BigQuery subscriptions for high-volume feeds; the module's variable `bigquery_subscriptions` has the shape and what each field does."
  type        = any # the module's variable checks the shape
  default     = []
}

variable "cloud_storage_subscriptions" {
  description = "Native Pub/Sub → Cloud Storage subscriptions writing hourly (or size-bounded) files; the module's variable `cloud_storage_subscriptions` has the shape and what each field does."
  type        = any # the module's variable checks the shape
  default     = []
}

variable "alerting_enabled" {
  description = "Create the failed-runs log metric and the alert policies (failed runs, dead-letter backlog, 5xx rate per function)."
  type        = bool
  default     = true
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channels (`projects/P/notificationChannels/ID`) every Conveyor alert notifies."
  type        = list(string)
  default     = []
}

variable "alerts_topic_enabled" {
  description = "Create `<prefix>-alerts`, which receives every event that ends a run in failure, for Slack or e-mail integrations."
  type        = bool
  default     = false
}

variable "lineage_enabled" {
  description = "The pipeline file has `lineage:`: enable the Data Lineage API and let the log function record OpenLineage run events there (in `lineage_location`)."
  type        = bool
  default     = false
}

variable "lineage_location" {
  description = "The Data Lineage location of the events (a region, or `us` / `eu`); null: `region`."
  type        = string
  default     = null
}

variable "ssh_key_secret_ids" {
  description = "Secret ids holding the private keys of `engine: ssh` batches (`key_secret`): submit and poll may read exactly these."
  type        = list(string)
  default     = []
}

variable "postgres_url_secret_id" {
  description = "Secret id holding the connection string of the `run_log.postgres` sink: the log function may read it. Null: no PostgreSQL sink."
  type        = string
  default     = null
}

variable "cloudsql_instances" {
  description = "Cloud SQL instances (`PROJECT:REGION:INSTANCE`) the log function reaches through Cloud Run's Cloud SQL connection (Auth Proxy socket under /cloudsql)."
  type        = list(string)
  default     = []
}

variable "vpc_egress" {
  description = "Direct VPC egress `{ network, subnetwork }` for submit, poll and log, to reach SSH hosts on-prem or Cloud SQL over private IP; null: none."
  type        = any # the module's variable checks the shape
  default     = null
}
