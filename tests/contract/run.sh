#!/usr/bin/env bash
# Contract test of the HTTP API against its own OpenAPI document, with real tools:
#   1. openapi-spec-validator validates GET /openapi.json (OpenAPI 3.1);
#   2. schemathesis sends generated requests (valid and invalid) to every documented operation
#      and checks each answer: no 5xx, a documented status, the documented content type and a
#      body that matches the documented schema.
# It runs `lifeboat sandbox` on 127.0.0.1 (simulated providers in the same process), so nothing
# leaves the machine except the one-time pip install of the pinned tools into a venv under the
# cargo target dir. Exits non-zero on any failure.
#
#   tests/contract/run.sh                 # from anywhere; CARGO_TARGET_DIR is honoured
#   CONTRACT_MAX_EXAMPLES=50 tests/contract/run.sh   # more examples per operation
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.9.0
MAX_EXAMPLES=${CONTRACT_MAX_EXAMPLES:-10}
SEED=${CONTRACT_SEED:-20}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance

target=${CARGO_TARGET_DIR:-target}
venv="$target/contract-venv"
stamp="$venv/.pinned-$SCHEMATHESIS_VERSION-$VALIDATOR_VERSION"
if [ ! -f "$stamp" ]; then
  echo "== contract: installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator $VALIDATOR_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION"
  touch "$stamp"
fi

echo "== contract: building lifeboat"
cargo build --locked --quiet --bin lifeboat
bin="$target/debug/lifeboat"

work=$(mktemp -d)
sandbox_pid=
cleanup() {
  if [ -n "$sandbox_pid" ]; then kill "$sandbox_pid" 2>/dev/null || true; wait "$sandbox_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" sandbox --listen 127.0.0.1:0 --data "$work/data" >"$work/stdout" 2>"$work/stderr" &
sandbox_pid=$!
base=
for _ in $(seq 1 200); do
  base=$(sed -n 's/^lifeboat listening on //p' "$work/stdout" | head -n 1)
  [ -n "$base" ] && break
  if ! kill -0 "$sandbox_pid" 2>/dev/null; then
    echo "contract: lifeboat sandbox exited before listening" >&2
    cat "$work/stderr" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "contract: lifeboat sandbox did not start within 20 s" >&2
  exit 1
fi
case "$base" in
  http://127.0.0.1:*) ;;
  *) echo "contract: the sandbox listens on $base, not 127.0.0.1" >&2; exit 1 ;;
esac
# The sandbox's fixed demo credentials (printed at its start).
api_key=sandbox-api-key
admin_token=sandbox-admin-token

echo "== contract: validating $base/openapi.json"
"$venv/bin/python" -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1]).read())' \
  "$base/openapi.json" "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

# Each credential on the operations that take it (schemathesis sends one header to all).
run() {
  local what=$1 token=$2
  shift 2
  echo "== contract: schemathesis ($what, $MAX_EXAMPLES examples per operation, seed $SEED)"
  "$venv/bin/schemathesis" run "$work/openapi.json" --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks "$CHECKS" --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --request-timeout 10 --no-color "$@"
}
run "app api and public routes" "$api_key" --exclude-path-regex '^/v1/admin/'
run "admin api" "$admin_token" --include-path-regex '^/v1/admin/'
echo "== contract: ok"
