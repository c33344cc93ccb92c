# The warehouse side: the datasets pipelines load into, the run-log table (one row per
# transition, schema in run_log_schema.json, kept equal to RUN_LOG_COLUMNS by a test) and a
# view of each run's latest status.

resource "google_bigquery_dataset" "dataset" {
  #checkov:skip=CKV_GCP_81:Encrypted at rest with Google-managed keys; customer-managed keys (a Cloud KMS key ring, rotation and service-agent grants) are an organization decision outside this module
  for_each = local.datasets

  project                    = var.project_id
  dataset_id                 = each.key
  location                   = local.bigquery_location
  labels                     = local.labels
  delete_contents_on_destroy = false
  description = (
    each.key == var.run_log_dataset
    ? "Conveyor run log: one row per pipeline transition."
    : "Tables loaded by Conveyor pipelines."
  )
}

resource "google_bigquery_table" "run_log" {
  #checkov:skip=CKV_GCP_80:Encrypted at rest with Google-managed keys; customer-managed keys (a Cloud KMS key ring, rotation and service-agent grants) are an organization decision outside this module
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.dataset[var.run_log_dataset].dataset_id
  table_id            = var.run_log_table
  description         = "Conveyor run log: one row per transition (stage, load, batch SUBMITTED/RUNNING/SUCCEEDED/FAILED/TIMED_OUT, REJECTED), keyed by event_id."
  labels              = local.labels
  deletion_protection = var.deletion_protection
  schema              = file("${path.module}/run_log_schema.json")
  clustering          = ["pipeline", "run_id"]

  time_partitioning {
    type  = "DAY"
    field = "td_timestamp"
  }
}

# Each run's latest status. Rows of one run are ranked by attempt (a retry supersedes the
# failed attempt), then by step in chain order (a batch row supersedes its load row of the
# same attempt), then by status (a terminal status supersedes RUNNING and SUBMITTED written
# in the same instant), then by time.
resource "google_bigquery_table" "run_latest_status" {
  #checkov:skip=CKV_GCP_80:A view stores no data: its rows are read from the run-log table, whose encryption applies
  project             = var.project_id
  dataset_id          = google_bigquery_table.run_log.dataset_id
  table_id            = "run_latest_status"
  description         = "The latest status of every Conveyor run."
  labels              = local.labels
  deletion_protection = var.deletion_protection

  view {
    use_legacy_sql = false
    query          = <<-SQL
      SELECT * EXCEPT (latest)
      FROM (
        SELECT
          *,
          ROW_NUMBER() OVER (
            PARTITION BY run_id
            ORDER BY
              attempt DESC,
              CASE step WHEN 'poll' THEN 4 WHEN 'submit' THEN 3 WHEN 'load' THEN 2 WHEN 'stage' THEN 1 ELSE 0 END DESC,
              CASE status WHEN 'SUBMITTED' THEN 1 WHEN 'RUNNING' THEN 2 ELSE 3 END DESC,
              td_timestamp DESC
          ) AS latest
        FROM `${google_bigquery_table.run_log.project}.${google_bigquery_table.run_log.dataset_id}.${google_bigquery_table.run_log.table_id}`
      )
      WHERE latest = 1
    SQL
  }
}
