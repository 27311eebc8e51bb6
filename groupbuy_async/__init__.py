"""groupbuy-async: asynchronous group-buy trading with reliable merchant callbacks."""

__version__ = "0.1.0"
