# Cloud Run jobs (`engine: cloud_run_job`): the submit and poll functions run an execution of a
# job with overrides, list and read its executions, and cancel one at its timeout (see
# shared/gcp/src/engines/cloud_run_job.rs). The jobs themselves, with their images and service
# accounts, are deployed outside this module.

variable "cloud_run_jobs_enabled" {
  description = "Pipelines use the `cloud_run_job` engine: submit and poll get a custom role with run.jobs.run, run.jobs.runWithOverrides, run.executions.get, run.executions.list and run.executions.cancel on the project."
  type        = bool
  default     = false
}

# What the engine's four calls need, and nothing more (roles/run.developer would also let the
# functions deploy, change and delete services and jobs).
resource "google_project_iam_custom_role" "cloud_run_job_runner" {
  count = var.cloud_run_jobs_enabled ? 1 : 0

  project     = var.project_id
  role_id     = "${replace(local.prefix, "-", "_")}_cloud_run_job_runner"
  title       = "Conveyor Cloud Run job runner (${local.prefix})"
  description = "Run executions of Cloud Run jobs with overrides, follow them and cancel them."
  permissions = [
    "run.executions.cancel",
    "run.executions.get",
    "run.executions.list",
    "run.jobs.run",
    "run.jobs.runWithOverrides",
  ]
}

resource "google_project_iam_member" "cloud_run_job_runner" {
  for_each = var.cloud_run_jobs_enabled ? toset(["submit", "poll"]) : toset([])

  project = var.project_id
  role    = google_project_iam_custom_role.cloud_run_job_runner[0].id
  member  = google_service_account.function[each.key].member
}
