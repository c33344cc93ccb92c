# The image repository. Create it first (`terraform apply -target=module.conveyor.google_artifact_registry_repository.images`),
# push the image, then apply everything: the services need the image to exist.

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = local.prefix
  format        = "DOCKER"
  description   = "Conveyor container images."
  labels        = local.labels

  # A tag names one build forever: deploy by tag (or digest) and roll back to a known image.
  docker_config {
    immutable_tags = true
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.image_retention_count
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s"
    }
  }
}
