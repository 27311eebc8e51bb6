"""Operator configuration bodies: discounts, goods, activities, and their pages."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from ..trade.rules import MARKET_EXPRS, check_market_expr
from .schemas import (
    CHANNEL,
    CREATED,
    GOODS_ID,
    PRICE,
    SOURCE,
    UPDATED,
    ActivityId,
    Body,
    Code,
    Count,
    Money,
    Name,
    Text,
)
from .wire import TIME_RULE, ApiTime, WholeNumber

# --- admin -----------------------------------------------------------------------------


_PLAN = (
    "How the pay price is computed (marketExpr is its parameter): ZJ a fixed amount off, MJ an"
    " amount off from a threshold, ZK a rate, N a fixed price"
)
_EXPR = (
    'The plan\'s parameter: ZJ "20" pays 20.00 less; MJ "100,10" pays 10.00 less when the'
    ' original price is at least 100.00; ZK "0.8" pays 0.8 x the original, rounded half-up to'
    ' the cent; N "1.99" pays 1.99 (never more than the original). ZJ, MJ and ZK never go below'
    " 0.01; deductionPrice = originalPrice - payPrice"
)
MarketPlan = Literal["ZJ", "MJ", "ZK", "N"]


def _expr_per_plan(schema: dict[str, Any]) -> None:
    """marketExpr's pattern for each marketPlan, as the server checks it (trade.rules)."""
    schema["oneOf"] = [
        {
            "properties": {
                "marketPlan": {"const": plan, "description": f"Plan {plan}"},
                "marketExpr": {"pattern": pattern, "description": f"For {plan}: {what}"},
            }
        }
        for plan, (pattern, what) in MARKET_EXPRS.items()
    ]


class DiscountFields(Body):
    discount_name: Name = Field(description="Display name")
    discount_desc: Text = Field("", description="Free-text description")
    market_plan: MarketPlan = Field(description=_PLAN)
    market_expr: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description=_EXPR
    )


class DiscountIn(DiscountFields):
    """A discount to store: marketExpr is written as its marketPlan's pattern says."""

    model_config = ConfigDict(json_schema_extra=_expr_per_plan)

    @model_validator(mode="after")
    def _expr_fits_plan(self) -> "DiscountIn":
        check_market_expr(self.market_plan, self.market_expr)
        return self


class DiscountOut(DiscountFields):
    discount_id: Code = Field(description="Discount id (the path's discountId)")
    create_time: datetime = Field(description=CREATED)
    update_time: datetime = Field(description=UPDATED)


class SkuIn(Body):
    goods_name: Name = Field(description="Display name")
    original_price: Money = Field(description=f"Price before any discount, {PRICE}")
    source: Code = Field(description=SOURCE)
    channel: Code = Field(description=CHANNEL)


class SkuOut(SkuIn):
    goods_id: Code = Field(description="Goods (SKU) id (the path's goodsId)")
    create_time: datetime = Field(description=CREATED)
    update_time: datetime = Field(description=UPDATED)


class GoodsRef(Body):
    source: Code = Field(description=SOURCE)
    channel: Code = Field(description=CHANNEL)
    goods_id: Code = Field(description=f"{GOODS_ID}, stored with PUT /api/v1/admin/skus")


class ActivityIn(Body):
    """An activity to store. Two rules span fields, which JSON Schema cannot state (the server
    refuses either with 400): endTime is after startTime, and goods names each (source,
    channel, goodsId) once."""

    activity_name: Name = Field(description="Display name")
    discount_id: Code = Field(description="The discount that prices this activity's goods")
    group_type: Annotated[Literal[0, 1], WholeNumber] = Field(
        0,
        description="How a team forms (the original's group_type): 0 automatically, 1 on"
        " reaching the target. Stored and returned as given: here a team completes when"
        " `target` members have paid, whichever the value",
    )
    take_limit_count: Count = Field(
        1,
        description="Most live orders (locked or paid) one user may hold in this activity;"
        " a closed or refunded order gives its take back",
    )
    target: Annotated[int, Field(ge=1, le=1000), WholeNumber] = Field(
        1, description="Team size: members who must pay for a team to complete"
    )
    valid_time: Annotated[int, Field(ge=1, le=60 * 24 * 30), WholeNumber] = Field(
        15, description="How long a team may take to fill, in minutes from its opening"
    )
    pay_timeout_seconds: Annotated[int, Field(ge=1, le=86400 * 30), WholeNumber] = Field(
        900,
        description="How long a locked order may stay unpaid, in seconds from its lock (never"
        " past its team's window): then the worker closes it, frees its slot and gives the"
        " user's take back. Keep the merchant's own payment timeout shorter, and this shorter"
        " than validTime",
    )
    status: Annotated[Literal[0, 1, 2, 3], WholeNumber] = Field(
        0,
        description="Activity status: 0 created, 1 effective, 2 expired, 3 abandoned."
        " Orders lock only while it is 1 (effective) and between startTime and endTime",
    )
    start_time: ApiTime = Field(description=f"When orders may start locking: {TIME_RULE}")
    end_time: ApiTime = Field(description=f"When locking ends, after startTime: {TIME_RULE}")
    goods: Annotated[list[GoodsRef], Field(max_length=1000)] = Field(
        [],
        description="Goods sold in this activity, each (source, channel, goodsId) once and a SKU"
        " stored under that source and channel; a goods item belongs to one activity",
        json_schema_extra={"uniqueItems": True},
    )

    @model_validator(mode="after")
    def _sane(self) -> "ActivityIn":
        if self.end_time <= self.start_time:
            raise ValueError("endTime must be after startTime")
        keys = [(g.source, g.channel, g.goods_id) for g in self.goods]
        if len(set(keys)) != len(keys):
            raise ValueError("goods lists the same source/channel/goodsId twice")
        return self


class ActivityOut(ActivityIn):
    # As stored: what an older version took is answered as it is.
    start_time: datetime = Field(description="When orders may start locking")
    end_time: datetime = Field(description="When locking ends; after startTime")
    activity_id: ActivityId = Field(description="Activity id (the path's activityId)")
    create_time: datetime = Field(description=CREATED)
    update_time: datetime = Field(description=UPDATED)


# --- admin lists (keyset pages in key order) -------------------------------------------

PageLimit = Annotated[int, Field(ge=1, le=500)]


_LIMIT = "Most items on one page (1-500)"
_AFTER = "The previous page's nextCursor; absent for the first page"
_NEXT = "Pass as `after` for the next page; null on the last page"


class CodePageQuery(Body):
    limit: PageLimit = Field(100, description=_LIMIT)
    after: Code | None = Field(None, description=_AFTER)


class ActivityPageQuery(Body):
    limit: PageLimit = Field(100, description=_LIMIT)
    after: ActivityId | None = Field(None, description=_AFTER)


class DiscountPage(Body):
    items: list[DiscountOut] = Field(description="Discounts in discountId order")
    next_cursor: str | None = Field(description=_NEXT)


class SkuPage(Body):
    items: list[SkuOut] = Field(description="Goods in goodsId order")
    next_cursor: str | None = Field(description=_NEXT)


class ActivityPage(Body):
    items: list[ActivityOut] = Field(description="Activities in activityId order")
    next_cursor: int | None = Field(description=_NEXT)
