from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CacheEntry(_message.Message):
    __slots__ = ("name", "params_json", "output", "keep_alive_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    params_json: str
    output: str
    keep_alive_s: float
    def __init__(self, name: _Optional[str] = ..., params_json: _Optional[str] = ..., output: _Optional[str] = ..., keep_alive_s: _Optional[float] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("response_id", "entries")
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    response_id: str
    entries: _containers.RepeatedCompositeFieldContainer[CacheEntry]
    def __init__(self, response_id: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[CacheEntry, _Mapping]]] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("cached",)
    CACHED_FIELD_NUMBER: _ClassVar[int]
    cached: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, cached: _Optional[_Iterable[bool]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("name", "params_json", "claim", "wait_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    params_json: str
    claim: bool
    wait_s: float
    def __init__(self, name: _Optional[str] = ..., params_json: _Optional[str] = ..., claim: _Optional[bool] = ..., wait_s: _Optional[float] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("found", "ready", "output")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    found: bool
    ready: bool
    output: str
    def __init__(self, found: _Optional[bool] = ..., ready: _Optional[bool] = ..., output: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("hits", "misses", "launched", "deduplicated", "expired", "wasted_tool_s", "entries")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    LAUNCHED_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    WASTED_TOOL_S_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    hits: int
    misses: int
    launched: int
    deduplicated: int
    expired: int
    wasted_tool_s: float
    entries: int
    def __init__(self, hits: _Optional[int] = ..., misses: _Optional[int] = ..., launched: _Optional[int] = ..., deduplicated: _Optional[int] = ..., expired: _Optional[int] = ..., wasted_tool_s: _Optional[float] = ..., entries: _Optional[int] = ...) -> None: ...
