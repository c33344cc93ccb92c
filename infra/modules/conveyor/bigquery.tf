# The warehouse side: the datasets pipelines load into, the run-log table (one row per
# transition, schema in run_log_schema.json, kept equal to RUN_LOG_COLUMNS by a test) and a
# view of each run's latest status.

resource "google_bigquery_dataset" "dataset" {
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

# Each run's latest status: the row that decides the run's state (a job's last attempt that
# failed, else the run's end, else the newest row), with `run_status` (RETRYING while a retry
# is pending). The query is its own file so a test runs it on bqemulator against the Rust
# definition (shared/core/src/run_state.rs).
resource "google_bigquery_table" "run_latest_status" {
  project             = var.project_id
  dataset_id          = google_bigquery_table.run_log.dataset_id
  table_id            = "run_latest_status"
  description         = "The latest status of every Conveyor run."
  labels              = local.labels
  deletion_protection = var.deletion_protection

  view {
    use_legacy_sql = false
    query = templatefile("${path.module}/run_latest_status.sql", {
      run_log = "${google_bigquery_table.run_log.project}.${google_bigquery_table.run_log.dataset_id}.${google_bigquery_table.run_log.table_id}"
    })
  }
}
