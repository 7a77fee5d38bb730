"""Saved agents: built-in types with a name, their own prompt and a tool allow-list.

They are kept in a database (SQLite by default, PostgreSQL for several replicas).

`operations.SavedAgents` is what the servicer calls; `rules` holds the fields and the rules they
obey; `database.AgentDatabase` persists them, in the table `schema` describes and migrates.
"""

from .database import AgentDatabase
from .operations import AgentRef, SavedAgents, toolset_names
from .rules import AgentFields, AgentPage, AgentRecord

__all__ = [
    "AgentDatabase",
    "AgentFields",
    "AgentPage",
    "AgentRecord",
    "AgentRef",
    "SavedAgents",
    "toolset_names",
]
