variable "plugin_sha256" {
  description = "SHA-256 (hex) of the agent-bridge plugin file in the server's plugin_directory."
  type        = string
}

variable "plugin_command" {
  description = "File name of the plugin, relative to the server's plugin_directory."
  type        = string
  default     = "agent-bridge-plugin"
}

variable "plugin_version" {
  description = "Version the plugin reports (scripts/build-plugin prints it, for example v0.1.0). Vault files a plugin under its reported version, so the catalog entry and the mount must name it."
  type        = string
}

variable "plugin_env" {
  description = "KEY=VALUE environment entries for the plugin process, for example SHIV_ROOT=/var/lib/openbao/shiv."
  type        = list(string)
  default     = []
}

variable "mount_path" {
  description = "Path of the agent-bridge secrets engine mount."
  type        = string
  default     = "agent-creds"
}

variable "mount_default_lease_ttl_seconds" {
  description = "Default lease TTL of the mount in seconds; bounds credentials whose role sets none."
  type        = number
  default     = 300
}

variable "mount_max_lease_ttl_seconds" {
  description = "Maximum lease TTL of the mount in seconds; no credential outlives it."
  type        = number
  default     = 3600
}

variable "jwt_path" {
  description = "Path of the JWT auth method that accepts the attestor's tokens."
  type        = string
  default     = "jwt"
}

variable "jwks_url" {
  description = "URL of the attestor's JWKS (for example http://127.0.0.1:8300/.well-known/jwks.json); null when jwt_validation_pubkeys is used."
  type        = string
  default     = null
}

variable "jwt_validation_pubkeys" {
  description = "PEM public keys of the attestor, for hosts where Vault cannot reach the JWKS URL; empty when jwks_url is used."
  type        = list(string)
  default     = []
}

variable "bound_issuer" {
  description = "Required `iss` claim: the attestor's issuer URL."
  type        = string
}

variable "jwt_supported_algs" {
  description = "JWT signing algorithms Vault accepts; the attestor signs with ES256."
  type        = list(string)
  default     = ["ES256"]
}

variable "agents" {
  description = <<-EOT
    Agents by name (the JWT `sub` and `agent` claims). roles are database
    roles and aws_roles AWS roles the agent may use. token_ttl bounds each
    call's Vault token (and so every credential minted with it) and
    token_max_ttl is the longest allowed call; both in seconds. The leeways
    are seconds of clock skew accepted on JWT claims: 0 would mean Vault's
    defaults (60 s, 150 s, 150 s) and is rejected by the applier's lint.
  EOT
  type = map(object({
    roles             = optional(list(string), [])
    aws_roles         = optional(list(string), [])
    audience          = optional(string, "agent-bridge")
    token_ttl         = optional(number, 120)
    token_max_ttl     = optional(number, 3600)
    token_bound_cidrs = optional(list(string), [])
    clock_skew_leeway = optional(number, 5)
    expiration_leeway = optional(number, 5)
    not_before_leeway = optional(number, 5)
  }))
}

variable "postgres" {
  description = <<-EOT
    PostgreSQL server the database roles create users in, reached by Vault
    with an administrator account. New users' passwords reach the server
    only as SCRAM-SHA-256 verifiers of scram_iterations PBKDF2 rounds, from
    1 to 100000; 1 suits the plugin's own 192-bit passwords and skips
    PostgreSQL's 4096 rounds at each CREATE ROLE and login. Use 4096 where
    agents use pgjdbc before 42.7.4, which rejects fewer rounds.
    password_policy names the Vault password policy
    (sys/policies/password/NAME) that generates new users' passwords and
    the administrator's at rotate-root; null (the default) keeps the
    plugin's own passwords. A policy needs scram_iterations of 4096 or
    more. With password_policy_rules, the module writes those rules as that
    policy; without, the policy must exist before the apply.
  EOT
  type = object({
    connection_name       = optional(string, "postgres")
    host                  = string
    port                  = optional(number, 5432)
    database              = string
    username              = string
    sslmode               = optional(string, "prefer")
    max_open_connections  = optional(number, 4)
    scram_iterations      = optional(number, 1)
    password_policy       = optional(string)
    password_policy_rules = optional(string)
  })

  validation {
    condition     = var.postgres.password_policy != ""
    error_message = "The postgres.password_policy is empty: give the name of a Vault password policy, or null for the plugin's own passwords."
  }

  # The plugin rejects the same combination, but only when the apply writes it.
  validation {
    condition     = var.postgres.password_policy == null || var.postgres.scram_iterations >= 4096
    error_message = "The postgres.password_policy ${jsonencode(var.postgres.password_policy)} needs scram_iterations of 4096 or more, not ${var.postgres.scram_iterations}: set postgres.scram_iterations = 4096, or remove password_policy to keep the plugin's 192-bit passwords."
  }

  validation {
    condition     = var.postgres.password_policy_rules == null || var.postgres.password_policy != null
    error_message = "The postgres.password_policy_rules are set without password_policy: set password_policy to the name the module stores the rules under."
  }
}

variable "postgres_password" {
  description = "Password of the PostgreSQL administrator account in var.postgres.username."
  type        = string
  sensitive   = true
}

variable "database_roles" {
  description = <<-EOT
    Database roles by name. creation_statements run as the administrator
    with {{name}}, {{password}} and {{expiration}} filled in; TTLs are in
    seconds. The agents allowed to use a role are those listing it in
    var.agents.
  EOT
  type = map(object({
    creation_statements   = list(string)
    revocation_statements = optional(list(string), [])
    default_ttl           = optional(number, 300)
    max_ttl               = optional(number, 3600)
  }))
  default = {}
}

variable "vault_cli" {
  description = "Vault or OpenBao CLI (vault or bao) that revokes the mount's leases on destroy."
  type        = string
  default     = "vault"
}

variable "audit_device_via_api" {
  description = "Enable the file audit device through the API. HashiCorp Vault allows this; OpenBao 2.7 accepts audit devices only from its server configuration (see openbao-audit.hcl)."
  type        = bool
  default     = false
}

variable "audit_file_path" {
  description = "File the API-enabled audit device writes to, when audit_device_via_api is true."
  type        = string
  default     = "/var/log/vault/agent-bridge-audit.log"
}

variable "aws" {
  description = <<-EOT
    AWS settings of the mount's aws/ engine; null (the default) writes no
    AWS configuration and no AWS role, for hosts without AWS. access_key is
    the IAM user the plugin acts as, with its secret in var.aws_secret_key;
    empty, the plugin uses the default credential chain of the Vault host
    (such as an instance role). region empty: the Vault host's AWS_REGION,
    else us-east-1. iam_endpoint and sts_endpoint empty: AWS's own; set
    both to one URL for an emulator such as moto. roles are AWS roles by
    name, with the arguments of vault_aws_secret_backend_role (TTLs in
    seconds); the agents allowed to use a role are those listing it in
    var.agents' aws_roles.
  EOT
  type = object({
    access_key   = optional(string, "")
    region       = optional(string, "")
    iam_endpoint = optional(string, "")
    sts_endpoint = optional(string, "")
    roles = optional(map(object({
      credential_type          = string
      policy_document          = optional(string)
      policy_arns              = optional(list(string), [])
      iam_groups               = optional(list(string), [])
      iam_tags                 = optional(map(string), {})
      user_path                = optional(string)
      permissions_boundary_arn = optional(string)
      role_arns                = optional(list(string), [])
      session_tags             = optional(map(string), {})
      external_id              = optional(string)
      default_sts_ttl          = optional(number)
      max_sts_ttl              = optional(number)
      mfa_serial_number        = optional(string)
    })), {})
  })
  default = null
}

variable "aws_secret_key" {
  description = "Secret access key of var.aws.access_key; empty when the plugin uses the Vault host's default credential chain."
  type        = string
  sensitive   = true
  default     = ""
}
