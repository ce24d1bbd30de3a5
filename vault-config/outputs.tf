output "jwt_accessor" {
  description = "Accessor of the JWT auth mount; the plugin matches entity aliases against it."
  value       = vault_jwt_auth_backend.agents.accessor
}

output "mount_accessor" {
  description = "Accessor of the agent-bridge secrets engine mount."
  value       = vault_mount.agent_creds.accessor
}

output "agent_policies" {
  description = "Policy name of each agent."
  value       = { for name, policy in vault_policy.agent : name => policy.name }
}
