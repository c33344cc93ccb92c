terraform {
  # startswith() needs 1.5.
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50" # the schema infra_lint checks against (scripts/infra-check.sh)
    }
    # google_project_service_identity (the IAP and Pub/Sub service agents) is in the beta
    # provider only.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.50" # the schema infra_lint checks against (scripts/infra-check.sh)
    }
    # time_sleep: waits for what Google makes visible late (IAM grants, a new log-based metric).
    time = {
      source  = "hashicorp/time"
      version = "~> 0.13" # the schema infra_lint checks against (scripts/infra-check.sh)
    }
  }

  # State: keep it in a bucket for anything shared, e.g.
  #   terraform init -backend-config="bucket=my-tf-state" -backend-config="prefix=conveyor"
  # after replacing this comment with `backend "gcs" {}`. Without it the state is local.
}
