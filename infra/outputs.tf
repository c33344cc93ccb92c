output "service_urls" {
  description = "URL of each function's Cloud Run service, keyed by function (stage, load, submit, poll, log)."
  value       = module.conveyor.service_urls
}

output "service_accounts" {
  description = "Email of each function's service account."
  value       = module.conveyor.service_accounts
}

output "invoker_service_account" {
  description = "Email of the account Pub/Sub and Cloud Scheduler call the services as."
  value       = module.conveyor.invoker_service_account
}

output "batch_service_account" {
  description = "Email of the account batch jobs run as (set it as the pipelines' `batch.service_account`); null without a Google Cloud batch engine."
  value       = module.conveyor.batch_service_account
}

output "events_topic" {
  description = "Full name of the events topic."
  value       = module.conveyor.events_topic
}

output "dead_letter_topic" {
  description = "Full name of the dead-letter topic."
  value       = module.conveyor.dead_letter_topic
}

output "landing_bucket" {
  description = "Name of the landing bucket."
  value       = module.conveyor.landing_bucket
}

output "run_log_table" {
  description = "The run-log table (project.dataset.table)."
  value       = module.conveyor.run_log_table
}

output "run_latest_status_view" {
  description = "The view of each run's latest status (project.dataset.view)."
  value       = module.conveyor.run_latest_status_view
}

output "scheduler_jobs" {
  description = "Names of the Cloud Scheduler jobs (pipelines and poll tick)."
  value       = module.conveyor.scheduler_jobs
}

output "image_repository" {
  description = "Docker repository to push the image to."
  value       = module.conveyor.image_repository
}

output "console_url" {
  description = "URL of the web console behind IAP; null without console_domain."
  value       = module.conveyor.console_url
}

output "console_address" {
  description = "IP address to point the console domain's A record at; null without console_domain."
  value       = module.conveyor.console_address
}

output "function_audiences" {
  description = "The audience each function's callers put in their OIDC tokens (with verify_callers), keyed by function."
  value       = module.conveyor.function_audiences
}
