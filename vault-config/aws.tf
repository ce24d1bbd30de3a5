locals {
  aws_backend = "${vault_mount.agent_creds.path}/aws"

  aws_roles = var.aws == null ? {} : var.aws.roles

  # As for database roles: a role's allowed agents are the agents that list
  # it, so var.agents is the one place that grants an AWS role.
  aws_allowed_agents = {
    for role in keys(local.aws_roles) :
    role => sort([for name, agent in var.agents : name if contains(agent.aws_roles, role)])
  }
}

# The key pair is written apart from the other settings, and never read
# back: after aws/config/rotate-root only the plugin knows the current key,
# and resending the configured one would restore a deleted key. So it is
# written when var.aws.access_key or var.aws_secret_key changes, never on a
# refresh.
resource "vault_generic_endpoint" "aws_root_keys" {
  count = var.aws == null ? 0 : 1

  path = "${local.aws_backend}/config/root"
  data_json = jsonencode({
    access_key = var.aws.access_key
    secret_key = var.aws_secret_key
  })
  disable_read   = true
  disable_delete = true
}

# The plugin merges a write to aws/config/root with the stored config, so
# these settings leave the key pair alone. Deleting the mount deletes both.
resource "vault_generic_endpoint" "aws_root" {
  count = var.aws == null ? 0 : 1

  path = "${local.aws_backend}/config/root"
  data_json = jsonencode({
    region       = var.aws.region
    iam_endpoint = var.aws.iam_endpoint
    sts_endpoint = var.aws.sts_endpoint
  })
  ignore_absent_fields = true
  disable_delete       = true

  depends_on = [vault_generic_endpoint.aws_root_keys]
}

resource "vault_aws_secret_backend_role" "role" {
  for_each = local.aws_roles

  backend                  = local.aws_backend
  name                     = each.key
  credential_type          = each.value.credential_type
  policy_document          = each.value.policy_document
  policy_arns              = each.value.policy_arns
  iam_groups               = each.value.iam_groups
  iam_tags                 = each.value.iam_tags
  user_path                = each.value.user_path
  permissions_boundary_arn = each.value.permissions_boundary_arn
  role_arns                = each.value.role_arns
  session_tags             = each.value.session_tags
  external_id              = each.value.external_id
  default_sts_ttl          = each.value.default_sts_ttl
  max_sts_ttl              = each.value.max_sts_ttl
  mfa_serial_number        = each.value.mfa_serial_number

  depends_on = [vault_generic_endpoint.aws_root]
}

# The typed role resource cannot send allowed_agents: as for database roles,
# a second write on the same path sets only allowed_agents, and is replaced
# whenever the typed role is, because a recreated role allows no agent.
resource "vault_generic_endpoint" "aws_role_agents" {
  for_each = local.aws_roles

  path                 = "${local.aws_backend}/roles/${each.key}"
  data_json            = jsonencode({ allowed_agents = local.aws_allowed_agents[each.key] })
  ignore_absent_fields = true
  disable_delete       = true

  depends_on = [vault_aws_secret_backend_role.role]

  lifecycle {
    replace_triggered_by = [vault_aws_secret_backend_role.role[each.key]]
  }
}
