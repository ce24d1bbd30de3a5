# HashiCorp Vault enables audit devices through the API. OpenBao 2.7 accepts
# them only from the server configuration file, so it uses openbao-audit.hcl
# and leaves this resource off. hmac_accessor = false keeps token accessors
# readable, so one agent-exec call's requests can be found in the log.
resource "vault_audit" "file" {
  count = var.audit_device_via_api ? 1 : 0

  type        = "file"
  path        = "agent-bridge"
  description = "agent-bridge: every request with its token's claim metadata"
  options = {
    file_path     = var.audit_file_path
    hmac_accessor = "false"
  }
}
