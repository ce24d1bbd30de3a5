"""Run agent-exec as `python -m attestor.agent_exec`."""

from attestor.agent_exec.call import main

main()
