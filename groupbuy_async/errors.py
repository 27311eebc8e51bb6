"""The service's errors: each a response code and a message (info), whoever raises or
reports it. How the API answers each (its HTTP status) is http/'s business (envelope.py)."""


class ServiceError(Exception):
    code = "0001"
    info = "unknown error"

    def __init__(self, info: str | None = None) -> None:
        super().__init__(info or self.info)
        if info:
            self.info = info


class DatabaseUnavailable(ServiceError):
    """PostgreSQL did not answer in time, refused, or is starting or shutting down."""

    code, info = "0503", "database unavailable, retry later"


class BadInput(ServiceError):
    code, info = "0002", "illegal parameter"


class BodyTooLarge(BadInput):
    """A request body over the API's limit (256 KiB): bad input, answered before it is read."""

    code, info = "0002", "request body too large"


class Unauthorized(ServiceError):
    code, info = "0401", "missing or wrong admin token"


class Forbidden(ServiceError):
    """A merchant's key asked for what its merchant does not hold (a source+channel pair)."""

    code, info = "0403", "source+channel not held by this API key's merchant"


class NotFound(ServiceError):
    """What the request names and looks up does not exist (each kind of thing with its code)."""

    code, info = "0404", "not found"


class MethodNotAllowed(ServiceError):
    """A path the API has, with a method it does not (the Allow header lists those it has)."""

    code, info = "0405", "method not allowed"


class UniqueConflict(ServiceError):
    code, info = "0003", "unique index conflict"


class Rejected(ServiceError):
    """A business rule said no; nothing was changed."""


class NoActivityForGoods(NotFound):
    code, info = "E0002", "no group-buy activity for this goods"


class TeamFull(Rejected):
    code, info = "E0006", "team is full"


class ActivityNotEffective(Rejected):
    code, info = "E0101", "activity is not effective"


class OutsideActivityTime(Rejected):
    code, info = "E0102", "outside the activity time"


class TakeLimitReached(Rejected):
    code, info = "E0103", "user take limit reached"


class UnknownOutTradeNo(NotFound):
    code, info = "E0104", "no order with this outTradeNo for this user"


class ChannelBlacklisted(Rejected):
    code, info = "E0105", "source and channel are blacklisted for settlement"


class TradeTimeOutsideWindow(Rejected):
    code, info = "E0106", "outTradeTime is outside the team's valid window"


class TeamNotFound(NotFound):
    code, info = "E0107", "team not found"


class TeamClosed(Rejected):
    code, info = "E0108", "team is past its valid window or has failed"


class OutTradeNoConflict(Rejected):
    code, info = "E0109", "outTradeNo already used by a different order"


class TeamActivityMismatch(Rejected):
    code, info = "E0110", "team belongs to another activity"


class ActivityNotFound(NotFound):
    code, info = "E0111", "activity not found"


# A late payment is refused, but what the refusal itself changes (the order closed, the event
# telling the merchant) is committed before it is raised.
class OrderClosed(Rejected):
    code, info = "E0112", "order closed; refund the payment"


class TeamFailed(Rejected):
    code, info = "E0113", "team failed; refund the payment"


class OrderRefunded(Rejected):
    """A settlement retried after the order's refund: the payment it reports was taken and
    has been refunded already; nothing more to do."""

    code, info = "E0114", "order already refunded; nothing to do"


class NotifyTaskNotReplayable(Rejected):
    code, info = "E0201", "only a notify task in error status (3) can be replayed"


class DeliveryInFlight(Rejected):
    code, info = "E0202", "the delivery is being sent right now; ask again once it is answered"


class DeliveryNotWaiting(Rejected):
    code, info = "E0203", "only a waiting delivery (status 0 or 2) can be retried now"


class EventNotRetained(ServiceError):
    """The event feed's `after` names no event, and events past the retention have been
    pruned (GROUPBUY_RETENTION_DAYS): the cursor's event is most likely one of them."""

    code, info = (
        "E0204",
        "after: no retained event with this id (events past the retention are pruned):"
        " start again without after, from the oldest retained event",
    )


class ActivitySpansMerchants(Rejected):
    code, info = "E0302", "an activity's goods must all be sold under one merchant's source+channel"


class StillReferenced(Rejected):
    code, info = "E0301", "still referenced: change or delete what refers to it first"


# Listed in the README; tests check the table stays complete.
ALL_ERRORS: tuple[type[ServiceError], ...] = (
    ServiceError,
    BadInput,
    BodyTooLarge,
    UniqueConflict,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    NoActivityForGoods,
    TeamFull,
    ActivityNotEffective,
    OutsideActivityTime,
    TakeLimitReached,
    UnknownOutTradeNo,
    ChannelBlacklisted,
    TradeTimeOutsideWindow,
    TeamNotFound,
    TeamClosed,
    OutTradeNoConflict,
    TeamActivityMismatch,
    ActivityNotFound,
    OrderClosed,
    TeamFailed,
    OrderRefunded,
    NotifyTaskNotReplayable,
    StillReferenced,
    ActivitySpansMerchants,
    DeliveryInFlight,
    DeliveryNotWaiting,
    EventNotRetained,
    DatabaseUnavailable,
)
