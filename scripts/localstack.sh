#!/usr/bin/env bash
# LocalStack's S3 on 127.0.0.1:${1:-4566}, in the foreground, without Docker, with its state in
# a temporary folder removed on exit: for trying `--storage s3` and `bench --s3`. Then, in
# another shell: export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ACCESS_KEY_ID=test
# AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1; pageview buckets create.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/localstack-env.sh
port="${1:-4566}"
state="$(mktemp -d)"
trap 'rm -rf "$state"' EXIT
echo "== LocalStack S3 on http://127.0.0.1:$port (Ctrl-C stops it)"
cd "$state"
env SERVICES=s3 EAGER_SERVICE_LOADING=1 GATEWAY_LISTEN="127.0.0.1:$port" \
    OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$state/state" DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 \
    "$localstack_python" -m localstack.runtime.main
