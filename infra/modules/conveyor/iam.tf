# One service account per function, each granted only what its step touches, on the exact
# resource where IAM allows it: the landing bucket, the events topic, the datasets, the
# config secret, the batch runtime account. No basic roles and no `*.admin` role anywhere
# (scripts/infra-check.sh fails on one).

resource "google_service_account" "function" {
  for_each = local.function_defaults

  project      = var.project_id
  account_id   = "${local.prefix}-${each.key}"
  display_name = "Conveyor ${each.key} function"
  description  = "Runs the Conveyor ${each.key} Cloud Run service."
}

# Pub/Sub push subscriptions and Cloud Scheduler jobs call the services with OIDC tokens of
# this account; it can invoke the five services and nothing else.
resource "google_service_account" "invoker" {
  project      = var.project_id
  account_id   = "${local.prefix}-invoker"
  display_name = "Conveyor invoker"
  description  = "Identity of Pub/Sub pushes and Cloud Scheduler jobs calling Conveyor."
}

locals {
  # Engines whose jobs run as a service account Conveyor names (Dataproc batches and clusters,
  # Dataflow workers). Data Fusion runs pipelines as its own instance's account: it needs
  # neither a batch account nor actAs on one.
  gcp_batch = var.dataproc_enabled || var.dataflow_enabled
  # The account batch jobs run as: the operator's, or one created here.
  create_batch_account = local.gcp_batch && var.batch_service_account_email == null
  batch_account_email = (
    var.batch_service_account_email != null ? var.batch_service_account_email
    : local.create_batch_account ? google_service_account.batch[0].email : null
  )

  # Every step publishes: its chaining event, and a `dev.conveyor.step.failed` when it rejects
  # a request.
  publishers = keys(local.function_defaults)

  bucket_grants = merge(
    {
      # Stage copies objects, replacing changed ones (create and delete), and keeps its
      # watermark and lease under _conveyor/stage/. Load reads the arrived object's generation
      # (BigQuery reads its content as this account), lists a marker's folder, and keeps load
      # windows under _conveyor/windows/ (create, list, read, delete); poll closes windows and
      # re-runs their loads. The custom role holds exactly those four permissions: objectUser
      # would add update, restore, move, folders and multipart uploads. Submit and poll take
      # the max_active_runs slots and submit claims under _conveyor/slots/ and
      # _conveyor/claims/ (CONVEYOR_STATE_BUCKET): create, read, list, delete.
      "stage-landing"  = { function = "stage", bucket = local.landing_bucket, role = google_project_iam_custom_role.landing_writer.id }
      "load-landing"   = { function = "load", bucket = local.landing_bucket, role = google_project_iam_custom_role.landing_writer.id }
      "poll-landing"   = { function = "poll", bucket = local.landing_bucket, role = google_project_iam_custom_role.landing_writer.id }
      "submit-landing" = { function = "submit", bucket = local.landing_bucket, role = google_project_iam_custom_role.landing_writer.id }
    },
    { for b in var.source_buckets : "stage-source-${b}" => { function = "stage", bucket = b, role = "roles/storage.objectViewer" } },
    # Launching a job reads its code or template (a flex template's spec) as the caller.
    { for pair in setproduct(["submit", "poll"], var.batch_code_buckets) : "${pair[0]}-code-${pair[1]}" => { function = pair[0], bucket = pair[1], role = "roles/storage.objectViewer" } },
  )

  dataset_grants = merge(
    # Load jobs create and append to tables of the target datasets.
    { for d in var.datasets : "load-${d}" => { function = "load", dataset = d, role = "roles/bigquery.dataEditor" } },
    # `sql` jobs run as submit and write tables of the datasets; `for_each` reads a
    # configuration table from them.
    { for d in var.datasets : "submit-${d}" => { function = "submit", dataset = d, role = "roles/bigquery.dataEditor" } },
    # Poll runs BigQuery jobs as itself too: a load re-run after a transient failure, a load
    # window it closes, a `sql` job's attempts after the first, a fan-in run's first job and
    # its `for_each` reads.
    { for d in var.datasets : "poll-${d}" => { function = "poll", dataset = d, role = "roles/bigquery.dataEditor" } },
    {
      # Writes run-log rows (insertAll, no job) and makes sure the table exists.
      "log-run-log" = { function = "log", dataset = var.run_log_dataset, role = "roles/bigquery.dataEditor" }
      # Reads the run log: an `after` pipeline's upstream runs, a run's earlier attempts. The
      # adapter's create-if-missing is skipped by readers without tables.create.
      "submit-run-log" = { function = "submit", dataset = var.run_log_dataset, role = "roles/bigquery.dataViewer" }
      # Read the newest pause row before an arrival or a scheduled tick starts anything
      # (`conveyor pause`): a paused pipeline's are recorded PAUSED instead.
      "load-run-log"  = { function = "load", dataset = var.run_log_dataset, role = "roles/bigquery.dataViewer" }
      "stage-run-log" = { function = "stage", dataset = var.run_log_dataset, role = "roles/bigquery.dataViewer" }
      # Reads open batches from the run log. dataEditor rather than dataViewer because the
      # BigQuery adapter makes sure the run-log table exists (tables.insert, 409 when it does),
      # which needs bigquery.tables.create on the dataset.
      "poll-run-log" = { function = "poll", dataset = var.run_log_dataset, role = "roles/bigquery.dataEditor" }
    },
  )

  # Project-level roles, only where IAM has no narrower resource: BigQuery jobs run in the
  # project; Dataproc batches and Dataflow jobs have no per-job IAM before they exist.
  # BigQuery jobs: load (load jobs, message rows as DML, the pause query), stage (the pause
  # query), submit (`sql` jobs, run-log and configuration-table queries), poll (the open-batch
  # query). Not log: it writes the run log
  # with insertAll and runs no job.
  project_grants = merge(
    { for f in ["stage", "load", "submit", "poll"] : "${f}-bigquery-jobs" => { function = f, role = "roles/bigquery.jobUser" } },
    { "poll-bigquery-job-follower" = { function = "poll", role = google_project_iam_custom_role.bigquery_job_follower.id } },
    var.dataproc_enabled ? { for f in ["submit", "poll"] : "${f}-dataproc" => { function = f, role = google_project_iam_custom_role.dataproc_runner[0].id } } : {},
    var.dataflow_enabled ? { for f in ["submit", "poll"] : "${f}-dataflow" => { function = f, role = "roles/dataflow.developer" } } : {},
  )
}

resource "google_storage_bucket_iam_member" "function" {
  for_each = local.bucket_grants

  bucket = each.value.bucket
  role   = each.value.role
  member = google_service_account.function[each.value.function].member
}

resource "google_pubsub_topic_iam_member" "events_publisher" {
  for_each = toset(local.publishers)

  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.function[each.key].member
}

resource "google_bigquery_dataset_iam_member" "function" {
  for_each = local.dataset_grants

  project    = var.project_id
  dataset_id = google_bigquery_dataset.dataset[each.value.dataset].dataset_id
  role       = each.value.role
  member     = google_service_account.function[each.value.function].member
}

# What the Dataproc engines call, and nothing more (roles/dataproc.editor would also let
# submit and poll update, delete or read every cluster, job and workflow of the project):
# `dataproc_serverless` creates and reads batches and cancels a batch's operation;
# `dataproc_cluster` creates, reads and deletes its ephemeral cluster and submits (jobs.create
# with clusters.use), reads and cancels the job on it. See shared/gcp/src/engines/dataproc_*.rs.
resource "google_project_iam_custom_role" "dataproc_runner" {
  count = var.dataproc_enabled ? 1 : 0

  project     = var.project_id
  role_id     = "${replace(local.prefix, "-", "_")}_dataproc_runner"
  title       = "Conveyor Dataproc runner (${local.prefix})"
  description = "Create, follow and cancel the Dataproc batches, ephemeral clusters and jobs of Conveyor pipelines."
  permissions = [
    "dataproc.batches.create",
    "dataproc.batches.get",
    "dataproc.batches.cancel",
    "dataproc.operations.get",
    "dataproc.operations.cancel",
    "dataproc.clusters.create",
    "dataproc.clusters.get",
    "dataproc.clusters.delete",
    "dataproc.clusters.use",
    "dataproc.jobs.create",
    "dataproc.jobs.get",
    "dataproc.jobs.cancel",
  ]
}

# What the landing bucket's writers do, and nothing more (see local.bucket_grants).
resource "google_project_iam_custom_role" "landing_writer" {
  project     = var.project_id
  role_id     = "${replace(local.prefix, "-", "_")}_landing_writer"
  title       = "Conveyor landing writer (${local.prefix})"
  description = "Create, read, list and delete objects of the Conveyor landing bucket (copies, watermarks, leases, load windows); granted on that bucket only."
  permissions = [
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.get",
    "storage.objects.list",
  ]
}

# The poll function follows BigQuery jobs that other accounts inserted: load jobs (the load
# function's account) and `sql` jobs (submit's). roles/bigquery.jobUser lets an account read
# and cancel only its own jobs, so poll gets exactly jobs.get and jobs.update (cancel on
# timeout) on the project's jobs, where the predefined roles that hold them grant far more.
resource "google_project_iam_custom_role" "bigquery_job_follower" {
  project     = var.project_id
  role_id     = "${replace(local.prefix, "-", "_")}_bigquery_job_follower"
  title       = "Conveyor BigQuery job follower (${local.prefix})"
  description = "Read and cancel the BigQuery load and query jobs that other Conveyor functions inserted."
  permissions = [
    "bigquery.jobs.get",
    "bigquery.jobs.update",
  ]
}

resource "google_project_iam_member" "function" {
  for_each = local.project_grants

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.function[each.value.function].member
}

# Data Fusion: roles/datafusion.runner gives access to an instance's runtime (the CDAP REST
# API). On an instance with role-based access control the namespace's permissions decide as
# well: starting and stopping a run needs datafusion.pipelines.execute, which runner lacks;
# roles/datafusion.developer is the narrowest predefined role that holds it (Data Fusion RBAC
# takes no custom roles).
resource "google_data_fusion_instance_iam_member" "runner" {
  for_each = var.datafusion_instance == null ? {} : merge(
    { for f in ["submit", "poll"] : "${f} runner" => { function = f, role = "roles/datafusion.runner" } },
    var.datafusion_instance.rbac ? { for f in ["submit", "poll"] : "${f} developer" => { function = f, role = "roles/datafusion.developer" } } : {},
  )

  project = var.project_id
  region  = var.datafusion_instance.region
  name    = var.datafusion_instance.name
  role    = each.value.role
  member  = google_service_account.function[each.value.function].member
}

# The pipeline file, mounted into every service.
resource "google_secret_manager_secret_iam_member" "config_reader" {
  for_each = local.function_defaults

  project   = var.project_id
  secret_id = google_secret_manager_secret.config.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function[each.key].member
}

# Secrets holding stage sources' credentials (S3 keys): stage reads exactly these.
resource "google_secret_manager_secret_iam_member" "stage_source_secrets" {
  for_each = toset(var.stage_secret_ids)

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function["stage"].member
}

# Batch runtime account: jobs run as it; submit and poll may act as it and as no other.
resource "google_service_account" "batch" {
  count = local.create_batch_account ? 1 : 0

  project      = var.project_id
  account_id   = "${local.prefix}-batch"
  display_name = "Conveyor batch runtime"
  description  = "Identity of the Dataproc and Dataflow jobs that Conveyor starts."
}

resource "google_project_iam_member" "batch" {
  for_each = local.create_batch_account ? toset(concat(
    var.dataproc_enabled ? ["roles/dataproc.worker"] : [],
    var.dataflow_enabled ? ["roles/dataflow.worker"] : [],
    ["roles/bigquery.jobUser"],
  )) : toset([])

  project = var.project_id
  role    = each.key
  member  = google_service_account.batch[0].member
}

resource "google_bigquery_dataset_iam_member" "batch" {
  for_each = local.create_batch_account ? toset(var.datasets) : toset([])

  project    = var.project_id
  dataset_id = google_bigquery_dataset.dataset[each.key].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.batch[0].member
}

resource "google_storage_bucket_iam_member" "batch" {
  for_each = local.create_batch_account ? merge(
    # Jobs read what was loaded and their code.
    { landing = { bucket = local.landing_bucket, role = "roles/storage.objectViewer" } },
    { for b in var.batch_code_buckets : "code-${b}" => { bucket = b, role = "roles/storage.objectViewer" } },
    # Dataflow's temp and staging files: the launcher and the workers write, read, list and
    # delete them.
    { for b in var.dataflow_staging_buckets : "staging-${b}" => { bucket = b, role = "roles/storage.objectUser" } },
  ) : {}

  bucket = each.value.bucket
  role   = each.value.role
  member = google_service_account.batch[0].member
}

# A flex template's launcher VM pulls the template's image as the batch account.
resource "google_artifact_registry_repository_iam_member" "batch" {
  for_each = local.create_batch_account ? { for r in var.batch_image_repositories : "${r.location}/${r.name}" => r } : {}

  project    = var.project_id
  location   = each.value.location
  repository = each.value.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.batch[0].member
}

resource "google_service_account_iam_member" "batch_user" {
  for_each = local.gcp_batch ? toset(["submit", "poll"]) : toset([])

  service_account_id = "projects/${var.project_id}/serviceAccounts/${local.batch_account_email}"
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.function[each.key].member
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = local.function_defaults

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.invoker.member
}

# Operators who start runs by hand call stage and submit, never load, poll or log.
resource "google_cloud_run_v2_service_iam_member" "manual" {
  for_each = { for pair in setproduct(["stage", "submit"], var.manual_invokers) : "${pair[0]} ${pair[1]}" => pair }

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function[each.value[0]].name
  role     = "roles/run.invoker"
  member   = each.value[1]
}

# Operators: `conveyor status` queries the run log; `conveyor replay` pulls the dead-letter
# subscription, re-publishes to the events (and notifications) topic and records each replay
# in the run log.
resource "google_project_iam_member" "operator_bigquery_jobs" {
  for_each = toset(var.operators)

  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = each.key
}

resource "google_bigquery_dataset_iam_member" "operator_run_log" {
  for_each = toset(var.operators)

  project    = var.project_id
  dataset_id = google_bigquery_dataset.dataset[var.run_log_dataset].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = each.key
}

resource "google_pubsub_subscription_iam_member" "operator_dead_letters" {
  for_each = toset(var.operators)

  project      = var.project_id
  subscription = google_pubsub_subscription.dead_letter["events"].name
  role         = "roles/pubsub.subscriber"
  member       = each.key
}

resource "google_pubsub_topic_iam_member" "operator_replay" {
  for_each = {
    for pair in setproduct(var.operators, ["events", "notifications"]) : "${pair[1]} ${pair[0]}" => {
      member = pair[0]
      topic  = pair[1] == "events" ? google_pubsub_topic.events.name : google_pubsub_topic.gcs_notifications.name
    }
  }

  project = var.project_id
  topic   = each.value.topic
  role    = "roles/pubsub.publisher"
  member  = each.value.member
}

# Pub/Sub mints the push requests' OIDC tokens as the invoker. Projects created before
# April 2021 need this grant explicitly; later ones have it through the service agent role.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent

  depends_on = [time_sleep.service_agents]
}
