"""The server's side of the wire: how its port is set up, derived from Settings.

TLS credentials (`tls.py`), the channel arguments and the connection budget they carry
(`options.py`), and server reflection for tools like grpcurl (`reflection.py`). `server.build`
applies them; the client's side is `client/channel.py` and `client/options.py`.
"""

from __future__ import annotations

from .options import connection_budget, server_options
from .reflection import add_reflection
from .tls import server_credentials

__all__ = ["add_reflection", "connection_budget", "server_credentials", "server_options"]
