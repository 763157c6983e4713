from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Language(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LANGUAGE_UNSPECIFIED: _ClassVar[Language]
    LANGUAGE_CUDA: _ClassVar[Language]
    LANGUAGE_TRITON: _ClassVar[Language]
    LANGUAGE_KERNELBENCH: _ClassVar[Language]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    OK: _ClassVar[Status]
    COMPILE_ERROR: _ClassVar[Status]
    WRONG_ANSWER: _ClassVar[Status]
    RUNTIME_ERROR: _ClassVar[Status]
    TIMEOUT: _ClassVar[Status]
    MEMORY_LIMIT: _ClassVar[Status]
    OUTPUT_LIMIT: _ClassVar[Status]
    REJECTED: _ClassVar[Status]
    CANCELLED: _ClassVar[Status]
    UNAVAILABLE_HERE: _ClassVar[Status]
    INTERNAL_ERROR: _ClassVar[Status]
    IMPLAUSIBLE: _ClassVar[Status]
LANGUAGE_UNSPECIFIED: Language
LANGUAGE_CUDA: Language
LANGUAGE_TRITON: Language
LANGUAGE_KERNELBENCH: Language
STATUS_UNSPECIFIED: Status
OK: Status
COMPILE_ERROR: Status
WRONG_ANSWER: Status
RUNTIME_ERROR: Status
TIMEOUT: Status
MEMORY_LIMIT: Status
OUTPUT_LIMIT: Status
REJECTED: Status
CANCELLED: Status
UNAVAILABLE_HERE: Status
INTERNAL_ERROR: Status
IMPLAUSIBLE: Status

class SourceFile(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: str
    def __init__(self, name: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("wall_time_ms", "cpu_time_ms", "memory_bytes", "max_processes", "max_file_bytes", "max_output_bytes")
    WALL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PROCESSES_FIELD_NUMBER: _ClassVar[int]
    MAX_FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    wall_time_ms: int
    cpu_time_ms: int
    memory_bytes: int
    max_processes: int
    max_file_bytes: int
    max_output_bytes: int
    def __init__(self, wall_time_ms: _Optional[int] = ..., cpu_time_ms: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., max_processes: _Optional[int] = ..., max_file_bytes: _Optional[int] = ..., max_output_bytes: _Optional[int] = ...) -> None: ...

class CompileOptions(_message.Message):
    __slots__ = ("archs", "kernel", "signature", "constants", "num_warps", "num_stages", "defines", "line_info", "include_artifacts")
    class SignatureEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARCHS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    NUM_WARPS_FIELD_NUMBER: _ClassVar[int]
    NUM_STAGES_FIELD_NUMBER: _ClassVar[int]
    DEFINES_FIELD_NUMBER: _ClassVar[int]
    LINE_INFO_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    archs: _containers.RepeatedScalarFieldContainer[str]
    kernel: str
    signature: _containers.ScalarMap[str, str]
    constants: _containers.ScalarMap[str, str]
    num_warps: int
    num_stages: int
    defines: _containers.RepeatedScalarFieldContainer[str]
    line_info: bool
    include_artifacts: bool
    def __init__(self, archs: _Optional[_Iterable[str]] = ..., kernel: _Optional[str] = ..., signature: _Optional[_Mapping[str, str]] = ..., constants: _Optional[_Mapping[str, str]] = ..., num_warps: _Optional[int] = ..., num_stages: _Optional[int] = ..., defines: _Optional[_Iterable[str]] = ..., line_info: _Optional[bool] = ..., include_artifacts: _Optional[bool] = ...) -> None: ...

class DisasmOptions(_message.Message):
    __slots__ = ("compile", "include_sass", "include_ptx")
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SASS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PTX_FIELD_NUMBER: _ClassVar[int]
    compile: CompileOptions
    include_sass: bool
    include_ptx: bool
    def __init__(self, compile: _Optional[_Union[CompileOptions, _Mapping]] = ..., include_sass: _Optional[bool] = ..., include_ptx: _Optional[bool] = ...) -> None: ...

class CheckOptions(_message.Message):
    __slots__ = ("reference_file", "submission_file", "num_input_sets", "tolerances", "device", "launch", "input_distributions", "hack_policy", "require_custom_kernel")
    class TolerancesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REFERENCE_FILE_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_FILE_FIELD_NUMBER: _ClassVar[int]
    NUM_INPUT_SETS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_FIELD_NUMBER: _ClassVar[int]
    INPUT_DISTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    HACK_POLICY_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_CUSTOM_KERNEL_FIELD_NUMBER: _ClassVar[int]
    reference_file: str
    submission_file: str
    num_input_sets: int
    tolerances: _containers.ScalarMap[str, float]
    device: str
    launch: LaunchSpec
    input_distributions: _containers.RepeatedScalarFieldContainer[str]
    hack_policy: str
    require_custom_kernel: bool
    def __init__(self, reference_file: _Optional[str] = ..., submission_file: _Optional[str] = ..., num_input_sets: _Optional[int] = ..., tolerances: _Optional[_Mapping[str, float]] = ..., device: _Optional[str] = ..., launch: _Optional[_Union[LaunchSpec, _Mapping]] = ..., input_distributions: _Optional[_Iterable[str]] = ..., hack_policy: _Optional[str] = ..., require_custom_kernel: _Optional[bool] = ...) -> None: ...

class LaunchSpec(_message.Message):
    __slots__ = ("kernel", "grid", "block", "args", "outputs", "shared_mem_bytes", "compile_options")
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPILE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    kernel: str
    grid: _containers.RepeatedScalarFieldContainer[str]
    block: _containers.RepeatedScalarFieldContainer[str]
    args: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedCompositeFieldContainer[OutputSpec]
    shared_mem_bytes: str
    compile_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kernel: _Optional[str] = ..., grid: _Optional[_Iterable[str]] = ..., block: _Optional[_Iterable[str]] = ..., args: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[_Union[OutputSpec, _Mapping]]] = ..., shared_mem_bytes: _Optional[str] = ..., compile_options: _Optional[_Iterable[str]] = ...) -> None: ...

class OutputSpec(_message.Message):
    __slots__ = ("like", "shape", "dtype")
    LIKE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    like: str
    shape: _containers.RepeatedScalarFieldContainer[str]
    dtype: str
    def __init__(self, like: _Optional[str] = ..., shape: _Optional[_Iterable[str]] = ..., dtype: _Optional[str] = ...) -> None: ...

class BenchOptions(_message.Message):
    __slots__ = ("reference_file", "submission_file", "device", "target_rel_error", "time_budget_s", "min_samples", "launch", "threads", "max_plausible_speedup", "hack_policy", "require_custom_kernel")
    REFERENCE_FILE_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_FILE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TARGET_REL_ERROR_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    MAX_PLAUSIBLE_SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    HACK_POLICY_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_CUSTOM_KERNEL_FIELD_NUMBER: _ClassVar[int]
    reference_file: str
    submission_file: str
    device: str
    target_rel_error: float
    time_budget_s: float
    min_samples: int
    launch: LaunchSpec
    threads: int
    max_plausible_speedup: float
    hack_policy: str
    require_custom_kernel: bool
    def __init__(self, reference_file: _Optional[str] = ..., submission_file: _Optional[str] = ..., device: _Optional[str] = ..., target_rel_error: _Optional[float] = ..., time_budget_s: _Optional[float] = ..., min_samples: _Optional[int] = ..., launch: _Optional[_Union[LaunchSpec, _Mapping]] = ..., threads: _Optional[int] = ..., max_plausible_speedup: _Optional[float] = ..., hack_policy: _Optional[str] = ..., require_custom_kernel: _Optional[bool] = ...) -> None: ...

class ProfileOptions(_message.Message):
    __slots__ = ("reference_file", "submission_file", "sections", "kernel_filter", "warmup_calls", "max_kernels", "nsys", "args")
    REFERENCE_FILE_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_FILE_FIELD_NUMBER: _ClassVar[int]
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    WARMUP_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_KERNELS_FIELD_NUMBER: _ClassVar[int]
    NSYS_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    reference_file: str
    submission_file: str
    sections: _containers.RepeatedScalarFieldContainer[str]
    kernel_filter: str
    warmup_calls: int
    max_kernels: int
    nsys: bool
    args: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reference_file: _Optional[str] = ..., submission_file: _Optional[str] = ..., sections: _Optional[_Iterable[str]] = ..., kernel_filter: _Optional[str] = ..., warmup_calls: _Optional[int] = ..., max_kernels: _Optional[int] = ..., nsys: _Optional[bool] = ..., args: _Optional[_Iterable[str]] = ...) -> None: ...

class SanitizeOptions(_message.Message):
    __slots__ = ("reference_file", "submission_file", "checks", "max_errors", "args")
    REFERENCE_FILE_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_FILE_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    MAX_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    reference_file: str
    submission_file: str
    checks: _containers.RepeatedScalarFieldContainer[str]
    max_errors: int
    args: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reference_file: _Optional[str] = ..., submission_file: _Optional[str] = ..., checks: _Optional[_Iterable[str]] = ..., max_errors: _Optional[int] = ..., args: _Optional[_Iterable[str]] = ...) -> None: ...

class ToolRequest(_message.Message):
    __slots__ = ("request_id", "tool", "language", "files", "compile", "disasm", "check", "bench", "profile", "sanitize", "limits", "no_cache")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    DISASM_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    BENCH_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    SANITIZE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tool: str
    language: Language
    files: _containers.RepeatedCompositeFieldContainer[SourceFile]
    compile: CompileOptions
    disasm: DisasmOptions
    check: CheckOptions
    bench: BenchOptions
    profile: ProfileOptions
    sanitize: SanitizeOptions
    limits: Limits
    no_cache: bool
    def __init__(self, request_id: _Optional[str] = ..., tool: _Optional[str] = ..., language: _Optional[_Union[Language, str]] = ..., files: _Optional[_Iterable[_Union[SourceFile, _Mapping]]] = ..., compile: _Optional[_Union[CompileOptions, _Mapping]] = ..., disasm: _Optional[_Union[DisasmOptions, _Mapping]] = ..., check: _Optional[_Union[CheckOptions, _Mapping]] = ..., bench: _Optional[_Union[BenchOptions, _Mapping]] = ..., profile: _Optional[_Union[ProfileOptions, _Mapping]] = ..., sanitize: _Optional[_Union[SanitizeOptions, _Mapping]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., no_cache: _Optional[bool] = ...) -> None: ...

class Diagnostic(_message.Message):
    __slots__ = ("file", "line", "column", "severity", "message")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    column: int
    severity: str
    message: str
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., severity: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "kind", "arch", "size_bytes", "sha256", "text")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    arch: str
    size_bytes: int
    sha256: str
    text: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., arch: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class CompiledKernel(_message.Message):
    __slots__ = ("name", "demangled", "arch", "registers", "spill_store_bytes", "spill_load_bytes", "stack_frame_bytes", "shared_bytes", "constant_bytes", "barriers", "num_warps", "num_stages")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEMANGLED_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    REGISTERS_FIELD_NUMBER: _ClassVar[int]
    SPILL_STORE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPILL_LOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    STACK_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHARED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_BYTES_FIELD_NUMBER: _ClassVar[int]
    BARRIERS_FIELD_NUMBER: _ClassVar[int]
    NUM_WARPS_FIELD_NUMBER: _ClassVar[int]
    NUM_STAGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    demangled: str
    arch: str
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    stack_frame_bytes: int
    shared_bytes: int
    constant_bytes: int
    barriers: int
    num_warps: int
    num_stages: int
    def __init__(self, name: _Optional[str] = ..., demangled: _Optional[str] = ..., arch: _Optional[str] = ..., registers: _Optional[int] = ..., spill_store_bytes: _Optional[int] = ..., spill_load_bytes: _Optional[int] = ..., stack_frame_bytes: _Optional[int] = ..., shared_bytes: _Optional[int] = ..., constant_bytes: _Optional[int] = ..., barriers: _Optional[int] = ..., num_warps: _Optional[int] = ..., num_stages: _Optional[int] = ...) -> None: ...

class CompileReport(_message.Message):
    __slots__ = ("kernels", "diagnostics", "artifacts", "command", "compile_ms")
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    COMPILE_MS_FIELD_NUMBER: _ClassVar[int]
    kernels: _containers.RepeatedCompositeFieldContainer[CompiledKernel]
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    command: _containers.RepeatedScalarFieldContainer[str]
    compile_ms: int
    def __init__(self, kernels: _Optional[_Iterable[_Union[CompiledKernel, _Mapping]]] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., command: _Optional[_Iterable[str]] = ..., compile_ms: _Optional[int] = ...) -> None: ...

class InstructionMix(_message.Message):
    __slots__ = ("global_memory", "shared_memory", "local_memory", "constant_memory", "tensor_core", "fp32", "fp16", "fp64", "integer", "conversion", "control", "sync", "move", "other", "total", "opcodes")
    class OpcodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    GLOBAL_MEMORY_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    LOCAL_MEMORY_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_MEMORY_FIELD_NUMBER: _ClassVar[int]
    TENSOR_CORE_FIELD_NUMBER: _ClassVar[int]
    FP32_FIELD_NUMBER: _ClassVar[int]
    FP16_FIELD_NUMBER: _ClassVar[int]
    FP64_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    MOVE_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    OPCODES_FIELD_NUMBER: _ClassVar[int]
    global_memory: int
    shared_memory: int
    local_memory: int
    constant_memory: int
    tensor_core: int
    fp32: int
    fp16: int
    fp64: int
    integer: int
    conversion: int
    control: int
    sync: int
    move: int
    other: int
    total: int
    opcodes: _containers.ScalarMap[str, int]
    def __init__(self, global_memory: _Optional[int] = ..., shared_memory: _Optional[int] = ..., local_memory: _Optional[int] = ..., constant_memory: _Optional[int] = ..., tensor_core: _Optional[int] = ..., fp32: _Optional[int] = ..., fp16: _Optional[int] = ..., fp64: _Optional[int] = ..., integer: _Optional[int] = ..., conversion: _Optional[int] = ..., control: _Optional[int] = ..., sync: _Optional[int] = ..., move: _Optional[int] = ..., other: _Optional[int] = ..., total: _Optional[int] = ..., opcodes: _Optional[_Mapping[str, int]] = ...) -> None: ...

class KernelDisasm(_message.Message):
    __slots__ = ("name", "demangled", "arch", "mix", "sass", "ptx")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEMANGLED_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    MIX_FIELD_NUMBER: _ClassVar[int]
    SASS_FIELD_NUMBER: _ClassVar[int]
    PTX_FIELD_NUMBER: _ClassVar[int]
    name: str
    demangled: str
    arch: str
    mix: InstructionMix
    sass: str
    ptx: str
    def __init__(self, name: _Optional[str] = ..., demangled: _Optional[str] = ..., arch: _Optional[str] = ..., mix: _Optional[_Union[InstructionMix, _Mapping]] = ..., sass: _Optional[str] = ..., ptx: _Optional[str] = ...) -> None: ...

class DisasmReport(_message.Message):
    __slots__ = ("kernels", "compile")
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    kernels: _containers.RepeatedCompositeFieldContainer[KernelDisasm]
    compile: CompileReport
    def __init__(self, kernels: _Optional[_Iterable[_Union[KernelDisasm, _Mapping]]] = ..., compile: _Optional[_Union[CompileReport, _Mapping]] = ...) -> None: ...

class OutputCheck(_message.Message):
    __slots__ = ("input_set", "output_index", "shape", "expected_shape", "dtype", "expected_dtype", "max_abs_error", "max_rel_error", "mismatch_fraction", "first_mismatch_index", "passed", "problem", "norm_rel_error")
    INPUT_SET_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_ERROR_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FRACTION_FIELD_NUMBER: _ClassVar[int]
    FIRST_MISMATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    NORM_REL_ERROR_FIELD_NUMBER: _ClassVar[int]
    input_set: int
    output_index: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    expected_shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    expected_dtype: str
    max_abs_error: float
    max_rel_error: float
    mismatch_fraction: float
    first_mismatch_index: _containers.RepeatedScalarFieldContainer[int]
    passed: bool
    problem: str
    norm_rel_error: float
    def __init__(self, input_set: _Optional[int] = ..., output_index: _Optional[int] = ..., shape: _Optional[_Iterable[int]] = ..., expected_shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., expected_dtype: _Optional[str] = ..., max_abs_error: _Optional[float] = ..., max_rel_error: _Optional[float] = ..., mismatch_fraction: _Optional[float] = ..., first_mismatch_index: _Optional[_Iterable[int]] = ..., passed: _Optional[bool] = ..., problem: _Optional[str] = ..., norm_rel_error: _Optional[float] = ...) -> None: ...

class SourceFlag(_message.Message):
    __slots__ = ("category", "line", "evidence")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    category: str
    line: int
    evidence: str
    def __init__(self, category: _Optional[str] = ..., line: _Optional[int] = ..., evidence: _Optional[str] = ...) -> None: ...

class CheckReport(_message.Message):
    __slots__ = ("passed", "num_input_sets", "device", "deterministic", "atol", "outputs", "reason", "flags", "warnings")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    NUM_INPUT_SETS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    ATOL_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    num_input_sets: int
    device: str
    deterministic: bool
    atol: float
    outputs: _containers.RepeatedCompositeFieldContainer[OutputCheck]
    reason: str
    flags: _containers.RepeatedCompositeFieldContainer[SourceFlag]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, passed: _Optional[bool] = ..., num_input_sets: _Optional[int] = ..., device: _Optional[str] = ..., deterministic: _Optional[bool] = ..., atol: _Optional[float] = ..., outputs: _Optional[_Iterable[_Union[OutputCheck, _Mapping]]] = ..., reason: _Optional[str] = ..., flags: _Optional[_Iterable[_Union[SourceFlag, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class TimingStats(_message.Message):
    __slots__ = ("median_us", "mean_us", "min_us", "iqr_us", "rel_error", "num_samples", "calls_per_sample")
    MEDIAN_US_FIELD_NUMBER: _ClassVar[int]
    MEAN_US_FIELD_NUMBER: _ClassVar[int]
    MIN_US_FIELD_NUMBER: _ClassVar[int]
    IQR_US_FIELD_NUMBER: _ClassVar[int]
    REL_ERROR_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CALLS_PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    median_us: float
    mean_us: float
    min_us: float
    iqr_us: float
    rel_error: float
    num_samples: int
    calls_per_sample: int
    def __init__(self, median_us: _Optional[float] = ..., mean_us: _Optional[float] = ..., min_us: _Optional[float] = ..., iqr_us: _Optional[float] = ..., rel_error: _Optional[float] = ..., num_samples: _Optional[int] = ..., calls_per_sample: _Optional[int] = ...) -> None: ...

class BenchReport(_message.Message):
    __slots__ = ("submission", "reference", "speedup", "device", "clock", "converged", "budget_used_s", "gpu", "l2_flush_bytes", "verified_outputs", "tool_gap_us", "reference_gap_us", "speedup_ci_low", "speedup_ci_high", "measurement_flags", "flags", "num_rounds", "submission_cpu_us", "reference_cpu_us", "threads", "cpus", "round_trip_us", "floor_us", "host", "submission_page_faults", "reference_page_faults")
    SUBMISSION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USED_S_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    L2_FLUSH_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TOOL_GAP_US_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_GAP_US_FIELD_NUMBER: _ClassVar[int]
    SPEEDUP_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    SPEEDUP_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FLAGS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    NUM_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_CPU_US_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_CPU_US_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIP_US_FIELD_NUMBER: _ClassVar[int]
    FLOOR_US_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_PAGE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_PAGE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    submission: TimingStats
    reference: TimingStats
    speedup: float
    device: str
    clock: str
    converged: bool
    budget_used_s: float
    gpu: GpuConditions
    l2_flush_bytes: int
    verified_outputs: int
    tool_gap_us: float
    reference_gap_us: float
    speedup_ci_low: float
    speedup_ci_high: float
    measurement_flags: _containers.RepeatedScalarFieldContainer[str]
    flags: _containers.RepeatedCompositeFieldContainer[SourceFlag]
    num_rounds: int
    submission_cpu_us: float
    reference_cpu_us: float
    threads: int
    cpus: _containers.RepeatedScalarFieldContainer[int]
    round_trip_us: float
    floor_us: float
    host: HostConditions
    submission_page_faults: float
    reference_page_faults: float
    def __init__(self, submission: _Optional[_Union[TimingStats, _Mapping]] = ..., reference: _Optional[_Union[TimingStats, _Mapping]] = ..., speedup: _Optional[float] = ..., device: _Optional[str] = ..., clock: _Optional[str] = ..., converged: _Optional[bool] = ..., budget_used_s: _Optional[float] = ..., gpu: _Optional[_Union[GpuConditions, _Mapping]] = ..., l2_flush_bytes: _Optional[int] = ..., verified_outputs: _Optional[int] = ..., tool_gap_us: _Optional[float] = ..., reference_gap_us: _Optional[float] = ..., speedup_ci_low: _Optional[float] = ..., speedup_ci_high: _Optional[float] = ..., measurement_flags: _Optional[_Iterable[str]] = ..., flags: _Optional[_Iterable[_Union[SourceFlag, _Mapping]]] = ..., num_rounds: _Optional[int] = ..., submission_cpu_us: _Optional[float] = ..., reference_cpu_us: _Optional[float] = ..., threads: _Optional[int] = ..., cpus: _Optional[_Iterable[int]] = ..., round_trip_us: _Optional[float] = ..., floor_us: _Optional[float] = ..., host: _Optional[_Union[HostConditions, _Mapping]] = ..., submission_page_faults: _Optional[float] = ..., reference_page_faults: _Optional[float] = ...) -> None: ...

class HostConditions(_message.Message):
    __slots__ = ("contention", "steal_fraction", "load_avg_before", "load_avg_after", "num_cpus_online")
    CONTENTION_FIELD_NUMBER: _ClassVar[int]
    STEAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVG_BEFORE_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVG_AFTER_FIELD_NUMBER: _ClassVar[int]
    NUM_CPUS_ONLINE_FIELD_NUMBER: _ClassVar[int]
    contention: float
    steal_fraction: float
    load_avg_before: float
    load_avg_after: float
    num_cpus_online: int
    def __init__(self, contention: _Optional[float] = ..., steal_fraction: _Optional[float] = ..., load_avg_before: _Optional[float] = ..., load_avg_after: _Optional[float] = ..., num_cpus_online: _Optional[int] = ...) -> None: ...

class GpuConditions(_message.Message):
    __slots__ = ("gpu_name", "sm_clock_mhz_min", "sm_clock_mhz_max", "mem_clock_mhz", "temperature_c_max", "throttle_reasons", "throttled", "samples")
    GPU_NAME_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_MIN_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_MAX_FIELD_NUMBER: _ClassVar[int]
    MEM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_MAX_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_REASONS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    gpu_name: str
    sm_clock_mhz_min: int
    sm_clock_mhz_max: int
    mem_clock_mhz: int
    temperature_c_max: int
    throttle_reasons: _containers.RepeatedScalarFieldContainer[str]
    throttled: bool
    samples: int
    def __init__(self, gpu_name: _Optional[str] = ..., sm_clock_mhz_min: _Optional[int] = ..., sm_clock_mhz_max: _Optional[int] = ..., mem_clock_mhz: _Optional[int] = ..., temperature_c_max: _Optional[int] = ..., throttle_reasons: _Optional[_Iterable[str]] = ..., throttled: _Optional[bool] = ..., samples: _Optional[int] = ...) -> None: ...

class Roofline(_message.Message):
    __slots__ = ("achieved_gflops", "dram_gbytes_per_s", "peak_gflops", "peak_dram_gbytes_per_s", "arithmetic_intensity", "ridge_intensity")
    ACHIEVED_GFLOPS_FIELD_NUMBER: _ClassVar[int]
    DRAM_GBYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    PEAK_GFLOPS_FIELD_NUMBER: _ClassVar[int]
    PEAK_DRAM_GBYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    ARITHMETIC_INTENSITY_FIELD_NUMBER: _ClassVar[int]
    RIDGE_INTENSITY_FIELD_NUMBER: _ClassVar[int]
    achieved_gflops: float
    dram_gbytes_per_s: float
    peak_gflops: float
    peak_dram_gbytes_per_s: float
    arithmetic_intensity: float
    ridge_intensity: float
    def __init__(self, achieved_gflops: _Optional[float] = ..., dram_gbytes_per_s: _Optional[float] = ..., peak_gflops: _Optional[float] = ..., peak_dram_gbytes_per_s: _Optional[float] = ..., arithmetic_intensity: _Optional[float] = ..., ridge_intensity: _Optional[float] = ...) -> None: ...

class KernelProfile(_message.Message):
    __slots__ = ("id", "name", "grid", "block", "duration_us", "sm_throughput_pct", "memory_throughput_pct", "dram_throughput_pct", "l2_throughput_pct", "l1_throughput_pct", "l2_hit_rate_pct", "l1_hit_rate_pct", "achieved_occupancy_pct", "theoretical_occupancy_pct", "registers_per_thread", "shared_memory_per_block_bytes", "warp_stalls", "bound", "roofline", "advice", "summary")
    class WarpStallsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    SM_THROUGHPUT_PCT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_THROUGHPUT_PCT_FIELD_NUMBER: _ClassVar[int]
    DRAM_THROUGHPUT_PCT_FIELD_NUMBER: _ClassVar[int]
    L2_THROUGHPUT_PCT_FIELD_NUMBER: _ClassVar[int]
    L1_THROUGHPUT_PCT_FIELD_NUMBER: _ClassVar[int]
    L2_HIT_RATE_PCT_FIELD_NUMBER: _ClassVar[int]
    L1_HIT_RATE_PCT_FIELD_NUMBER: _ClassVar[int]
    ACHIEVED_OCCUPANCY_PCT_FIELD_NUMBER: _ClassVar[int]
    THEORETICAL_OCCUPANCY_PCT_FIELD_NUMBER: _ClassVar[int]
    REGISTERS_PER_THREAD_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_PER_BLOCK_BYTES_FIELD_NUMBER: _ClassVar[int]
    WARP_STALLS_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    ROOFLINE_FIELD_NUMBER: _ClassVar[int]
    ADVICE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    grid: str
    block: str
    duration_us: float
    sm_throughput_pct: float
    memory_throughput_pct: float
    dram_throughput_pct: float
    l2_throughput_pct: float
    l1_throughput_pct: float
    l2_hit_rate_pct: float
    l1_hit_rate_pct: float
    achieved_occupancy_pct: float
    theoretical_occupancy_pct: float
    registers_per_thread: int
    shared_memory_per_block_bytes: int
    warp_stalls: _containers.ScalarMap[str, float]
    bound: str
    roofline: Roofline
    advice: _containers.RepeatedScalarFieldContainer[str]
    summary: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., grid: _Optional[str] = ..., block: _Optional[str] = ..., duration_us: _Optional[float] = ..., sm_throughput_pct: _Optional[float] = ..., memory_throughput_pct: _Optional[float] = ..., dram_throughput_pct: _Optional[float] = ..., l2_throughput_pct: _Optional[float] = ..., l1_throughput_pct: _Optional[float] = ..., l2_hit_rate_pct: _Optional[float] = ..., l1_hit_rate_pct: _Optional[float] = ..., achieved_occupancy_pct: _Optional[float] = ..., theoretical_occupancy_pct: _Optional[float] = ..., registers_per_thread: _Optional[int] = ..., shared_memory_per_block_bytes: _Optional[int] = ..., warp_stalls: _Optional[_Mapping[str, float]] = ..., bound: _Optional[str] = ..., roofline: _Optional[_Union[Roofline, _Mapping]] = ..., advice: _Optional[_Iterable[str]] = ..., summary: _Optional[str] = ...) -> None: ...

class NsysRow(_message.Message):
    __slots__ = ("name", "calls", "total_us", "average_us", "percent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_US_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    calls: int
    total_us: float
    average_us: float
    percent: float
    def __init__(self, name: _Optional[str] = ..., calls: _Optional[int] = ..., total_us: _Optional[float] = ..., average_us: _Optional[float] = ..., percent: _Optional[float] = ...) -> None: ...

class NsysSummary(_message.Message):
    __slots__ = ("available", "note", "kernels", "memory_operations")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    available: bool
    note: str
    kernels: _containers.RepeatedCompositeFieldContainer[NsysRow]
    memory_operations: _containers.RepeatedCompositeFieldContainer[NsysRow]
    def __init__(self, available: _Optional[bool] = ..., note: _Optional[str] = ..., kernels: _Optional[_Iterable[_Union[NsysRow, _Mapping]]] = ..., memory_operations: _Optional[_Iterable[_Union[NsysRow, _Mapping]]] = ...) -> None: ...

class ProfileReport(_message.Message):
    __slots__ = ("kernels", "tool_version", "command", "nsys")
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    TOOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    NSYS_FIELD_NUMBER: _ClassVar[int]
    kernels: _containers.RepeatedCompositeFieldContainer[KernelProfile]
    tool_version: str
    command: _containers.RepeatedScalarFieldContainer[str]
    nsys: NsysSummary
    def __init__(self, kernels: _Optional[_Iterable[_Union[KernelProfile, _Mapping]]] = ..., tool_version: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., nsys: _Optional[_Union[NsysSummary, _Mapping]] = ...) -> None: ...

class SanitizerError(_message.Message):
    __slots__ = ("tool", "kind", "kernel", "block", "thread", "address", "size", "file", "line", "detail", "hazards")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    HAZARDS_FIELD_NUMBER: _ClassVar[int]
    tool: str
    kind: str
    kernel: str
    block: str
    thread: str
    address: str
    size: int
    file: str
    line: int
    detail: str
    hazards: int
    def __init__(self, tool: _Optional[str] = ..., kind: _Optional[str] = ..., kernel: _Optional[str] = ..., block: _Optional[str] = ..., thread: _Optional[str] = ..., address: _Optional[str] = ..., size: _Optional[int] = ..., file: _Optional[str] = ..., line: _Optional[int] = ..., detail: _Optional[str] = ..., hazards: _Optional[int] = ...) -> None: ...

class SanitizerRun(_message.Message):
    __slots__ = ("tool", "error_count", "errors", "api_errors", "summary_line", "complete")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    API_ERRORS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_LINE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    tool: str
    error_count: int
    errors: _containers.RepeatedCompositeFieldContainer[SanitizerError]
    api_errors: _containers.RepeatedScalarFieldContainer[str]
    summary_line: str
    complete: bool
    def __init__(self, tool: _Optional[str] = ..., error_count: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[SanitizerError, _Mapping]]] = ..., api_errors: _Optional[_Iterable[str]] = ..., summary_line: _Optional[str] = ..., complete: _Optional[bool] = ...) -> None: ...

class SanitizeReport(_message.Message):
    __slots__ = ("runs", "tool_version")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    TOOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[SanitizerRun]
    tool_version: str
    def __init__(self, runs: _Optional[_Iterable[_Union[SanitizerRun, _Mapping]]] = ..., tool_version: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_ms", "run_ms", "total_ms", "cpu_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: int
    run_ms: int
    total_ms: int
    cpu_ms: int
    def __init__(self, queue_ms: _Optional[int] = ..., run_ms: _Optional[int] = ..., total_ms: _Optional[int] = ..., cpu_ms: _Optional[int] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("perfbox_version", "toolkit", "device", "node", "backend")
    PERFBOX_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOOLKIT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    perfbox_version: str
    toolkit: str
    device: str
    node: str
    backend: str
    def __init__(self, perfbox_version: _Optional[str] = ..., toolkit: _Optional[str] = ..., device: _Optional[str] = ..., node: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("request_id", "job_id", "tool", "status", "summary", "error", "compile", "disasm", "check", "bench", "profile", "sanitize", "stdout", "stderr", "timings", "cache_hit", "identity", "cached_from_job_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    DISASM_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    BENCH_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    SANITIZE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CACHED_FROM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    tool: str
    status: Status
    summary: str
    error: str
    compile: CompileReport
    disasm: DisasmReport
    check: CheckReport
    bench: BenchReport
    profile: ProfileReport
    sanitize: SanitizeReport
    stdout: str
    stderr: str
    timings: Timings
    cache_hit: bool
    identity: Identity
    cached_from_job_id: str
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ..., tool: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., summary: _Optional[str] = ..., error: _Optional[str] = ..., compile: _Optional[_Union[CompileReport, _Mapping]] = ..., disasm: _Optional[_Union[DisasmReport, _Mapping]] = ..., check: _Optional[_Union[CheckReport, _Mapping]] = ..., bench: _Optional[_Union[BenchReport, _Mapping]] = ..., profile: _Optional[_Union[ProfileReport, _Mapping]] = ..., sanitize: _Optional[_Union[SanitizeReport, _Mapping]] = ..., stdout: _Optional[str] = ..., stderr: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., cache_hit: _Optional[bool] = ..., identity: _Optional[_Union[Identity, _Mapping]] = ..., cached_from_job_id: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("request_id", "job_id", "queued", "started", "log", "result")
    class Queued(_message.Message):
        __slots__ = ("position",)
        POSITION_FIELD_NUMBER: _ClassVar[int]
        position: int
        def __init__(self, position: _Optional[int] = ...) -> None: ...
    class Started(_message.Message):
        __slots__ = ("worker",)
        WORKER_FIELD_NUMBER: _ClassVar[int]
        worker: str
        def __init__(self, worker: _Optional[str] = ...) -> None: ...
    class Log(_message.Message):
        __slots__ = ("stream", "text")
        STREAM_FIELD_NUMBER: _ClassVar[int]
        TEXT_FIELD_NUMBER: _ClassVar[int]
        stream: str
        text: str
        def __init__(self, stream: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    queued: RunEvent.Queued
    started: RunEvent.Started
    log: RunEvent.Log
    result: ToolResult
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ..., queued: _Optional[_Union[RunEvent.Queued, _Mapping]] = ..., started: _Optional[_Union[RunEvent.Started, _Mapping]] = ..., log: _Optional[_Union[RunEvent.Log, _Mapping]] = ..., result: _Optional[_Union[ToolResult, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("request_id", "job_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("cancelled", "state")
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    state: str
    def __init__(self, cancelled: _Optional[bool] = ..., state: _Optional[str] = ...) -> None: ...

class DeviceInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("index", "name", "uuid", "compute_capability", "sm_count", "memory_total_bytes", "memory_used_bytes", "sm_clock_mhz", "memory_clock_mhz", "max_sm_clock_mhz", "temperature_c", "power_limit_w")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    SM_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MAX_SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    uuid: str
    compute_capability: str
    sm_count: int
    memory_total_bytes: int
    memory_used_bytes: int
    sm_clock_mhz: int
    memory_clock_mhz: int
    max_sm_clock_mhz: int
    temperature_c: int
    power_limit_w: int
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ..., compute_capability: _Optional[str] = ..., sm_count: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., sm_clock_mhz: _Optional[int] = ..., memory_clock_mhz: _Optional[int] = ..., max_sm_clock_mhz: _Optional[int] = ..., temperature_c: _Optional[int] = ..., power_limit_w: _Optional[int] = ...) -> None: ...

class Toolchain(_message.Message):
    __slots__ = ("name", "version", "path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    path: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class DeviceInfoResponse(_message.Message):
    __slots__ = ("gpu_available", "gpus", "driver_version", "cuda_driver_version", "toolchain", "message", "available_tools", "node")
    GPU_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOOLCHAIN_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_TOOLS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    gpu_available: bool
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    driver_version: str
    cuda_driver_version: str
    toolchain: _containers.RepeatedCompositeFieldContainer[Toolchain]
    message: str
    available_tools: _containers.RepeatedScalarFieldContainer[str]
    node: str
    def __init__(self, gpu_available: _Optional[bool] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., driver_version: _Optional[str] = ..., cuda_driver_version: _Optional[str] = ..., toolchain: _Optional[_Iterable[_Union[Toolchain, _Mapping]]] = ..., message: _Optional[str] = ..., available_tools: _Optional[_Iterable[str]] = ..., node: _Optional[str] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ToolInfo(_message.Message):
    __slots__ = ("name", "description", "languages", "needs_gpu", "cacheable", "available", "unavailable_reason", "function_schema")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    NEEDS_GPU_FIELD_NUMBER: _ClassVar[int]
    CACHEABLE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    languages: _containers.RepeatedScalarFieldContainer[Language]
    needs_gpu: bool
    cacheable: bool
    available: bool
    unavailable_reason: str
    function_schema: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., languages: _Optional[_Iterable[_Union[Language, str]]] = ..., needs_gpu: _Optional[bool] = ..., cacheable: _Optional[bool] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ..., function_schema: _Optional[str] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolInfo]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolInfo, _Mapping]]] = ...) -> None: ...
