# A module states the least it needs; the root (infra/versions.tf) pins the versions it was
# checked with, and infra_lint checks the resources against that schema.
terraform {
  # optional() object attributes and lifecycle preconditions need 1.3; the root uses 1.5's startswith().
  required_version = ">= 1.3"

  required_providers {
    google      = { source = "hashicorp/google", version = ">= 6.50, < 7.0" }
    google-beta = { source = "hashicorp/google-beta", version = ">= 6.50, < 7.0" } # service agents
    time        = { source = "hashicorp/time", version = ">= 0.13, < 1.0" }        # time_sleep
  }
}
