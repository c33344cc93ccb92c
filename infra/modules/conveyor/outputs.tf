output "service_urls" {
  description = "URL of each function's Cloud Run service, keyed by function (stage, load, submit, poll, log)."
  value       = { for k, s in google_cloud_run_v2_service.function : k => s.uri if contains(keys(local.functions), k) }
}

output "service_accounts" {
  description = "Email of each function's service account, keyed by function."
  value       = { for k, a in google_service_account.function : k => a.email }
}

output "invoker_service_account" {
  description = "Email of the account Pub/Sub and Cloud Scheduler call the services as."
  value       = google_service_account.invoker.email
}

output "batch_service_account" {
  description = "Email of the account batch jobs run as; null when no Google Cloud batch engine is enabled."
  value       = local.batch_account_email
}

output "events_topic" {
  description = "Full name of the events topic (CONVEYOR_EVENTS_TOPIC)."
  value       = google_pubsub_topic.events.id
}

output "dead_letter_topic" {
  description = "Full name of the dead-letter topic; its subscription of the same name keeps the messages."
  value       = google_pubsub_topic.dead_letter.id
}

output "push_subscriptions" {
  description = "Filter of each function's push subscription on the events topic, keyed by subscription name."
  value       = { for k, s in google_pubsub_subscription.push : s.name => s.filter if contains(keys(local.push_filters), k) }
}

output "landing_bucket" {
  description = "Name of the landing bucket."
  value       = local.landing_bucket
}

output "run_log_table" {
  description = "The run-log table, as project.dataset.table."
  value       = "${google_bigquery_table.run_log.project}.${google_bigquery_table.run_log.dataset_id}.${google_bigquery_table.run_log.table_id}"
}

output "run_latest_status_view" {
  description = "The view of each run's latest status, as project.dataset.view."
  value       = "${google_bigquery_table.run_latest_status.project}.${google_bigquery_table.run_latest_status.dataset_id}.${google_bigquery_table.run_latest_status.table_id}"
}

output "scheduler_jobs" {
  description = "Names of the pipelines' Cloud Scheduler jobs and of the poll tick."
  value       = concat([for j in google_cloud_scheduler_job.pipeline : j.name], [google_cloud_scheduler_job.poll_tick.name])
}

output "image_repository" {
  description = "Docker repository path to tag and push the image to: <region>-docker.pkg.dev/<project>/<repository>."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "config_secret" {
  description = "The Secret Manager secret holding the pipeline file."
  value       = google_secret_manager_secret.config.id
}

output "console_address" {
  description = "IP address of the console's load balancer (the console domain's A record); null without a console."
  value       = local.console ? google_compute_global_address.console[0].address : null
}

output "console_url" {
  description = "URL of the web console behind IAP; null without a console."
  value       = local.console ? "https://${var.console_domain}/" : null
}

output "function_audiences" {
  description = "The audience each function's callers put in their OIDC tokens (with verify_callers), keyed by function."
  value       = local.function_audience
}
