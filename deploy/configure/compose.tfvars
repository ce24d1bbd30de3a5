# vault-config/ variables for docker-compose.yml. plugin_sha256 and
# postgres_password come from the environment (TF_VAR_...).
plugin_command = "agent-bridge-plugin"
plugin_version = "v0.1.0"
plugin_env     = ["SHIV_ROOT=/var/lib/openbao/shiv"]

jwks_url     = "http://attestor:8300/.well-known/jwks.json"
bound_issuer = "http://attestor:8300"

agents = {
  dev = {
    roles    = ["demo-readonly"]
    audience = "agent-bridge"
  }
}

postgres = {
  host     = "postgres"
  port     = 5432
  database = "demo"
  username = "postgres"
  sslmode  = "disable"
}

database_roles = {
  demo-readonly = {
    creation_statements = [
      "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
      "GRANT CONNECT ON DATABASE demo TO \"{{name}}\";",
      "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
    ]
  }
}

vault_cli = "bao"
