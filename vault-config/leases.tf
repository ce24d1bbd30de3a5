# Deleting a connection, role or AWS key first would leave outstanding
# leases unable to revoke their database and IAM users. Terraform destroys
# this resource before everything it depends on, so its provisioner revokes
# every lease of the mount, database/ and aws/ alike (synchronously: each
# plugin revoke finishes), while the connections, roles and keys still
# exist. The connection's password policy stays until then too, so a destroy
# that stops at a failed revoke leaves a connection that can still mint.
# VAULT_ADDR and VAULT_TOKEN come from Terraform's own environment.
resource "terraform_data" "revoke_leases_on_destroy" {
  input = {
    prefix    = "${vault_mount.agent_creds.path}/"
    vault_cli = var.vault_cli
  }

  depends_on = [
    vault_database_secret_backend_connection.postgres,
    vault_password_policy.postgres,
    vault_database_secret_backend_role.role,
    vault_generic_endpoint.role_agents,
    vault_generic_endpoint.identity_config,
    vault_generic_endpoint.aws_root_keys,
    vault_generic_endpoint.aws_root,
    vault_aws_secret_backend_role.role,
    vault_generic_endpoint.aws_role_agents,
  ]

  provisioner "local-exec" {
    when    = destroy
    command = "\"$VAULT_CLI\" lease revoke -sync -prefix \"$LEASE_PREFIX\""
    environment = {
      VAULT_CLI    = self.input.vault_cli
      LEASE_PREFIX = self.input.prefix
    }
  }
}
