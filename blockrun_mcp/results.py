"""What each tool returns. These models are the tools' output schemas, so descriptions stay short."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0


class FileSent(BaseModel):
    path: str
    bytes: int
    tokens: int  # approximate: about four characters a token


class AskResult(BaseModel):
    model: str
    content: str
    finish_reason: str | None
    refused: bool = Field(False, description="declined (content_filter)")
    usage: Usage
    cost_usd: float
    budget_remaining_usd: float | None  # None: the ledger could not be read (see note)
    thread_id: str | None = Field(description="continue with it (null: the turn was not saved)")
    files: list[FileSent] = []
    workspace: list[str] | None = None  # the directories `files` were read from
    transaction: str | None = Field(None, description="settlement tx hash")
    note: str | None = None


class DelegateStep(BaseModel):
    tool: str
    target: str | None = None  # the path or pattern
    refused: bool = False
    bytes: int = 0  # what went back to the model


class DelegateResult(BaseModel):
    answer: str
    stopped: str = Field(description="answered, max_steps or max_cost")
    model: str
    steps: list[DelegateStep]
    files_read: list[str]
    requests: int  # paid model requests made
    cost_usd: float
    budget_remaining_usd: float | None
    thread_id: str | None
    workspace: list[str] | None = None
    note: str | None = None


class ModelInfo(BaseModel):
    id: str
    name: str
    provider: str
    input_price: float  # USD per 1M input tokens (the tool description says so)
    output_price: float
    context_window: int | None
    categories: list[str]
    available: bool
    image_price: float | None = Field(None, description="USD per image")
    price_per_second: float | None = Field(None, description="USD per video second")


class ModelList(BaseModel):
    models: list[ModelInfo]
    stale: bool = False
    note: str | None = None


class ImageFile(BaseModel):
    path: str | None
    url: str | None


class ImageResult(BaseModel):
    images: list[ImageFile]
    model: str
    cost_usd: float
    budget_remaining_usd: float | None  # None: the ledger could not be read (see note)
    transaction: str | None = None
    note: str | None = None


class VideoResult(BaseModel):
    status: str = Field(description="completed, running or failed")
    job_id: str | None
    path: str | None = None
    url: str | None = None
    cost_usd: float
    budget_remaining_usd: float | None  # None: the ledger could not be read (see note)
    transaction: str | None = None
    note: str | None = None


class Estimate(BaseModel):
    model: str
    estimated_usd: float
    basis: str


class Receipt(BaseModel):
    time: str
    tool: str
    model: str
    cost_usd: float
    status: str
    transaction: str | None
    job_id: str | None = Field(None, description="resume this running video")


class BudgetResult(BaseModel):
    session_limit_usd: float
    session_spent_usd: float
    budget_remaining_usd: float
    per_call_cap_usd: float
    daily_limit_usd: float | None = None
    daily_spent_usd: float | None = None
    recent: list[Receipt] = []


class WalletResult(BaseModel):
    address: str
    network: str
    funding: str


class ThreadInfo(BaseModel):
    thread_id: str
    title: str
    models: list[str]
    turns: int
    cost_usd: float
    last_used: str


class TurnInfo(BaseModel):
    model: str
    prompt: str
    answer: str
    files: list[str]
    cost_usd: float
    time: str


class ThreadsResult(BaseModel):
    threads: list[ThreadInfo] = []
    turns: list[TurnInfo] = []  # the thread asked for, oldest first


class ConsultAnswer(BaseModel):
    model: str
    content: str | None
    finish_reason: str | None = None
    cost_usd: float
    thread_id: str | None = None
    error: str | None = None
    note: str | None = None  # the answer is here, but its booking or thread turn is not (yet)


# Its own type, not ConsultAnswer again, so that the schema stays inline (no $ref).
class Synthesis(BaseModel):
    model: str
    content: str | None
    cost_usd: float
    thread_id: str | None = None
    error: str | None = None
    note: str | None = None


class ConsultResult(BaseModel):
    answers: list[ConsultAnswer]
    synthesis: Synthesis | None = None
    cost_usd: float
    budget_remaining_usd: float | None  # None: the ledger could not be read (see note)
    workspace: list[str] | None = None  # the directories `files` were read from
    note: str | None = None
