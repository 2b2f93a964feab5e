from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartRunRequest(_message.Message):
    __slots__ = ("run_id", "strategy", "params", "resume", "options")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    strategy: str
    params: _containers.ScalarMap[str, float]
    resume: bool
    options: _containers.ScalarMap[str, str]
    def __init__(self, run_id: _Optional[str] = ..., strategy: _Optional[str] = ..., params: _Optional[_Mapping[str, float]] = ..., resume: _Optional[bool] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PromptStats(_message.Message):
    __slots__ = ("prompt_id", "accuracy", "num_samples")
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    accuracy: float
    num_samples: int
    def __init__(self, prompt_id: _Optional[str] = ..., accuracy: _Optional[float] = ..., num_samples: _Optional[int] = ...) -> None: ...

class GetCoefficientsRequest(_message.Message):
    __slots__ = ("run_id", "step", "prompts", "prompt_ids", "accuracies", "sample_counts")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    ACCURACIES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    prompts: _containers.RepeatedCompositeFieldContainer[PromptStats]
    prompt_ids: _containers.RepeatedScalarFieldContainer[str]
    accuracies: _containers.RepeatedScalarFieldContainer[float]
    sample_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., prompts: _Optional[_Iterable[_Union[PromptStats, _Mapping]]] = ..., prompt_ids: _Optional[_Iterable[str]] = ..., accuracies: _Optional[_Iterable[float]] = ..., sample_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class Coefficients(_message.Message):
    __slots__ = ("run_id", "step", "alpha", "prompt_weights", "target_entropy")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    PROMPT_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    alpha: float
    prompt_weights: _containers.RepeatedScalarFieldContainer[float]
    target_entropy: float
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., alpha: _Optional[float] = ..., prompt_weights: _Optional[_Iterable[float]] = ..., target_entropy: _Optional[float] = ...) -> None: ...

class ReportEntropyRequest(_message.Message):
    __slots__ = ("run_id", "step", "mean_entropy", "num_tokens", "accuracy_by_difficulty", "response_length", "total_steps")
    class AccuracyByDifficultyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MEAN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_BY_DIFFICULTY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    mean_entropy: float
    num_tokens: int
    accuracy_by_difficulty: _containers.ScalarMap[str, float]
    response_length: float
    total_steps: int
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., mean_entropy: _Optional[float] = ..., num_tokens: _Optional[int] = ..., accuracy_by_difficulty: _Optional[_Mapping[str, float]] = ..., response_length: _Optional[float] = ..., total_steps: _Optional[int] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class OverrideRequest(_message.Message):
    __slots__ = ("run_id", "alpha", "target_entropy", "params", "frozen", "reason", "release", "strategy", "options")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGET_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    alpha: float
    target_entropy: float
    params: _containers.ScalarMap[str, float]
    frozen: bool
    reason: str
    release: bool
    strategy: str
    options: _containers.ScalarMap[str, str]
    def __init__(self, run_id: _Optional[str] = ..., alpha: _Optional[float] = ..., target_entropy: _Optional[float] = ..., params: _Optional[_Mapping[str, float]] = ..., frozen: _Optional[bool] = ..., reason: _Optional[str] = ..., release: _Optional[bool] = ..., strategy: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RunState(_message.Message):
    __slots__ = ("run_id", "strategy", "step", "alpha", "initial_entropy", "target_entropy", "last_entropy", "params", "alpha_pinned", "frozen", "options", "has_step", "observations", "version", "target_overridden", "updated_at", "p_term", "i_term", "d_term", "total_steps", "finished", "reported_at")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    INITIAL_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    TARGET_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    LAST_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_PINNED_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HAS_STEP_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    P_TERM_FIELD_NUMBER: _ClassVar[int]
    I_TERM_FIELD_NUMBER: _ClassVar[int]
    D_TERM_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    strategy: str
    step: int
    alpha: float
    initial_entropy: float
    target_entropy: float
    last_entropy: float
    params: _containers.ScalarMap[str, float]
    alpha_pinned: bool
    frozen: bool
    options: _containers.ScalarMap[str, str]
    has_step: bool
    observations: int
    version: int
    target_overridden: bool
    updated_at: float
    p_term: float
    i_term: float
    d_term: float
    total_steps: int
    finished: bool
    reported_at: float
    def __init__(self, run_id: _Optional[str] = ..., strategy: _Optional[str] = ..., step: _Optional[int] = ..., alpha: _Optional[float] = ..., initial_entropy: _Optional[float] = ..., target_entropy: _Optional[float] = ..., last_entropy: _Optional[float] = ..., params: _Optional[_Mapping[str, float]] = ..., alpha_pinned: _Optional[bool] = ..., frozen: _Optional[bool] = ..., options: _Optional[_Mapping[str, str]] = ..., has_step: _Optional[bool] = ..., observations: _Optional[int] = ..., version: _Optional[int] = ..., target_overridden: _Optional[bool] = ..., updated_at: _Optional[float] = ..., p_term: _Optional[float] = ..., i_term: _Optional[float] = ..., d_term: _Optional[float] = ..., total_steps: _Optional[int] = ..., finished: _Optional[bool] = ..., reported_at: _Optional[float] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunState]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunState, _Mapping]]] = ...) -> None: ...
