#!/bin/sh
# Wait for OpenBao and the attestor's JWKS, then apply vault-config/.
# VAULT_ADDR, VAULT_TOKEN and TF_VAR_postgres_password come from compose.
set -eu
for url in "$VAULT_ADDR/v1/sys/health" "http://attestor:8300/.well-known/jwks.json"; do
    tries=0
    until python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 60 ] || { echo "configure: $url not ready after 60 s" >&2; exit 1; }
        sleep 1
    done
done
export TF_VAR_plugin_sha256="$(cat plugin.sha256)"
exec env PYTHONPATH=scripts python -m devstack.tfapply_cli apply \
    --var-file deploy/configure/compose.tfvars \
    --state /var/lib/agent-bridge-configure/state.json
