locals {
  # Claims copied into each login token's metadata, which the audit log shows
  # on every request made with that token. Only string-valued claims can be
  # mapped: a non-string value fails the login.
  claim_mappings = {
    jti                      = "call_id"
    agent                    = "agent"
    host                     = "host"
    uid                      = "uid"
    user                     = "user"
    pid                      = "pid"
    exe                      = "exe"
    exe_sha256               = "exe_sha256"
    exe_deleted              = "exe_deleted"
    "/asserted/tool"         = "asserted_tool"
    "/asserted/on_behalf_of" = "asserted_on_behalf_of"
  }
}

resource "vault_jwt_auth_backend" "agents" {
  path                   = var.jwt_path
  type                   = "jwt"
  description            = "agent-bridge: JWTs issued by agent-attestor"
  jwks_url               = var.jwks_url
  jwt_validation_pubkeys = length(var.jwt_validation_pubkeys) > 0 ? var.jwt_validation_pubkeys : null
  bound_issuer           = var.bound_issuer
  jwt_supported_algs     = var.jwt_supported_algs
}

# One role per agent. OpenBao defaults role_type to oidc, which rejects JWT
# logins, and its default leeways stretch a 60 s JWT to minutes: both are set.
resource "vault_jwt_auth_backend_role" "agent" {
  for_each = var.agents

  backend           = vault_jwt_auth_backend.agents.path
  role_name         = each.key
  role_type         = "jwt"
  user_claim        = "sub"
  bound_audiences   = [each.value.audience]
  bound_claims      = { agent = each.key }
  claim_mappings    = local.claim_mappings
  token_policies    = [vault_policy.agent[each.key].name]
  token_type        = "service"
  token_ttl         = each.value.token_ttl
  token_max_ttl     = each.value.token_max_ttl
  token_bound_cidrs = each.value.token_bound_cidrs
  clock_skew_leeway = each.value.clock_skew_leeway
  expiration_leeway = each.value.expiration_leeway
  not_before_leeway = each.value.not_before_leeway
}
