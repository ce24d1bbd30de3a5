"""ES256 signing keys on disk, their rotation and the JWTs signed with them."""
