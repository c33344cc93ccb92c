# The landing bucket and its object-arrival trigger: Cloud Storage notifies
# `<prefix>-gcs-notifications` of every finalized object, and a push subscription
# (`<prefix>-load-objects`, pubsub.tf) hands the notification to `load`, which matches it
# against the pipelines' object patterns.

resource "google_storage_bucket" "landing" {
  count = var.create_landing_bucket ? 1 : 0

  project                     = var.project_id
  name                        = var.landing_bucket
  location                    = coalesce(var.landing_bucket_location, var.region)
  labels                      = local.labels
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # A replaced or deleted object can be recovered for a while.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.landing_noncurrent_days
    }
    action {
      type = "Delete"
    }
  }

  # The submit step's claims (one per Cloud Run job or http call, against a second start by a
  # redelivered submit) matter only while Pub/Sub may still redeliver: at most 31 days.
  lifecycle_rule {
    condition {
      age            = 32
      matches_prefix = ["_conveyor/claims/"]
    }
    action {
      type = "Delete"
    }
  }

  dynamic "logging" {
    for_each = var.landing_access_log_bucket == null ? [] : [var.landing_access_log_bucket]
    content {
      log_bucket = logging.value
    }
  }
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_pubsub_topic" "gcs_notifications" {
  project                    = var.project_id
  name                       = "${local.prefix}-gcs-notifications"
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration
}

# Cloud Storage publishes notifications as its service agent.
resource "google_pubsub_topic_iam_member" "gcs_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.gcs_notifications.name
  role    = "roles/pubsub.publisher"
  member  = data.google_storage_project_service_account.gcs.member
}

locals {
  # The pipeline file, read for what only Terraform can check (the buckets it names against
  # this deployment's); `conveyor validate --for gcp` checks the rest.
  pipeline_file = try(yamldecode(file(var.config_file)), { pipelines = [] })
  config_buckets = distinct(compact(flatten([
    for p in try(local.pipeline_file.pipelines, []) : [
      try(p.stage.bucket, ""),
      try(p.trigger.object.bucket, ""),
    ]
  ])))

  # BigQuery loads from a bucket in the dataset's location, or inside its multi-region; a
  # dataset in the US multi-region loads from anywhere
  # (https://cloud.google.com/bigquery/docs/batch-loading-data#data-locations). The EU
  # multi-region's regions are those BigQuery lists under it
  # (https://cloud.google.com/bigquery/docs/locations#multi-regions).
  eu_regions = [
    "europe-central2", "europe-north1", "europe-north2", "europe-southwest1", "europe-west1",
    "europe-west3", "europe-west4", "europe-west8", "europe-west9", "europe-west10", "europe-west12",
  ]
  landing_location = lower(coalesce(var.landing_bucket_location, var.region))
  locations_compatible = (
    upper(local.bigquery_location) == "US"
    || lower(local.bigquery_location) == local.landing_location
    || (upper(local.bigquery_location) == "EU" && contains(concat(["eu"], local.eu_regions), local.landing_location))
  )
}

resource "google_storage_notification" "landing" {
  bucket             = local.landing_bucket
  payload_format     = "JSON_API_V1"
  topic              = google_pubsub_topic.gcs_notifications.id
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = var.landing_object_prefix

  # Cloud Storage's agent publishes a test message when the notification is created: its
  # publisher grant must have applied.
  depends_on = [time_sleep.iam_propagation]

  lifecycle {
    precondition {
      condition     = length(setsubtract(local.config_buckets, [var.landing_bucket])) == 0
      error_message = "The pipeline file stages into or waits for objects in ${join(", ", setsubtract(local.config_buckets, [var.landing_bucket]))}, but only the landing bucket ${var.landing_bucket} notifies the load function: name it in every stage.bucket and trigger.object.bucket."
    }
    precondition {
      condition     = !var.create_landing_bucket && var.landing_bucket_location == null || local.locations_compatible
      error_message = "BigQuery location ${local.bigquery_location} cannot load from a landing bucket in ${local.landing_location}: BigQuery loads from a bucket in the dataset's region or inside its multi-region (US loads from anywhere). Set bigquery_location or landing_bucket_location so they agree."
    }
  }
}
