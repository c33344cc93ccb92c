# The five functions and the console (console.tf): one image, one Cloud Run service each, the
# binary chosen by the container command. The pipeline file comes from Secret Manager, mounted
# read-only.

resource "google_secret_manager_secret" "config" {
  project   = var.project_id
  secret_id = "${local.prefix}-config"
  labels    = local.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "config" {
  secret      = google_secret_manager_secret.config.id
  secret_data = file(var.config_file)

  # The running revision keeps reading its version until the new revision has taken over.
  lifecycle {
    create_before_destroy = true
  }
}

locals {
  config_dir = "/etc/conveyor"
  # The services' environment contract (see docs/deploy.md). PORT is
  # set by Cloud Run from the container port.
  env = merge(var.extra_env, {
    CONVEYOR_CONFIG            = "${local.config_dir}/conveyor.yaml"
    CONVEYOR_ADAPTERS          = "gcp"
    CONVEYOR_LOG_FORMAT        = "json"
    CONVEYOR_LOG               = var.log_filter
    CONVEYOR_PROJECT           = var.project_id
    CONVEYOR_EVENTS_TOPIC      = google_pubsub_topic.events.id
    CONVEYOR_REGION            = var.region
    CONVEYOR_BIGQUERY_LOCATION = local.bigquery_location
  })
  # Each function's service: its sizes (`var.functions`), and who it runs as, who may call it
  # (the custom audience its callers' tokens name) and its environment.
  function_services = {
    for f, settings in local.functions : f => merge(settings, {
      description     = "Conveyor ${f} function."
      ingress         = var.ingress
      audiences       = [local.function_audience[f]]
      service_account = google_service_account.function[f].email
      env             = merge(local.env, local.auth_env[f], lookup(local.function_env, f, {}))
    })
  }
}

resource "google_cloud_run_v2_service" "function" {
  for_each = merge(local.function_services, local.console_service)

  project             = var.project_id
  name                = "${local.prefix}-${each.key}"
  location            = var.region
  description         = each.value.description
  ingress             = each.value.ingress
  deletion_protection = var.deletion_protection
  labels              = merge(local.labels, { conveyor-function = each.key })
  custom_audiences    = each.value.audiences

  template {
    service_account                  = each.value.service_account
    max_instance_request_concurrency = each.value.concurrency
    timeout                          = "${each.value.timeout_seconds}s"
    labels                           = merge(local.labels, { conveyor-function = each.key })

    scaling {
      min_instance_count = each.value.min_instances
      max_instance_count = each.value.max_instances
    }

    containers {
      name    = each.key
      image   = var.image
      command = ["/usr/local/bin/conveyor-${each.key}"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = each.value.cpu
          memory = each.value.memory
        }
        # CPU only while a request is served: the functions do nothing between requests.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = each.value.env
        content {
          name  = env.key
          value = env.value
        }
      }

      volume_mounts {
        name       = "config"
        mount_path = local.config_dir
      }

      # Cloud SQL's Auth Proxy socket for the log function's PostgreSQL sink (onprem.tf).
      dynamic "volume_mounts" {
        for_each = each.key == "log" && length(var.cloudsql_instances) > 0 ? [1] : []
        content {
          name       = "cloudsql"
          mount_path = "/cloudsql"
        }
      }

      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 2
        timeout_seconds       = 1
        failure_threshold     = 15
        http_get {
          path = "/healthz"
        }
      }

      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/healthz"
        }
      }
    }

    dynamic "volumes" {
      for_each = each.key == "log" && length(var.cloudsql_instances) > 0 ? [1] : []
      content {
        name = "cloudsql"
        cloud_sql_instance {
          instances = var.cloudsql_instances
        }
      }
    }

    # Private networks (SSH hosts on-prem, Cloud SQL over private IP): onprem.tf.
    dynamic "vpc_access" {
      for_each = contains(local.private_egress, each.key) ? [var.vpc_egress] : []
      content {
        egress = "PRIVATE_RANGES_ONLY"
        network_interfaces {
          network    = vpc_access.value.network
          subnetwork = vpc_access.value.subnetwork
        }
      }
    }

    volumes {
      name = "config"
      secret {
        secret = google_secret_manager_secret.config.secret_id
        items {
          # Pinned, so a new pipeline file is a new revision of every service.
          version = google_secret_manager_secret_version.config.version
          path    = "conveyor.yaml"
        }
      }
    }
  }

  # A revision that cannot read its configuration would not start, and a grant takes a while
  # to apply everywhere.
  depends_on = [time_sleep.iam_propagation]
}

# Google applies IAM changes within a few minutes, not at once: a resource created right after
# the grant it needs (a service mounting the config secret, a bucket notification publishing
# as Cloud Storage's agent) can be refused on a first apply. This waits once, after those
# grants, and again only when they change.
resource "time_sleep" "iam_propagation" {
  create_duration = var.iam_propagation_wait

  triggers = {
    grants = join(",", sort(concat(
      [for g in google_secret_manager_secret_iam_member.config_reader : g.id],
      [for g in google_secret_manager_secret_iam_member.console_config_reader : g.id],
      [google_pubsub_topic_iam_member.gcs_publisher.id],
    )))
  }
}

# The same after creating Google's service agents, before their first grants.
resource "time_sleep" "service_agents" {
  create_duration = var.iam_propagation_wait

  triggers = {
    agents = join(",", concat(
      [google_project_service_identity.pubsub.email],
      [for a in google_project_service_identity.iap : a.email],
    ))
  }
}
