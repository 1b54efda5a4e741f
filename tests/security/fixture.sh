#!/usr/bin/env bash
# Test fixture for the bindings' TLS + token tests: makes, in DIR,
#   ca.pem              a throwaway CA
#   server.pem/.key     a certificate for localhost and 127.0.0.1 signed by it
#   other-ca.pem        a second CA that did not sign anything (wrong-CA tests)
#   access.json         tokens (hashed) for the tests:
#                         "test-full-token"  tenant acme, every operation
#                         "test-read-token"  tenant acme, read/subscribe/kv_read
# Usage: tests/security/fixture.sh FLOWMESH_BIN DIR      (needs the openssl CLI)
set -eu
bin="$1"
dir="$2"
command -v openssl >/dev/null || { echo "fixture.sh: the openssl CLI is needed" >&2; exit 2; }
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" >/dev/null 2>&1 || { echo "fixture.sh: failed: $*" >&2; exit 1; }; }
quiet openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=flowmesh test CA"
quiet openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj "/CN=other CA"
quiet openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
quiet openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext
full="$("$bin" token hash test-full-token)"
read_only="$("$bin" token hash test-read-token)"
cat > access.json <<JSON
{"tokens": [
  {"id": "test-full", "sha256": "$full", "tenant": "acme",
   "grants": [{"namespace": "*", "ops": ["*"]}]},
  {"id": "test-read", "sha256": "$read_only", "tenant": "acme",
   "grants": [{"namespace": "*", "ops": ["read", "subscribe", "kv_read"]}]}
]}
JSON
