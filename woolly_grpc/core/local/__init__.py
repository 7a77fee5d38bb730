"""The offline `local` engine: a pydantic-ai FunctionModel that reads the repository for real.

`model.py` plays the turns (which tools to call, then the answer); `evidence.py` reads the tool
results back into facts; `answers.py` frames the Markdown answer that one composer per agent type
(`descriptions.py`, `improvements.py`, `conversation.py`) writes.
"""

from .model import local_model
from .prompt import ParsedPrompt, parse_prompt

__all__ = ["ParsedPrompt", "local_model", "parse_prompt"]
