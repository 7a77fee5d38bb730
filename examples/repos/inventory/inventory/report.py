"""A plain-text stock report."""

from __future__ import annotations

import sys

from .stock import Stock


def render(stock: Stock, items: list[str], threshold: int = 5) -> str:
    """One line per item, flagging the ones running low."""
    lines = []
    for item in items:
        count = stock.quantity(item)
        if count == 0:
            lines.append(f"{item}: OUT OF STOCK")
        elif count < threshold:
            lines.append(f"{item}: {count} (low)")
        else:
            lines.append(f"{item}: {count}")
    # TODO: group items by category once items have one.
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stock = Stock()
    for pair in args:
        name, _, count = pair.partition("=")
        stock.receive(name, int(count or 1))
    print(render(stock, [pair.partition("=")[0] for pair in args]))
    return 0
