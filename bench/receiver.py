"""The benchmarks' merchant: groupbuy_async.dev.merchant in a process of its own (so that it
never shares, or slows, the event loop being measured), answering `success` after `delay_ms`
and counting requests per webhook-id, so that a benchmark can check each callback arrived
exactly once (it keeps no receipts)."""

from groupbuy_async.dev.merchant_process import MerchantProcess


class Receiver(MerchantProcess):
    def __init__(self, delay_ms: int) -> None:
        super().__init__("--delay", str(delay_ms / 1000), "--keep", "0")
        self.delay_ms = delay_ms

    async def count(self) -> dict[str, int]:
        """{"requests", "distinct", "duplicates", "unsigned"}"""
        tally = await self.tally()
        return {key: tally[key] for key in ("requests", "distinct", "duplicates", "unsigned")}
