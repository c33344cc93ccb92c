# `on_failure` notices (the pipeline file's `pipelines[].on_failure`): the log step publishes
# to each named topic and reads each webhook's URL from its secret, so the log function's
# account may publish to exactly those topics and read exactly those secrets.

locals {
  on_failure = flatten([for p in try(local.pipeline_file.pipelines, []) : try(p.on_failure, [])])
  # A topic without a project is one of this project's (as the log step publishes it).
  on_failure_topics = distinct([
    for n in local.on_failure : (
      startswith(n.publish, "projects/") ? n.publish : "projects/${var.project_id}/topics/${n.publish}"
    ) if try(n.publish, null) != null
  ])
  on_failure_secrets = distinct([
    for n in local.on_failure : n.webhook.url_secret if try(n.webhook.url_secret, null) != null
  ])
}

resource "google_pubsub_topic_iam_member" "on_failure_publisher" {
  for_each = toset(local.on_failure_topics)

  project = split("/", each.value)[1]
  topic   = each.value
  role    = "roles/pubsub.publisher"
  member  = google_service_account.function["log"].member
}

resource "google_secret_manager_secret_iam_member" "on_failure_webhook" {
  for_each = toset(local.on_failure_secrets)

  project   = split("/", each.value)[1]
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function["log"].member
}
