# Alerting on failure: a log-based metric counting the run-log transitions that end a run in
# failure (FAILED with no retry left, TIMED_OUT, REJECTED — the log function logs each as
# "run ended in failure"), and alert policies on it, on a dead-letter backlog and on each
# function's 5xx rate, sent to `notification_channels`. Optionally an alerts topic that the log
# function publishes each such event to, for Slack or e-mail integrations to subscribe to.

variable "alerting_enabled" {
  description = "Create the log-based failure metric and the alert policies."
  type        = bool
  default     = true
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channels (`projects/P/notificationChannels/ID`: e-mail, Slack, PagerDuty, Pub/Sub, ...) that every Conveyor alert policy notifies. Empty: incidents open in Cloud Monitoring without a notification."
  type        = list(string)
  default     = []
}

variable "failure_alert_window" {
  description = "The window over which failed runs are counted: an incident opens when one or more run ends FAILED, TIMED_OUT or REJECTED within it, per pipeline and status."
  type        = string
  default     = "300s"
}

variable "error_rate_threshold" {
  description = "5xx answers per second, averaged over `error_rate_window`, above which a function's alert opens. A 503 asks Pub/Sub to redeliver after a transient failure, so a few are normal; a sustained rate means a backend is down."
  type        = number
  default     = 0.1
}

variable "error_rate_window" {
  description = "How long a function's 5xx rate must stay above `error_rate_threshold` before its alert opens."
  type        = string
  default     = "600s"
}

variable "alerts_topic_enabled" {
  description = "Create the topic `<prefix>-alerts`: the log function publishes to it every event that ends a run in failure (the Conveyor CloudEvent, with its `ce-*` attributes: `dev.conveyor.step.failed` for failed loads and rejections, `dev.conveyor.batch.finished` with status FAILED or TIMED_OUT for a batch), for Slack or e-mail integrations to subscribe to."
  type        = bool
  default     = false
}

locals {
  failure_metric = "${local.prefix}/run_failures"
  # The subscriptions whose backlog means lost work: events and messages that Pub/Sub gave
  # up on.
  dead_letter_subscriptions = [for s in google_pubsub_subscription.dead_letter : s.name]
  alerts_topic              = var.alerts_topic_enabled ? google_pubsub_topic.alerts[0].id : null
}

# The log function writes "run ended in failure" once per failed run, at its end
# (run.finished FAILED/TIMED_OUT, a failed load, a rejection), with `pipeline` and `status`
# fields; never for the job's batch.finished FAILED before a run's end, so a failed run counts
# once (shared/core/src/run_state.rs, `ends_run_in_failure`; tests/tests/alerts.rs).
resource "google_logging_metric" "run_failures" {
  count = var.alerting_enabled ? 1 : 0

  project     = var.project_id
  name        = local.failure_metric
  description = "Conveyor runs that ended FAILED, TIMED_OUT or REJECTED, by pipeline and status (the log function's \"run ended in failure\" lines)."
  # The service's name, not a reference to it: the metric (and the wait below) need not wait
  # for the service.
  filter = <<-FILTER
    resource.type="cloud_run_revision"
    resource.labels.service_name="${local.prefix}-log"
    jsonPayload.message="run ended in failure"
  FILTER

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Conveyor failed runs"

    labels {
      key         = "pipeline"
      value_type  = "STRING"
      description = "The pipeline."
    }
    labels {
      key         = "status"
      value_type  = "STRING"
      description = "FAILED, TIMED_OUT or REJECTED."
    }
  }

  label_extractors = {
    pipeline = "EXTRACT(jsonPayload.pipeline)"
    status   = "EXTRACT(jsonPayload.status)"
  }
}

# Cloud Monitoring may answer 404 for a log-based metric created in the last ten minutes ("If a
# metric was created recently, it could take up to 10 minutes to become available"), which
# would fail the first apply at the alert policy. The wait runs while the rest is created.
resource "time_sleep" "metric" {
  count = var.alerting_enabled ? 1 : 0

  create_duration = var.metric_wait

  triggers = {
    metric = google_logging_metric.run_failures[0].id
  }
}

resource "google_monitoring_alert_policy" "run_failures" {
  count = var.alerting_enabled ? 1 : 0

  project               = var.project_id
  display_name          = "${local.prefix}: a run ended FAILED, TIMED_OUT or REJECTED"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Failed runs per pipeline and status"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.run_failures[0].name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = var.failure_alert_window
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.pipeline", "metric.label.status"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  depends_on = [time_sleep.metric]

  documentation {
    mime_type = "text/markdown"
    content   = "A Conveyor run ended in failure. The run log (`${var.run_log_dataset}.${var.run_log_table}`, view `run_latest_status`) has its row with the error; `conveyor status` lists the newest rows. REJECTED means a request or message was refused (see its `error`); FAILED means the last attempt failed; TIMED_OUT means a batch outlived `poll.timeout`, or the run its pipeline's `timeout`, and was cancelled."
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  count = var.alerting_enabled ? 1 : 0

  project               = var.project_id
  display_name          = "${local.prefix}: messages in a dead-letter subscription"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Dead-letter backlog above 0"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND (${join(" OR ", [for s in local.dead_letter_subscriptions : "resource.labels.subscription_id=\"${s}\""])})"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "60s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Pub/Sub gave up on a message after `max_delivery_attempts` deliveries (a backend down for long, or a PostgreSQL run-log sink refusing rows). Read it with `gcloud pubsub subscriptions pull SUBSCRIPTION --limit 10`; once the cause is fixed, publish it again to its topic (events: `${google_pubsub_topic.events.name}`)."
  }
}

resource "google_monitoring_alert_policy" "errors" {
  for_each = var.alerting_enabled ? local.functions : {}

  project               = var.project_id
  display_name          = "${local.prefix}: ${each.key} answers 5xx"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "5xx rate of ${google_cloud_run_v2_service.function[each.key].name}"
    condition_threshold {
      filter          = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${google_cloud_run_v2_service.function[each.key].name}\" AND metric.labels.response_code_class=\"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.error_rate_threshold
      duration        = var.error_rate_window

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The ${each.key} function keeps answering 5xx: a backend it needs (BigQuery, Cloud Storage, Pub/Sub, a batch engine's API, PostgreSQL) is failing, and Pub/Sub keeps redelivering. Its logs name the backend and the error."
  }
}

resource "google_pubsub_topic" "alerts" {
  count = var.alerts_topic_enabled ? 1 : 0

  project                    = var.project_id
  name                       = "${local.prefix}-alerts"
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration
}

resource "google_pubsub_topic_iam_member" "alerts_publisher" {
  count = var.alerts_topic_enabled ? 1 : 0

  project = var.project_id
  topic   = google_pubsub_topic.alerts[0].name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.function["log"].member
}

output "alerts_topic" {
  description = "Full name of the alerts topic (every event that ends a run in failure); null unless `alerts_topic_enabled`."
  value       = local.alerts_topic
}
