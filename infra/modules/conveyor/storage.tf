# The landing bucket and its object-arrival trigger: Cloud Storage notifies
# `<prefix>-gcs-notifications` of every finalized object, and a push subscription hands the
# notification to `load`, which matches it against the pipelines' object patterns.

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
  #checkov:skip=CKV_GCP_83:Encrypted at rest with Google-managed keys; customer-managed keys (a Cloud KMS key ring, rotation and service-agent grants) are an organization decision outside this module
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

resource "google_storage_notification" "landing" {
  bucket             = local.landing_bucket
  payload_format     = "JSON_API_V1"
  topic              = google_pubsub_topic.gcs_notifications.id
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = var.landing_object_prefix

  depends_on = [google_pubsub_topic_iam_member.gcs_publisher]
}

resource "google_pubsub_subscription" "objects" {
  project = var.project_id
  name    = "${local.prefix}-load-objects"
  topic   = google_pubsub_topic.gcs_notifications.id
  labels  = local.labels

  ack_deadline_seconds       = min(600, local.functions.load.timeout_seconds)
  message_retention_duration = var.message_retention_duration

  push_config {
    push_endpoint = google_cloud_run_v2_service.function["load"].uri
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = local.function_audience["load"]
    }
  }

  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.invoker,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}
