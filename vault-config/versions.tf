# The module configures Vault or OpenBao through HashiCorp's vault provider.
# It reads VAULT_ADDR and VAULT_TOKEN from the environment, so no provider
# block is needed. Parity was checked against provider 5.x source.
terraform {
  required_version = ">= 1.4"

  required_providers {
    vault = {
      source  = "hashicorp/vault"
      version = "~> 5.0"
    }
  }
}
