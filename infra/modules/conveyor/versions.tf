terraform {
  # optional() object attributes and lifecycle preconditions need 1.3; the root uses 1.5's startswith().
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50" # the schema infra_lint checks against (scripts/infra-check.sh)
    }
  }
}
