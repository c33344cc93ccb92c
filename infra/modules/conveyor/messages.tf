# Pub/Sub messages into BigQuery rows (seed 003).
#
# - Message pipelines (`trigger.topic` in the pipeline file; `conveyor schedules --tfvars`
#   lists them as `message_pipelines`): a push subscription per pipeline on its topic, pushing
#   to the load function's `/messages/<pipeline>`, which checks each object against the
#   pipeline's schema, writes the rows once per message and quarantines what does not fit.
#   Choose this for a low-volume feed that needs validation, a quarantine and a run-log
#   record per bad message (the mobile-app issue events): each message costs a BigQuery DML
#   statement (~1 s, billed at the 10 MB minimum).
# - Native BigQuery subscriptions (`bigquery_subscriptions`): Pub/Sub writes each message as a
#   row itself, with no function in between. Choose this for a high-volume feed whose
#   messages already match the table (the topic's schema or the table's): thousands of
#   messages a second at streaming-insert prices, but no per-message validation beyond
#   Pub/Sub's, no quarantine table (failures go to the dead-letter topic), and no run-log row.
# - Native Cloud Storage subscriptions (`cloud_storage_subscriptions`): Pub/Sub batches
#   messages into files (text or Avro) in a bucket, a new file per `max_duration` or
#   `max_bytes` — seed 003's hourly sensor files. Choose this to keep raw high-volume data
#   cheaply and load or process it in bulk later (an object trigger on that bucket loads each
#   file).

variable "message_pipelines" {
  description = "Message pipelines as printed by `conveyor schedules --tfvars` (pipelines with `trigger.topic`): the pipeline, its topic (`NAME` in this project, or `projects/P/topics/NAME`) and its table. Each gets a push subscription to the load function's `/messages/<pipeline>`; the load service account needs roles/bigquery.dataEditor on the table's dataset (list it in `datasets`)."
  type = list(object({
    pipeline = string
    topic    = string
    table    = string
  }))
  default = []
}

variable "create_message_topics" {
  description = "Create the topics that message pipelines name without a project (`mobile-app-issues`), in this project; false when the publishing application owns them. A topic in another project needs pubsub.topics.attachSubscription for whoever applies this."
  type        = bool
  default     = true
}

variable "bigquery_subscriptions" {
  description = "Native Pub/Sub → BigQuery subscriptions for high-volume feeds: `name` (of the subscription), `topic` (full name), `table` (`PROJECT.DATASET.TABLE`), `use_table_schema` (map message JSON fields to columns; default true), `write_metadata` (add subscription_name, message_id, publish_time, attributes columns; default false), `drop_unknown_fields` (default false). The Pub/Sub service agent gets roles/bigquery.dataEditor on the table's dataset."
  type = list(object({
    name                = string
    topic               = string
    table               = string
    use_table_schema    = optional(bool, true)
    write_metadata      = optional(bool, false)
    drop_unknown_fields = optional(bool, false)
  }))
  default = []
}

variable "cloud_storage_subscriptions" {
  description = "Native Pub/Sub → Cloud Storage subscriptions that batch messages into files (seed 003's hourly sensor files): `name`, `topic` (full name), `bucket`, `filename_prefix`, `filename_suffix` (e.g. `.avro`), `filename_datetime_format` (default `YYYY-MM-DD/hh_mm_ssZ`), `max_duration` (a new file at least this often; default `3600s`, hourly), `max_bytes` (a new file past this size; default 1 GiB), `avro` (Avro files with the message metadata instead of text lines; default true). The Pub/Sub service agent gets roles/storage.objectCreator and roles/storage.legacyBucketReader on the bucket."
  type = list(object({
    name                     = string
    topic                    = string
    bucket                   = string
    filename_prefix          = optional(string, "")
    filename_suffix          = optional(string, "")
    filename_datetime_format = optional(string, "YYYY-MM-DD/hh_mm_ssZ")
    max_duration             = optional(string, "3600s")
    max_bytes                = optional(number, 1073741824)
    avro                     = optional(bool, true)
  }))
  default = []
}

locals {
  message_pipelines = { for m in var.message_pipelines : m.pipeline => m }
  # A topic named without a project is in this project.
  message_topics = {
    for k, m in local.message_pipelines : k => (
      startswith(m.topic, "projects/") ? m.topic : "projects/${var.project_id}/topics/${m.topic}"
    )
  }
  created_message_topics = var.create_message_topics ? toset([
    for m in var.message_pipelines : m.topic if !startswith(m.topic, "projects/")
  ]) : toset([])
  native_subscriptions = length(var.bigquery_subscriptions) + length(var.cloud_storage_subscriptions)
  # Message subscriptions dead-letter to a topic of their own: what lands there is the
  # publisher's data, not Conveyor events. Its subscription of the same name keeps it
  # (google_pubsub_subscription.dead_letter["messages"], pubsub.tf).
  messages_dead_letter = length(local.message_pipelines) + local.native_subscriptions > 0
}

resource "google_pubsub_topic" "message" {
  for_each = local.created_message_topics

  project                    = var.project_id
  name                       = each.key
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration
}

resource "google_pubsub_topic" "messages_dead_letter" {
  count = local.messages_dead_letter ? 1 : 0

  project                    = var.project_id
  name                       = "${local.prefix}-messages-dead-letter"
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration
}

resource "google_pubsub_subscription" "message" {
  for_each = local.message_pipelines

  project = var.project_id
  name    = "${local.prefix}-messages-${each.key}"
  topic   = local.message_topics[each.key]
  labels  = local.labels

  ack_deadline_seconds       = min(600, local.functions["load"].timeout_seconds)
  message_retention_duration = var.message_retention_duration

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.function["load"].uri}/messages/${each.key}"
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
    dead_letter_topic     = google_pubsub_topic.messages_dead_letter[0].id
    max_delivery_attempts = local.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_pubsub_topic.message,
    google_cloud_run_v2_service_iam_member.invoker,
    google_pubsub_topic_iam_member.messages_dead_letter_publisher,
  ]
}

resource "google_pubsub_subscription" "bigquery" {
  for_each = { for s in var.bigquery_subscriptions : s.name => s }

  project                    = var.project_id
  name                       = each.key
  topic                      = each.value.topic
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  bigquery_config {
    table               = each.value.table
    use_table_schema    = each.value.use_table_schema
    write_metadata      = each.value.write_metadata
    drop_unknown_fields = each.value.drop_unknown_fields
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.messages_dead_letter[0].id
    max_delivery_attempts = local.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_bigquery_dataset_iam_member.pubsub_writer,
    google_pubsub_topic_iam_member.messages_dead_letter_publisher,
  ]
}

resource "google_pubsub_subscription" "cloud_storage" {
  for_each = { for s in var.cloud_storage_subscriptions : s.name => s }

  project                    = var.project_id
  name                       = each.key
  topic                      = each.value.topic
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  cloud_storage_config {
    bucket                   = each.value.bucket
    filename_prefix          = each.value.filename_prefix
    filename_suffix          = each.value.filename_suffix
    filename_datetime_format = each.value.filename_datetime_format
    max_duration             = each.value.max_duration
    max_bytes                = each.value.max_bytes

    dynamic "avro_config" {
      for_each = each.value.avro ? [1] : []
      content {
        write_metadata = true
      }
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.messages_dead_letter[0].id
    max_delivery_attempts = local.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_storage_bucket_iam_member.pubsub_writer,
    google_pubsub_topic_iam_member.messages_dead_letter_publisher,
  ]
}

# The Pub/Sub service agent dead-letters, and writes the native subscriptions' rows and files.
resource "google_pubsub_topic_iam_member" "messages_dead_letter_publisher" {
  count = local.messages_dead_letter ? 1 : 0

  project = var.project_id
  topic   = google_pubsub_topic.messages_dead_letter[0].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent

  depends_on = [time_sleep.service_agents]
}

resource "google_pubsub_subscription_iam_member" "messages_dead_letter_subscriber" {
  for_each = merge(
    { for k, s in google_pubsub_subscription.message : "message-${k}" => s.name },
    { for k, s in google_pubsub_subscription.bigquery : "bigquery-${k}" => s.name },
    { for k, s in google_pubsub_subscription.cloud_storage : "storage-${k}" => s.name },
  )

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent

  depends_on = [time_sleep.service_agents]
}

resource "google_bigquery_dataset_iam_member" "pubsub_writer" {
  for_each = toset([for s in var.bigquery_subscriptions : join(".", slice(split(".", s.table), 0, 2))])

  project    = split(".", each.key)[0]
  dataset_id = split(".", each.key)[1]
  role       = "roles/bigquery.dataEditor"
  member     = local.pubsub_agent

  depends_on = [time_sleep.service_agents]
}

resource "google_storage_bucket_iam_member" "pubsub_writer" {
  for_each = {
    for pair in setproduct(toset([for s in var.cloud_storage_subscriptions : s.bucket]), ["roles/storage.objectCreator", "roles/storage.legacyBucketReader"]) :
    "${pair[0]} ${pair[1]}" => { bucket = pair[0], role = pair[1] }
  }

  bucket = each.value.bucket
  role   = each.value.role
  member = local.pubsub_agent

  depends_on = [time_sleep.service_agents]
}

output "message_subscriptions" {
  description = "The push subscription of each message pipeline, keyed by pipeline."
  value       = { for k, s in google_pubsub_subscription.message : k => s.id }
}

output "messages_dead_letter_topic" {
  description = "Full name of the message subscriptions' dead-letter topic (its subscription of the same name keeps the messages); null without message or native subscriptions."
  value       = local.messages_dead_letter ? google_pubsub_topic.messages_dead_letter[0].id : null
}
