#!/usr/bin/env bash
# Property-based tests of Keel's management API from its own OpenAPI document,
# with schemathesis, against a keeld that is already running.
#
#   tests/api/schemathesis.sh --url https://127.0.0.1:PORT --token-file FILE \
#       (--ca CERT.pem | --insecure) [--max-examples N] [--stateful-examples N] \
#       [--timeout SECONDS] [--seed N] [--report-dir DIR]
#
# The token may also come from $KEEL_API_TOKEN (a file keeps it off the process
# list). The run is bounded: --max-examples cases per operation in the examples,
# coverage and fuzzing phases (default 8), --stateful-examples scenarios in the
# stateful phase (default 30), one request at most 10 s, both runs together
# --timeout seconds (default 120).
#
# Checks: no 5xx (not_a_server_error; 501 accepted only where the engine may lack
# a feature, see schemathesis.toml), status codes, content types, headers and
# response bodies as documented, 405 for undocumented methods, 401 without
# credentials, in single requests and along the links of the stateful phase.
# Exit status: 0 when every check passed, 1 on failures, 2 on a usage or
# installation error, 124 on timeout.
#
# Installation: uses `schemathesis` from PATH if present; otherwise installs the
# pinned version into a virtualenv under $CARGO_TARGET_DIR (or ./target), falling
# back to `python3 -m pip install --user`. On a fresh Debian that needs python3 and
# python3-venv (apt-get install -y python3 python3-venv).
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

url=""
token_file=""
tls=""
max_examples=8
stateful_examples=30
timeout_s=120
seed=1
report_dir=""

usage() {
    sed -n "2,8p" "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --url) url="${2:?}"; shift 2 ;;
        --token-file) token_file="${2:?}"; shift 2 ;;
        --ca) tls="${2:?}"; shift 2 ;;
        --insecure) tls="false"; shift ;;
        --max-examples) max_examples="${2:?}"; shift 2 ;;
        --stateful-examples) stateful_examples="${2:?}"; shift 2 ;;
        --timeout) timeout_s="${2:?}"; shift 2 ;;
        --seed) seed="${2:?}"; shift 2 ;;
        --report-dir) report_dir="${2:?}"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "schemathesis.sh: unknown argument $1" >&2; usage ;;
    esac
done

[ -n "$url" ] || { echo "schemathesis.sh: --url is required" >&2; usage; }
[ -n "$tls" ] || { echo "schemathesis.sh: give --ca CERT.pem or --insecure" >&2; usage; }
if [ -n "$token_file" ]; then
    KEEL_API_TOKEN="$(tr -d '[:space:]' < "$token_file")"
fi
[ -n "${KEEL_API_TOKEN:-}" ] || { echo "schemathesis.sh: no token (--token-file or \$KEEL_API_TOKEN)" >&2; exit 2; }
export KEEL_API_TOKEN

# Finds schemathesis, installing it if missing; prints the command to run.
find_schemathesis() {
    if command -v schemathesis >/dev/null 2>&1; then
        command -v schemathesis
        return 0
    fi
    local venv="${CARGO_TARGET_DIR:-$repo/target}/schemathesis-venv"
    if [ -x "$venv/bin/schemathesis" ]; then
        echo "$venv/bin/schemathesis"
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || {
        echo "schemathesis.sh: python3 is missing (apt-get install -y python3 python3-venv)" >&2
        return 1
    }
    echo "schemathesis.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    if python3 -m venv "$venv" >&2 \
        && "$venv/bin/python" -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION" >&2; then
        echo "$venv/bin/schemathesis"
        return 0
    fi
    rm -rf "$venv"
    echo "schemathesis.sh: venv install failed; trying python3 -m pip install --user" >&2
    if python3 -m pip install --quiet --user "schemathesis==$SCHEMATHESIS_VERSION" >&2; then
        local user_bin
        user_bin="$(python3 -m site --user-base)/bin"
        if [ -x "$user_bin/schemathesis" ]; then
            echo "$user_bin/schemathesis"
            return 0
        fi
    fi
    echo "schemathesis.sh: could not install schemathesis (apt-get install -y python3-venv, then retry)" >&2
    return 1
}

st="$(find_schemathesis)" || exit 2

if [ -n "$report_dir" ]; then
    mkdir -p "$report_dir"
fi

checks="not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance"
checks="$checks,response_schema_conformance,unsupported_method,missing_required_header,ignored_auth"
# Not use_after_free / ensure_resource_availability: a delete here is a long
# operation (the resource reads as Deleting until it is gone, as the documents
# say), and a 404 right after a create can name another resource the generated
# request referred to (a missing source volume), not the created one.
stateful_checks="$checks"

# One schemathesis run of `phases` with `examples` cases per operation, killed
# when the overall deadline passes.
run_phases() {
    local phases="$1" examples="$2" run_checks="$3" name="$4"
    local left=$((deadline - SECONDS))
    if [ "$left" -le 0 ]; then
        echo "schemathesis.sh: no time left for the $name run" >&2
        return 124
    fi
    local reports=()
    if [ -n "$report_dir" ]; then
        reports=(--report junit --report-junit-path "$report_dir/$name.xml")
    fi
    echo "=== schemathesis: $phases, $examples examples per operation, at most ${left}s ===" >&2
    timeout --kill-after=10 "$left" \
        "$st" --config-file "$here/schemathesis.toml" --no-color run "$url/openapi.json" \
        --tls-verify "$tls" \
        --header "Authorization: Bearer $KEEL_API_TOKEN" \
        --checks "$run_checks" \
        --phases "$phases" \
        --max-examples "$examples" \
        --seed "$seed" \
        --workers 1 \
        --request-timeout 10 \
        --wait-for-schema 15 \
        --generation-database none \
        --suppress-health-check all \
        --output-truncate true \
        ${reports[@]+"${reports[@]}"}
}

# Single-request phases first (every operation, valid and invalid inputs), then
# the stateful phase, which follows the document's links from creates to the
# created resources (get, update, rollback, delete) with the same checks; the
# use-after-delete checks are not among them (see above).
deadline=$((SECONDS + timeout_s))
status=0
run_phases examples,coverage,fuzzing "$max_examples" "$checks" requests || status=$?
if [ "$status" -eq 0 ]; then
    run_phases stateful "$stateful_examples" "$stateful_checks" stateful || status=$?
fi
exit "$status"
