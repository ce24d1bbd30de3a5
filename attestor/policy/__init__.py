"""The daemon's configuration: agents, their selectors and the wrapper rules."""
