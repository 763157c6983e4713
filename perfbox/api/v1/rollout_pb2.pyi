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
    __slots__ = ("name", "params_json", "claim", "wait_s", "response_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    params_json: str
    claim: bool
    wait_s: float
    response_id: str
    def __init__(self, name: _Optional[str] = ..., params_json: _Optional[str] = ..., claim: _Optional[bool] = ..., wait_s: _Optional[float] = ..., response_id: _Optional[str] = ...) -> None: ...

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

class RolloutRequest(_message.Message):
    __slots__ = ("trajectory_ids", "count", "mode", "free_generation", "max_turn_tokens", "max_turns", "kv_slots", "group_size", "temperature", "seed", "shared_turns")
    TRAJECTORY_IDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FREE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    MAX_TURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    KV_SLOTS_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SHARED_TURNS_FIELD_NUMBER: _ClassVar[int]
    trajectory_ids: _containers.RepeatedScalarFieldContainer[str]
    count: int
    mode: str
    free_generation: bool
    max_turn_tokens: int
    max_turns: int
    kv_slots: int
    group_size: int
    temperature: float
    seed: int
    shared_turns: int
    def __init__(self, trajectory_ids: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., mode: _Optional[str] = ..., free_generation: _Optional[bool] = ..., max_turn_tokens: _Optional[int] = ..., max_turns: _Optional[int] = ..., kv_slots: _Optional[int] = ..., group_size: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., shared_turns: _Optional[int] = ...) -> None: ...

class TokensEvent(_message.Message):
    __slots__ = ("token_ids", "text", "inserted")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    text: str
    inserted: bool
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ..., inserted: _Optional[bool] = ...) -> None: ...

class ToolEvent(_message.Message):
    __slots__ = ("tool", "status", "speculative_hit")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_HIT_FIELD_NUMBER: _ClassVar[int]
    tool: str
    status: str
    speculative_hit: bool
    def __init__(self, tool: _Optional[str] = ..., status: _Optional[str] = ..., speculative_hit: _Optional[bool] = ...) -> None: ...

class TrajectoryDone(_message.Message):
    __slots__ = ("generated_tokens", "prefill_tokens", "reprefill_tokens", "wall_s", "text", "group", "forked_tokens")
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REPREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FORKED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    generated_tokens: int
    prefill_tokens: int
    reprefill_tokens: int
    wall_s: float
    text: str
    group: str
    forked_tokens: int
    def __init__(self, generated_tokens: _Optional[int] = ..., prefill_tokens: _Optional[int] = ..., reprefill_tokens: _Optional[int] = ..., wall_s: _Optional[float] = ..., text: _Optional[str] = ..., group: _Optional[str] = ..., forked_tokens: _Optional[int] = ...) -> None: ...

class RolloutSummary(_message.Message):
    __slots__ = ("mode", "wall_s", "tokens_per_s", "prefill_tokens", "reprefill_tokens", "idle_s", "spec_hits", "spec_misses", "wasted_tool_s", "forked_tokens")
    MODE_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REPREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IDLE_S_FIELD_NUMBER: _ClassVar[int]
    SPEC_HITS_FIELD_NUMBER: _ClassVar[int]
    SPEC_MISSES_FIELD_NUMBER: _ClassVar[int]
    WASTED_TOOL_S_FIELD_NUMBER: _ClassVar[int]
    FORKED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    mode: str
    wall_s: float
    tokens_per_s: float
    prefill_tokens: int
    reprefill_tokens: int
    idle_s: float
    spec_hits: int
    spec_misses: int
    wasted_tool_s: float
    forked_tokens: int
    def __init__(self, mode: _Optional[str] = ..., wall_s: _Optional[float] = ..., tokens_per_s: _Optional[float] = ..., prefill_tokens: _Optional[int] = ..., reprefill_tokens: _Optional[int] = ..., idle_s: _Optional[float] = ..., spec_hits: _Optional[int] = ..., spec_misses: _Optional[int] = ..., wasted_tool_s: _Optional[float] = ..., forked_tokens: _Optional[int] = ...) -> None: ...

class RolloutEvent(_message.Message):
    __slots__ = ("trajectory_id", "tokens", "tool_call", "tool_result", "done", "summary")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    tokens: TokensEvent
    tool_call: ToolEvent
    tool_result: ToolEvent
    done: TrajectoryDone
    summary: RolloutSummary
    def __init__(self, trajectory_id: _Optional[str] = ..., tokens: _Optional[_Union[TokensEvent, _Mapping]] = ..., tool_call: _Optional[_Union[ToolEvent, _Mapping]] = ..., tool_result: _Optional[_Union[ToolEvent, _Mapping]] = ..., done: _Optional[_Union[TrajectoryDone, _Mapping]] = ..., summary: _Optional[_Union[RolloutSummary, _Mapping]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("reference", "name", "files")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    reference: str
    name: str
    files: _containers.ScalarMap[str, str]
    def __init__(self, reference: _Optional[str] = ..., name: _Optional[str] = ..., files: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Sampling(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "max_new_tokens", "max_total_tokens", "max_turns", "stop", "seed")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    max_total_tokens: int
    max_turns: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., max_new_tokens: _Optional[int] = ..., max_total_tokens: _Optional[int] = ..., max_turns: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "messages", "prompt_ids", "problem", "tools", "sampling", "group_size", "reward", "tool_output_tokens")
    ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    TOOL_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    id: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    prompt_ids: _containers.RepeatedScalarFieldContainer[int]
    problem: Problem
    tools: _containers.RepeatedScalarFieldContainer[str]
    sampling: Sampling
    group_size: int
    reward: str
    tool_output_tokens: int
    def __init__(self, id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., prompt_ids: _Optional[_Iterable[int]] = ..., problem: _Optional[_Union[Problem, _Mapping]] = ..., tools: _Optional[_Iterable[str]] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., group_size: _Optional[int] = ..., reward: _Optional[str] = ..., tool_output_tokens: _Optional[int] = ...) -> None: ...

class TasksRequest(_message.Message):
    __slots__ = ("tasks", "mode", "parser", "put_scope")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PARSER_FIELD_NUMBER: _ClassVar[int]
    PUT_SCOPE_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    mode: str
    parser: str
    put_scope: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., mode: _Optional[str] = ..., parser: _Optional[str] = ..., put_scope: _Optional[str] = ...) -> None: ...

class TurnRecord(_message.Message):
    __slots__ = ("tool", "arguments_json", "status", "inserted_text", "tool_s", "speculative_hit")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INSERTED_TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_S_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_HIT_FIELD_NUMBER: _ClassVar[int]
    tool: str
    arguments_json: str
    status: str
    inserted_text: str
    tool_s: float
    speculative_hit: bool
    def __init__(self, tool: _Optional[str] = ..., arguments_json: _Optional[str] = ..., status: _Optional[str] = ..., inserted_text: _Optional[str] = ..., tool_s: _Optional[float] = ..., speculative_hit: _Optional[bool] = ...) -> None: ...

class RewardResult(_message.Message):
    __slots__ = ("total", "breakdown_json")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_JSON_FIELD_NUMBER: _ClassVar[int]
    total: float
    breakdown_json: str
    def __init__(self, total: _Optional[float] = ..., breakdown_json: _Optional[str] = ...) -> None: ...

class TaskTrajectory(_message.Message):
    __slots__ = ("task_id", "sample", "prompt_ids", "response_ids", "response_mask", "logprobs", "turns", "finish_reason", "reward", "response_text", "wall_s", "has_reward")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_IDS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_MASK_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TEXT_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    HAS_REWARD_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    sample: int
    prompt_ids: _containers.RepeatedScalarFieldContainer[int]
    response_ids: _containers.RepeatedScalarFieldContainer[int]
    response_mask: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    turns: _containers.RepeatedCompositeFieldContainer[TurnRecord]
    finish_reason: str
    reward: RewardResult
    response_text: str
    wall_s: float
    has_reward: bool
    def __init__(self, task_id: _Optional[str] = ..., sample: _Optional[int] = ..., prompt_ids: _Optional[_Iterable[int]] = ..., response_ids: _Optional[_Iterable[int]] = ..., response_mask: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., turns: _Optional[_Iterable[_Union[TurnRecord, _Mapping]]] = ..., finish_reason: _Optional[str] = ..., reward: _Optional[_Union[RewardResult, _Mapping]] = ..., response_text: _Optional[str] = ..., wall_s: _Optional[float] = ..., has_reward: _Optional[bool] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("trajectory_id", "tokens", "tool_call", "tool_result", "result", "summary")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    tokens: TokensEvent
    tool_call: ToolEvent
    tool_result: ToolEvent
    result: TaskTrajectory
    summary: RolloutSummary
    def __init__(self, trajectory_id: _Optional[str] = ..., tokens: _Optional[_Union[TokensEvent, _Mapping]] = ..., tool_call: _Optional[_Union[ToolEvent, _Mapping]] = ..., tool_result: _Optional[_Union[ToolEvent, _Mapping]] = ..., result: _Optional[_Union[TaskTrajectory, _Mapping]] = ..., summary: _Optional[_Union[RolloutSummary, _Mapping]] = ...) -> None: ...
