locals {
  database_backend = "${vault_mount.agent_creds.path}/database"

  # A role's allowed agents are the agents that list it, so var.agents is
  # the one place that grants a role.
  allowed_agents = {
    for role in keys(var.database_roles) :
    role => sort([for name, agent in var.agents : name if contains(agent.roles, role)])
  }

  # The plugin reads an empty password_policy as none, so "" clears a stored
  # policy. Its read then returns "", which keeps the refresh free of drift.
  postgres_password_policy = var.postgres.password_policy == null ? "" : var.postgres.password_policy
}

# Rules of var.postgres.password_policy, when the module manages them.
resource "vault_password_policy" "postgres" {
  for_each = var.postgres.password_policy_rules == null ? {} : { (var.postgres.password_policy) = var.postgres.password_policy_rules }

  name   = each.key
  policy = each.value
}

resource "vault_database_secret_backend_connection" "postgres" {
  backend           = local.database_backend
  name              = var.postgres.connection_name
  allowed_roles     = keys(var.database_roles)
  verify_connection = true

  postgresql {
    connection_url       = "postgresql://{{username}}:{{password}}@${var.postgres.host}:${var.postgres.port}/${var.postgres.database}?sslmode=${var.postgres.sslmode}"
    username             = var.postgres.username
    password             = var.postgres_password
    max_open_connections = var.postgres.max_open_connections
    # The password never reaches the server, only its verifier.
    password_authentication = "scram-sha-256"
  }

  # connection_scram writes password_policy. The provider reads the field
  # back into this resource too, so without this every plan would show it
  # being removed from the connection.
  lifecycle {
    ignore_changes = [password_policy]
  }
}

# The typed connection resource cannot send scram_iterations, a field the
# plugin adds to Vault's API. The plugin merges a config update with the
# stored config, so this second write on the same path sets only that field
# and password_policy. It runs again whenever the typed connection changes.
# The plugin rejects a policy while the stored count is below 4096, so both
# go in one request. Sent by the typed connection, which is written first,
# the policy would arrive before the new count.
resource "vault_generic_endpoint" "connection_scram" {
  path = "${local.database_backend}/config/${var.postgres.connection_name}"
  data_json = jsonencode({
    scram_iterations = var.postgres.scram_iterations
    password_policy  = local.postgres_password_policy
  })
  ignore_absent_fields = true
  disable_delete       = true

  # With verify_connection, the plugin generates one password from the
  # policy at each write of the config, so the policy must exist first.
  depends_on = [
    vault_database_secret_backend_connection.postgres,
    vault_password_policy.postgres,
  ]

  lifecycle {
    replace_triggered_by = [vault_database_secret_backend_connection.postgres]
  }
}

resource "vault_database_secret_backend_role" "role" {
  for_each = var.database_roles

  backend               = local.database_backend
  name                  = each.key
  db_name               = vault_database_secret_backend_connection.postgres.name
  creation_statements   = each.value.creation_statements
  revocation_statements = each.value.revocation_statements
  default_ttl           = each.value.default_ttl
  max_ttl               = each.value.max_ttl
}

# The typed role resource cannot send allowed_agents. The plugin merges a
# role update with the stored role, so this second write on the same path
# sets only allowed_agents and keeps what the typed resource wrote. It is
# replaced whenever the typed role changes, because a recreated role starts
# with no allowed agents.
resource "vault_generic_endpoint" "role_agents" {
  for_each = var.database_roles

  path                 = "${local.database_backend}/roles/${each.key}"
  data_json            = jsonencode({ allowed_agents = local.allowed_agents[each.key] })
  ignore_absent_fields = true
  disable_delete       = true

  depends_on = [vault_database_secret_backend_role.role]

  lifecycle {
    replace_triggered_by = [vault_database_secret_backend_role.role[each.key]]
  }
}
