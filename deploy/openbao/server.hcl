# Merged with -dev: the dev server supplies storage (in memory), the listener
# and an unsealed root token (BAO_DEV_ROOT_TOKEN_ID). This file adds the
# plugin directory and the audit device.
plugin_directory = "/usr/lib/openbao/plugins"

# OpenBao 2.7 accepts audit devices only from its configuration files by
# default. hmac_accessor = "false" logs token accessors in plain text, so
# one agent-exec call (one token) can be followed through the log.
audit "file" "agent-bridge" {
  description = "agent-bridge: every request with its token's claim metadata"
  options {
    file_path     = "/var/log/openbao/audit.log"
    hmac_accessor = "false"
    mode          = "0600"
  }
}
