# Lineage (`lineage:` in the pipeline file): the log function posts OpenLineage run events to
# Dataplex's Data Lineage API (projects.locations.processOpenLineageRunEvent, see
# shared/gcp/src/lineage.rs) in `lineage_location`.

variable "lineage_enabled" {
  description = "The pipeline file has `lineage:`: the log function may record OpenLineage run events in Dataplex's Data Lineage API (a custom role with datalineage.locations.processOpenLineageMessage), in `lineage_location`."
  type        = bool
  default     = false
}

variable "lineage_location" {
  description = "The Data Lineage location the log function records OpenLineage events in (CONVEYOR_LINEAGE_LOCATION): a region or `us` / `eu`; null: `region`."
  type        = string
  default     = null
}

locals {
  lineage_env = var.lineage_enabled ? { CONVEYOR_LINEAGE_LOCATION = coalesce(var.lineage_location, var.region) } : {}
}

# What processOpenLineageRunEvent needs, and nothing more (roles/datalineage.producer would also
# let the log function write lineage events of any kind through the other methods).
resource "google_project_iam_custom_role" "lineage_producer" {
  count = var.lineage_enabled ? 1 : 0

  project     = var.project_id
  role_id     = "${replace(local.prefix, "-", "_")}_lineage_producer"
  title       = "Conveyor lineage producer (${local.prefix})"
  description = "Record OpenLineage run events of Conveyor pipelines in Dataplex's Data Lineage API."
  permissions = [
    "datalineage.locations.processOpenLineageMessage",
  ]
}

resource "google_project_iam_member" "log_lineage" {
  count = var.lineage_enabled ? 1 : 0

  project = var.project_id
  role    = google_project_iam_custom_role.lineage_producer[0].id
  member  = google_service_account.function["log"].member
}

# The stage function sends each stage run's events itself (START, then COMPLETE or FAIL).
resource "google_project_iam_member" "stage_lineage" {
  count = var.lineage_enabled ? 1 : 0

  project = var.project_id
  role    = google_project_iam_custom_role.lineage_producer[0].id
  member  = google_service_account.function["stage"].member
}
