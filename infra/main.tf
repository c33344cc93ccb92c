# Example deployment of Conveyor: the project's APIs and one instance of the module.

provider "google" {
  project = var.project_id
  region  = var.region
}

# For google_project_service_identity only (Google's service agents for IAP and Pub/Sub).
provider "google-beta" {
  project = var.project_id
  region  = var.region
}

locals {
  # Every API the deployment procedure (infra/README.md) uses: the services' own, the ones
  # Terraform calls (Resource Manager for the project's number, Service Usage for service
  # agents), Cloud Build for the image, IAM Credentials for `gcloud auth print-identity-token
  # --impersonate-service-account` and Pub/Sub's push tokens, and each enabled feature's.
  apis = concat(
    [
      "artifactregistry.googleapis.com",
      "bigquery.googleapis.com",
      "cloudbuild.googleapis.com",
      "cloudresourcemanager.googleapis.com",
      "cloudscheduler.googleapis.com",
      "iam.googleapis.com",
      "iamcredentials.googleapis.com",
      "pubsub.googleapis.com",
      "run.googleapis.com",
      "secretmanager.googleapis.com",
      "serviceusage.googleapis.com",
      "storage.googleapis.com",
    ],
    var.dataproc_enabled ? ["dataproc.googleapis.com"] : [],
    var.dataflow_enabled ? ["dataflow.googleapis.com"] : [],
    var.datafusion_instance != null ? ["datafusion.googleapis.com"] : [],
    var.console_domain != null ? ["compute.googleapis.com", "iap.googleapis.com"] : [],
    var.alerting_enabled ? ["logging.googleapis.com", "monitoring.googleapis.com"] : [],
    length(var.cloudsql_instances) > 0 ? ["sqladmin.googleapis.com"] : [],
    var.lineage_enabled ? ["datalineage.googleapis.com"] : [],
  )
}

resource "google_project_service" "api" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}

module "conveyor" {
  source = "./modules/conveyor"

  project_id  = var.project_id
  region      = var.region
  name_prefix = var.name_prefix
  image       = var.image
  config_file = startswith(var.config_file, "/") ? var.config_file : "${path.root}/${var.config_file}"

  landing_bucket          = var.landing_bucket
  create_landing_bucket   = var.create_landing_bucket
  landing_bucket_location = var.landing_bucket_location
  source_buckets          = var.source_buckets
  stage_secret_ids        = var.stage_secret_ids

  bigquery_location = var.bigquery_location
  datasets          = var.datasets
  run_log_dataset   = var.run_log_dataset
  run_log_table     = var.run_log_table

  functions       = var.functions
  ingress         = var.ingress
  log_filter      = var.log_filter
  manual_invokers = var.manual_invokers
  verify_callers  = var.verify_callers
  callers         = var.callers

  dataproc_enabled            = var.dataproc_enabled
  dataflow_enabled            = var.dataflow_enabled
  cloud_run_jobs_enabled      = var.cloud_run_jobs_enabled
  datafusion_instance         = var.datafusion_instance
  batch_service_account_email = var.batch_service_account_email
  batch_code_buckets          = var.batch_code_buckets
  dataflow_staging_buckets    = var.dataflow_staging_buckets
  batch_image_repositories    = var.batch_image_repositories

  schedules                      = var.schedules
  scheduler_region               = var.scheduler_region
  poll_tick_budget_seconds       = var.poll_tick_budget_seconds
  delivery_outage_window_seconds = var.delivery_outage_window_seconds
  max_delivery_attempts          = var.max_delivery_attempts
  deletion_protection            = var.deletion_protection
  labels                         = var.labels
  operators                      = var.operators
  iam_propagation_wait           = var.iam_propagation_wait
  metric_wait                    = var.metric_wait

  console_domain              = var.console_domain
  console_users               = var.console_users
  console_operators           = var.console_operators
  console_oauth_client_id     = var.console_oauth_client_id
  console_oauth_client_secret = var.console_oauth_client_secret

  message_pipelines           = var.message_pipelines
  create_message_topics       = var.create_message_topics
  bigquery_subscriptions      = var.bigquery_subscriptions
  cloud_storage_subscriptions = var.cloud_storage_subscriptions
  alerting_enabled            = var.alerting_enabled
  notification_channels       = var.notification_channels
  alerts_topic_enabled        = var.alerts_topic_enabled
  lineage_enabled             = var.lineage_enabled
  lineage_location            = var.lineage_location
  ssh_key_secret_ids          = var.ssh_key_secret_ids
  postgres_url_secret_id      = var.postgres_url_secret_id
  cloudsql_instances          = var.cloudsql_instances
  vpc_egress                  = var.vpc_egress

  depends_on = [google_project_service.api]
}
