import pytest

from inventory.stock import OutOfStock, Stock


def test_receive_then_ship():
    stock = Stock()
    stock.receive("widget", 10)
    assert stock.ship("widget", 3) == 7


def test_ship_more_than_available():
    stock = Stock()
    with pytest.raises(OutOfStock):
        stock.ship("widget", 1)
