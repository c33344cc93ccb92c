# The web console: a sixth Cloud Run service (the `conveyor-console` binary of the same
# image) behind Identity-Aware Proxy. It reads the run log with read-only roles and draws the
# pipelines from the same pipeline file. Created when `console_domain` is set: IAP sits on an
# external Application Load Balancer (serverless NEG → backend service with IAP → HTTPS with a
# Google-managed certificate for that domain), and the service accepts traffic from the load
# balancer only.

locals {
  console = var.console_domain != null
  # With `console_operators`, the console offers re-run and mark-success: it asks the submit
  # function (`POST /rerun`, `/mark-success`) with its own ID token, as `conveyor rerun
  # --remote` does, and knows the caller from IAP's signed header (for this backend service).
  console_actions = local.console && length(var.console_operators) > 0
  console_action_env = local.console_actions ? {
    CONVEYOR_OPERATORS    = join(",", var.console_operators)
    CONVEYOR_SUBMIT_URL   = local.function_audience["submit"]
    CONVEYOR_IAP_AUDIENCE = "/projects/${data.google_project.this.number}/global/backendServices/${google_compute_backend_service.console[0].generated_id}"
  } : {}
  # The console's service (run.tf): no custom audience, as only IAP's agent calls it.
  console_service = local.console ? {
    console = {
      description     = "Conveyor web console (behind IAP)."
      ingress         = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
      audiences       = null
      service_account = google_service_account.console[0].email
      concurrency     = 20
      timeout_seconds = 60
      min_instances   = 0
      max_instances   = 2
      cpu             = "1"
      memory          = "256Mi"
      env = merge({
        CONVEYOR_CONFIG            = "${local.config_dir}/conveyor.yaml"
        CONVEYOR_LOG_FORMAT        = "json"
        CONVEYOR_LOG               = var.log_filter
        CONVEYOR_PROJECT           = var.project_id
        CONVEYOR_BIGQUERY_LOCATION = local.bigquery_location
      }, local.console_action_env)
    }
  } : {}
}

# Google's IAP service agent calls the service once IAP has let a user through. Enabling the
# IAP API does not create it: granting it a role before it exists fails the apply ("service
# account ... does not exist"). google_project_service_identity creates it.
resource "google_project_service_identity" "iap" {
  provider = google-beta
  count    = local.console ? 1 : 0

  project = var.project_id
  service = "iap.googleapis.com"
}

resource "google_service_account" "console" {
  count = local.console ? 1 : 0

  project      = var.project_id
  account_id   = "${local.prefix}-console"
  display_name = "Conveyor console"
  description  = "Runs the Conveyor console: reads the run log; with console_operators, asks the submit function to re-run and mark success."
}

# The operators' actions: the console calls the submit function (which also admits its
# account in CONVEYOR_AUTH_ALLOWED, main.tf).
resource "google_cloud_run_v2_service_iam_member" "console_submit_invoker" {
  count = local.console_actions ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function["submit"].name
  role     = "roles/run.invoker"
  member   = google_service_account.console[0].member
}

# Read-only: the run-log dataset's tables, and query jobs (which BigQuery runs in the project).
resource "google_bigquery_dataset_iam_member" "console_run_log_reader" {
  count = local.console ? 1 : 0

  project    = var.project_id
  dataset_id = google_bigquery_dataset.dataset[var.run_log_dataset].dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = google_service_account.console[0].member
}

resource "google_project_iam_member" "console_bigquery_jobs" {
  count = local.console ? 1 : 0

  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.console[0].member
}

resource "google_secret_manager_secret_iam_member" "console_config_reader" {
  count = local.console ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.config.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.console[0].member
}

# The console's Cloud Run service is one of run.tf's services,
# google_cloud_run_v2_service.function["console"]: the same image, configuration mount and
# probes; its own account, sizes and environment, and traffic from the load balancer only.
# It was google_cloud_run_v2_service.console[0]: the same service, moved in the state, not
# recreated.
moved {
  from = google_cloud_run_v2_service.console[0]
  to   = google_cloud_run_v2_service.function["console"]
}

# Only IAP's agent may invoke the service: every request has passed IAP first.
resource "google_cloud_run_v2_service_iam_member" "console_iap_invoker" {
  count = local.console ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function["console"].name
  role     = "roles/run.invoker"
  member   = google_project_service_identity.iap[0].member

  # A new service agent's first grant may be refused for a while.
  depends_on = [time_sleep.service_agents]
}

resource "google_compute_region_network_endpoint_group" "console" {
  count = local.console ? 1 : 0

  project               = var.project_id
  name                  = "${local.prefix}-console"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  # By name, not by reference: the service's settings name the backend service (IAP's
  # audience), so the endpoint group must not wait for the service.
  cloud_run {
    service = "${local.prefix}-console"
  }
}

resource "google_compute_backend_service" "console" {
  count = local.console ? 1 : 0

  project               = var.project_id
  name                  = "${local.prefix}-console"
  description           = "Conveyor console, behind IAP."
  protocol              = "HTTPS"
  load_balancing_scheme = "EXTERNAL_MANAGED"

  backend {
    group = google_compute_region_network_endpoint_group.console[0].id
  }

  iap {
    enabled              = true
    oauth2_client_id     = var.console_oauth_client_id
    oauth2_client_secret = var.console_oauth_client_secret
  }

  log_config {
    enable = true
  }
}

# Who may open the console: IAP's accessor role on this backend only.
resource "google_iap_web_backend_service_iam_member" "console_users" {
  for_each = local.console ? toset(var.console_users) : toset([])

  project             = var.project_id
  web_backend_service = google_compute_backend_service.console[0].name
  role                = "roles/iap.httpsResourceAccessor"
  member              = each.value
}

resource "google_compute_url_map" "console" {
  count = local.console ? 1 : 0

  project         = var.project_id
  name            = "${local.prefix}-console"
  description     = "Conveyor console."
  default_service = google_compute_backend_service.console[0].id
}

resource "google_compute_managed_ssl_certificate" "console" {
  count = local.console ? 1 : 0

  project = var.project_id
  name    = "${local.prefix}-console"

  managed {
    domains = [var.console_domain]
  }
}

resource "google_compute_ssl_policy" "console" {
  count = local.console ? 1 : 0

  project         = var.project_id
  name            = "${local.prefix}-console"
  description     = "TLS 1.2 or later, modern ciphers."
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "console" {
  count = local.console ? 1 : 0

  project          = var.project_id
  name             = "${local.prefix}-console"
  description      = "Conveyor console."
  url_map          = google_compute_url_map.console[0].id
  ssl_certificates = [google_compute_managed_ssl_certificate.console[0].id]
  ssl_policy       = google_compute_ssl_policy.console[0].id
}

resource "google_compute_global_address" "console" {
  count = local.console ? 1 : 0

  project     = var.project_id
  name        = "${local.prefix}-console"
  description = "Conveyor console: point the console domain's A record here."
}

resource "google_compute_global_forwarding_rule" "console" {
  count = local.console ? 1 : 0

  project               = var.project_id
  name                  = "${local.prefix}-console"
  description           = "Conveyor console, HTTPS."
  target                = google_compute_target_https_proxy.console[0].id
  ip_address            = google_compute_global_address.console[0].id
  port_range            = "443"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
