# OpenBao server configuration snippet: the file audit device for
# agent-bridge. OpenBao 2.7 accepts audit devices only from its configuration
# files by default; add this file with `-config` (or merge it into server.hcl).
# hmac_accessor = "false" logs token accessors in plain text, so each
# agent-exec call (one token, one accessor) can be followed through the log;
# everything else stays HMAC'd.
audit "file" "agent-bridge" {
  description = "agent-bridge: every request with its token's claim metadata"
  options {
    file_path     = "/var/log/openbao/audit.log"
    hmac_accessor = "false"
    mode          = "0600"
  }
}
