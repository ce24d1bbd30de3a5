"""Generated protobuf messages; regenerate with scripts/gen-proto."""
