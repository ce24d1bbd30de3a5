# The plugin's catalog entry pins its code by sha256: Vault refuses to start
# a file whose digest differs. Vault keeps a running plugin process after a
# catalog update, so a new sha256 takes effect after `plugin reload`.
resource "vault_plugin" "agent_bridge" {
  type    = "secret"
  name    = "agent-bridge"
  command = var.plugin_command
  sha256  = var.plugin_sha256
  version = var.plugin_version
  env     = var.plugin_env
}

resource "vault_mount" "agent_creds" {
  path                      = var.mount_path
  type                      = vault_plugin.agent_bridge.name
  plugin_version            = var.plugin_version
  description               = "agent-bridge: per-call credentials for attested agents"
  default_lease_ttl_seconds = var.mount_default_lease_ttl_seconds
  max_lease_ttl_seconds     = var.mount_max_lease_ttl_seconds
}

# Roles name agents by their JWT `sub`; the plugin trusts an entity alias as
# an agent name only when the alias belongs to this JWT mount.
resource "vault_generic_endpoint" "identity_config" {
  path = "${vault_mount.agent_creds.path}/config/identity"
  data_json = jsonencode({
    jwt_mount_accessor = vault_jwt_auth_backend.agents.accessor
  })
  disable_read   = true
  disable_delete = true
}
