# Each agent may read credentials of its own roles and revoke only leases of
# those roles. Written as JSON, which Vault's policy parser accepts like HCL.
resource "vault_policy" "agent" {
  for_each = var.agents

  name = "agent-${each.key}"
  policy = jsonencode({
    path = merge(
      {
        for role in each.value.roles :
        "${var.mount_path}/database/creds/${role}" => { capabilities = ["read"] }
      },
      {
        for role in each.value.roles :
        "sys/leases/revoke/${var.mount_path}/database/creds/${role}/*" => { capabilities = ["update"] }
      },
      {
        for role in each.value.aws_roles :
        "${var.mount_path}/aws/creds/${role}" => { capabilities = ["read"] }
      },
      {
        for role in each.value.aws_roles :
        "${var.mount_path}/aws/sts/${role}" => { capabilities = ["read"] }
      },
      {
        for role in each.value.aws_roles :
        "sys/leases/revoke/${var.mount_path}/aws/creds/${role}/*" => { capabilities = ["update"] }
      },
      {
        for role in each.value.aws_roles :
        "sys/leases/revoke/${var.mount_path}/aws/sts/${role}/*" => { capabilities = ["update"] }
      },
    )
  })
}
