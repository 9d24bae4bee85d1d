"""The specialized agents, one module each: retriever, planner, validator, executor.

Each is a LangGraph node that reads its own typed view of the state (see ``graph.state``).
"""
