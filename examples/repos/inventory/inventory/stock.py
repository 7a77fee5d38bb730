"""Quantities of items in stock."""

from __future__ import annotations


class OutOfStock(Exception):
    """Raised when an order asks for more than is in stock."""


class Stock:
    """Quantities per item name."""

    def __init__(self) -> None:
        self._items: dict[str, int] = {}

    def receive(self, item: str, quantity: int) -> int:
        """Add `quantity` of `item`; returns the new quantity."""
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self._items[item] = self._items.get(item, 0) + quantity
        return self._items[item]

    def ship(self, item: str, quantity: int) -> int:
        """Remove `quantity` of `item`; returns what is left."""
        available = self._items.get(item, 0)
        if quantity > available:
            raise OutOfStock(f"{item}: {quantity} asked, {available} in stock")
        self._items[item] = available - quantity
        return self._items[item]

    def quantity(self, item: str) -> int:
        """How many of `item` are in stock."""
        return self._items.get(item, 0)

    def low_items(self, threshold: int = 5) -> list[str]:
        return sorted(name for name, count in self._items.items() if count < threshold)
