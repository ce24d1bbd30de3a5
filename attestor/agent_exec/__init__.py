"""`agent-exec`: run one command with credentials minted for that call alone.

The console script `agent-exec` and `python -m attestor.agent_exec` both run
`main`. The attestor recognises a wrapped command by this module name, so
the name stays fixed.
"""

from attestor.agent_exec.call import main

__all__ = ["main"]
