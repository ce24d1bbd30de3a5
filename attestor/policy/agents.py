"""Agents: a name, the selectors that identify its processes, and its tokens.

A process gets a token for an agent only when every selector of exactly one
agent matches it, and when no ancestor of it is an `agent-exec` wrapper. A
command that agent-exec runs has one call's credentials and must not mint
its agent's other credentials.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from attestor.inspection.process import AncestorInfo, AttestationError, ProcessInfo
from attestor.policy.selectors import Selector
from attestor.protocol import ErrorCode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Agent:
    """One `[[agent]]` of the config."""

    name: str
    selectors: tuple[Selector, ...]
    audience: tuple[str, ...]
    ttl: int

    def matches(self, process: ProcessInfo) -> bool:
        return all(selector.matches(process) for selector in self.selectors)


@dataclass(frozen=True)
class WrapperRule:
    """How to recognise an agent-exec process among a caller's ancestors.

    An ancestor is a wrapper when its executable or script path matches one
    of `paths` or it runs one of `modules` (`python -m MODULE`).
    """

    paths: tuple[re.Pattern[str], ...]
    modules: tuple[str, ...]

    def find(self, process: ProcessInfo) -> AncestorInfo | None:
        """Return the nearest ancestor that is a wrapper, or None."""
        for ancestor in process.parents:
            if self._is_wrapper(ancestor):
                return ancestor
        return None

    def _is_wrapper(self, ancestor: AncestorInfo) -> bool:
        script = ancestor.script
        if script is not None and script.kind == "module":
            return script.path in self.modules
        candidates = [ancestor.exe.removesuffix(" (deleted)")]
        if script is not None and script.kind == "file":
            candidates.append(script.path)
        return any(glob.fullmatch(path) for glob in self.paths for path in candidates)


def select_agent(
    agents: tuple[Agent, ...], wrappers: WrapperRule, process: ProcessInfo
) -> Agent:
    """Return the one agent whose selectors all match `process`.

    Raises AttestationError (`no_matching_agent`) when none or several match,
    or when the process descends from agent-exec.
    """
    wrapper = wrappers.find(process)
    if wrapper is not None:
        wrapper_path = wrapper.script.path if wrapper.script else wrapper.exe
        raise AttestationError(
            ErrorCode.NO_MATCHING_AGENT,
            f"process {process.pid} ({process.exe}) descends from agent-exec "
            f"(pid {wrapper.pid}, {wrapper_path}); a command run by agent-exec "
            "cannot request tokens: call agent-exec from the agent itself",
        )

    matched = [agent for agent in agents if agent.matches(process)]
    if not matched:
        raise AttestationError(
            ErrorCode.NO_MATCHING_AGENT,
            f"no agent matches process {process.pid} (uid {process.uid}, "
            f"exe {process.exe}); run it as an agent's user or add an [[agent]] "
            "whose selectors match it (see `agent-attestor whoami`)",
        )
    if len(matched) > 1:
        names = ", ".join(agent.name for agent in matched)
        raise AttestationError(
            ErrorCode.NO_MATCHING_AGENT,
            f"process {process.pid} (uid {process.uid}, exe {process.exe}) matches "
            f"several agents ({names}); make their selectors exclusive, for "
            "example with path: or sha256: selectors",
        )
    return matched[0]
