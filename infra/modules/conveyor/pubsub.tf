# The event bus: every step publishes its CloudEvent to `<prefix>-events` (the `ce-*`
# attributes carry type, run, pipeline, step, attempt and status) and Pub/Sub pushes each
# event to the functions that consume its type. A message that keeps failing goes to the
# dead-letter topic instead of being retried forever.

resource "google_pubsub_topic" "events" {
  project                    = var.project_id
  name                       = "${local.prefix}-events"
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration
}

resource "google_pubsub_topic" "dead_letter" {
  project                    = var.project_id
  name                       = "${local.prefix}-events-dead-letter"
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration
}

# What lands on a dead-letter topic stays in its subscription of the same name, to be read
# (`gcloud pubsub subscriptions pull`) and replayed: the events', and with message pipelines or
# native subscriptions the messages' (messages.tf).
resource "google_pubsub_subscription" "dead_letter" {
  for_each = merge(
    { events = google_pubsub_topic.dead_letter },
    local.messages_dead_letter ? { messages = google_pubsub_topic.messages_dead_letter[0] } : {},
  )

  project                    = var.project_id
  name                       = each.value.name
  topic                      = each.value.id
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = true
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

locals {
  # The push subscriptions to the functions, all dead-lettering to the events dead-letter topic:
  # one per function that consumes events, filtered on their type, and load's for the landing
  # bucket's object notifications (storage.tf).
  push_subscriptions = merge(
    {
      for f, filter in local.push_filters : f => {
        function = f
        topic    = google_pubsub_topic.events.id
        filter   = filter
      }
    },
    {
      # Conveyor's own state (_conveyor/: stage watermarks and leases, load windows) is never
      # data: its writes are not pushed to load at all. Staged objects reach load by this path
      # only (load consumes no dev.conveyor.object.staged event).
      "load-objects" = {
        function = "load"
        topic    = google_pubsub_topic.gcs_notifications.id
        filter   = "NOT hasPrefix(attributes.objectId, \"_conveyor/\")"
      }
    },
  )
}

resource "google_pubsub_subscription" "push" {
  for_each = local.push_subscriptions

  project = var.project_id
  name    = "${local.prefix}-${each.key}"
  topic   = each.value.topic
  labels  = local.labels
  filter  = each.value.filter

  # Push waits this long for the HTTP answer; the service's request timeout, at most 600 s.
  ack_deadline_seconds       = min(600, local.functions[each.value.function].timeout_seconds)
  message_retention_duration = var.message_retention_duration

  push_config {
    push_endpoint = google_cloud_run_v2_service.function[each.value.function].uri
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = local.function_audience[each.value.function]
    }
  }

  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = local.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  lifecycle {
    precondition {
      condition     = length(each.value.filter) <= 256
      error_message = "The Pub/Sub filter of ${each.key} is longer than 256 bytes: ${each.value.filter}"
    }
    precondition {
      condition     = local.retry_covers[tostring(local.max_delivery_attempts)] >= var.delivery_outage_window_seconds
      error_message = "max_delivery_attempts = ${local.max_delivery_attempts} dead-letters an event after ${local.retry_covers[tostring(local.max_delivery_attempts)]} s of retries, less than delivery_outage_window_seconds (${var.delivery_outage_window_seconds}): a backend down that long would lose events to the dead-letter topic. Raise max_delivery_attempts (or leave it null), or lower the window knowingly."
    }
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.invoker,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# Dead-lettering is done by the Pub/Sub service agent: it must publish to the dead-letter
# topic and acknowledge (subscribe to) every subscription that forwards there.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent

  depends_on = [time_sleep.service_agents]
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = { for k, s in google_pubsub_subscription.push : k => s.name }

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent

  depends_on = [time_sleep.service_agents]
}

# The two dead-letter subscriptions were `google_pubsub_subscription.dead_letter` and
# `google_pubsub_subscription.messages_dead_letter[0]`: the same subscriptions, moved in the
# state (names and settings unchanged), not recreated, so no dead letter is lost.
moved {
  from = google_pubsub_subscription.dead_letter
  to   = google_pubsub_subscription.dead_letter["events"]
}

moved {
  from = google_pubsub_subscription.messages_dead_letter[0]
  to   = google_pubsub_subscription.dead_letter["messages"]
}

# Load's object-notification subscription was `google_pubsub_subscription.objects` until it
# joined the other push subscriptions: the same subscription, moved in the state (its name and
# every setting unchanged), not recreated.
moved {
  from = google_pubsub_subscription.objects
  to   = google_pubsub_subscription.push["load-objects"]
}
