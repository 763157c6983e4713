"""The file OpenRLHF's `--agent_func_path` takes: perfbox's tools and reward as a multi-turn
agent. The tool service is $PERFBOX_TARGET (host:port); each row's label is its problem."""

from perfbox.integrations.openrlhf import AgentExecutor, PerfboxAgent

__all__ = ["AgentExecutor", "PerfboxAgent"]
