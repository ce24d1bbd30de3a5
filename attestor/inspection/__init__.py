"""Who is calling: the peer process, its files and its ancestors, read from procfs."""
