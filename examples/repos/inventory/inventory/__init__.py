"""Stock keeping for a small warehouse."""

from .stock import OutOfStock, Stock

__all__ = ["OutOfStock", "Stock"]
