# Variables for a single host running OpenBao, PostgreSQL and agent-attestor
# on 127.0.0.1. Give the PostgreSQL password as TF_VAR_postgres_password.
plugin_sha256  = "replace-with-the-sha256-that-scripts/build-plugin-prints"
plugin_command = "agent-bridge-plugin"
plugin_version = "v0.1.0"
plugin_env     = ["SHIV_ROOT=/var/lib/agent-bridge/shiv"]

jwks_url     = "http://127.0.0.1:8300/.well-known/jwks.json"
bound_issuer = "http://127.0.0.1:8300"

agents = {
  dev = {
    roles    = ["demo-readonly"]
    audience = "agent-bridge"
  }
}

postgres = {
  host     = "127.0.0.1"
  port     = 5432
  database = "demo"
  username = "vault_admin"
  sslmode  = "disable"

  # To generate passwords from a Vault password policy, which needs 4096
  # rounds or more, add these (without password_policy_rules, the policy
  # must already exist):
  # scram_iterations      = 4096
  # password_policy       = "agent-bridge-postgres"
  # password_policy_rules = <<-EOT
  #   length = 32
  #   rule "charset" {
  #     charset = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
  #   }
  # EOT
}

database_roles = {
  demo-readonly = {
    creation_statements = [
      "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
      "GRANT CONNECT ON DATABASE demo TO \"{{name}}\";",
      "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
    ]
    default_ttl = 300
    max_ttl     = 3600
  }
}

vault_cli = "bao"
