# Cloud Scheduler: one job per active scheduled pipeline, from `var.schedules` (printed by
# `conveyor schedules --tfvars`), so for_each creates, updates and deletes jobs as pipelines
# gain, change or lose a schedule or are made inactive; plus the poll tick. Every job is named
# `<name_prefix>-<pipeline>` (`<name_prefix>-poll-tick`): Cloud Scheduler job names are unique
# per project and region, so two deployments (dev, prod) with different prefixes can share one.

resource "google_cloud_scheduler_job" "pipeline" {
  for_each = { for s in var.schedules : s.name => s }

  project = var.project_id
  region  = local.scheduler_region
  # The deployment's prefix: dev and prod in one project and region do not collide.
  name        = "${local.prefix}-${each.value.pipeline}"
  description = "Starts Conveyor pipeline ${each.value.pipeline} at ${each.value.target} (generated from the pipeline file)."
  schedule    = each.value.cron
  time_zone   = each.value.time_zone
  # A retried tick names the same scheduled minute, so it cannot start a second run.
  attempt_deadline = "${max(15, min(1800, local.functions[each.value.target].timeout_seconds))}s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "600s"
    max_doublings        = 3
  }

  http_target {
    http_method = "POST"
    uri         = google_cloud_run_v2_service.function[each.value.target].uri
    body        = base64encode(jsonencode(each.value.body))
    headers = {
      "Content-Type" = "application/json"
    }
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = local.function_audience[each.value.target]
    }
  }

  lifecycle {
    precondition {
      condition     = each.value.pipeline != "poll-tick"
      error_message = "A pipeline's scheduler job may not be called ${local.prefix}-poll-tick: rename the pipeline."
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.invoker]
}

# Checks every open batch: follows it to a terminal state, times it out, resubmits a failed
# attempt after its backoff. Missing a tick costs a minute, so it is not retried.
resource "google_cloud_scheduler_job" "poll_tick" {
  project     = var.project_id
  region      = local.scheduler_region
  name        = "${local.prefix}-poll-tick"
  description = "Conveyor poll tick: checks every open batch."
  schedule    = var.poll_tick_schedule
  time_zone   = "Etc/UTC"
  # The tick stops within its budget (CONVEYOR_TICK_BUDGET): it never runs into the next one.
  attempt_deadline = "${max(15, min(1800, var.poll_tick_budget_seconds + 15))}s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloud_run_v2_service.function["poll"].uri
    body        = base64encode(jsonencode({ tick = true }))
    headers = {
      "Content-Type" = "application/json"
    }
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = local.function_audience["poll"]
    }
  }

  lifecycle {
    precondition {
      condition     = var.poll_tick_schedule != "* * * * *" || var.poll_tick_budget_seconds <= 50
      error_message = "poll_tick_budget_seconds must stay under the tick's minute (at most 50 with `* * * * *`): ticks would overlap."
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.invoker]
}
