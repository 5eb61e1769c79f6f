"""KalamDB client: HTTP (requests) and WebSocket live queries (websocket-client).  No Locust here.

    from kalamclient import KalamHttp, LiveConnection
    from kalamclient.errors import KalamError, ConnectError, HttpError, RateLimited, AuthFailed, ...
    from kalamclient.events import AuthSuccess, Change, InitialDataBatch, Closed, ...
"""

from .errors import (AuthFailed, ConnectError, HttpError, KalamError, OutcomeUnknown, ProtocolError,
                     RateLimited, SqlError, WsAuthError, WsAuthRateLimited)
from .events import (AuthError, AuthSuccess, Change, Closed, InitialDataBatch, MalformedFrame,
                     ServerError, SubscriptionAck)
from .http import KalamHttp
from .results import QueryResult, Tokens, as_int
from .ws import LiveConnection, decode_frame, ws_url

__all__ = [
    "KalamHttp", "LiveConnection", "QueryResult", "Tokens", "as_int", "decode_frame", "ws_url",
    "KalamError", "ConnectError", "OutcomeUnknown", "HttpError", "RateLimited", "AuthFailed",
    "SqlError", "ProtocolError", "WsAuthError", "WsAuthRateLimited",
    "AuthSuccess", "AuthError", "SubscriptionAck", "InitialDataBatch", "Change", "ServerError",
    "Closed", "MalformedFrame",
]
