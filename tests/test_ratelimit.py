"""The shared rate limiter: its arithmetic on a virtual clock, then many concurrent embed calls
through the OpenAI embedder's HTTP client against tests/fake_openai.py with an enforced budget."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator

import pytest

from tests.fake_openai import TEST_API_KEY, FakeOpenAI, format_duration
from vectorizer.config import OpenAIEmbedding
from vectorizer.embedders import RequestPolicy, make_embedder
from vectorizer.embedders.base import Embedder
from vectorizer.embedders.ratelimit import (
    BACKOFF_CAP,
    STATIC_SAFETY,
    Budget,
    RateLimiter,
    ThrottledError,
    forget_limiters,
    parse_duration,
    shared_limiter,
    static_budgets,
)
from vectorizer.errors import VectorizerError


@pytest.fixture(autouse=True)
def _fresh_limiters(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("VECTORIZER_RATE_LIMIT_RPM", "VECTORIZER_RATE_LIMIT_TPM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("VECTORIZER_OPENAI_RPM", raising=False)
    monkeypatch.delenv("VECTORIZER_OPENAI_TPM", raising=False)
    forget_limiters()
    yield
    forget_limiters()


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12ms", 0.012),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("1.5m", 90.0),
        ("250us", 0.00025),
        ("2", 2.0),
        ("0s", 0.0),
    ],
)
def test_reset_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "-1s", "5 minutes", "ms", "1s2", "nan"])
def test_bad_durations_are_ignored(text: str | None) -> None:
    assert parse_duration(text) is None


def test_the_fake_formats_durations_the_way_we_parse_them() -> None:
    for seconds in (0.0004, 0.012, 0.999, 1.5, 59.0, 360.0, 3723.5):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-3)


# --- arithmetic on a virtual clock -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class VirtualLimiter(RateLimiter):
    """Sleeping advances the clock instead of taking time (callers here run one at a time)."""

    def __init__(self, clock: Clock, **budgets: Budget | None) -> None:
        super().__init__("virtual", clock=clock, rng=random.Random(3), **budgets)
        self.clock = clock

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.waited += seconds
            self.clock.now += seconds
        await asyncio.sleep(0)


async def take(limiter: RateLimiter, count: int, tokens: int = 0) -> None:
    for _ in range(count):
        async with limiter.request(tokens):
            pass


async def test_no_budget_means_no_waiting() -> None:
    limiter = VirtualLimiter(Clock())
    await take(limiter, 1000, tokens=10_000)
    assert limiter.waited == 0
    assert limiter.requests_per_second is None


async def test_static_request_budget_paces_after_one_second_of_burst() -> None:
    clock = Clock()
    # 100/s configured, paced at 90/s (the safety margin) with a burst of 90
    limiter = VirtualLimiter(clock, requests=Budget(6000))
    assert STATIC_SAFETY == 0.9
    await take(limiter, 90)
    assert clock.now == 1000.0
    await take(limiter, 180)
    assert clock.now - 1000.0 == pytest.approx(2.0)


async def test_static_token_budget_paces_by_tokens() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock, tokens=Budget(60_000))  # 1000 tokens/s, paced at 900
    await take(limiter, 2, tokens=450)
    assert clock.now == 1000.0
    await take(limiter, 4, tokens=450)
    assert clock.now - 1000.0 == pytest.approx(2.0)


async def test_a_request_larger_than_the_bucket_goes_when_it_is_full() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock, tokens=Budget(60_000))
    await take(limiter, 1, tokens=5000)  # the bucket (900) is full: go, and owe 4100
    assert clock.now == 1000.0
    await take(limiter, 1, tokens=100)
    assert clock.now - 1000.0 == pytest.approx(4200 / 900)


async def test_headers_teach_the_rate_and_what_is_left() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock)
    limiter.observe(
        {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
        }
    )
    assert limiter.requests_per_second == pytest.approx(100.0)
    await take(limiter, 50)
    assert clock.now - 1000.0 == pytest.approx(0.5)


async def test_headers_account_for_requests_still_outstanding() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock)
    headers = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "500ms",
    }
    async with limiter.request(0), limiter.request(0), limiter.request(0):
        # Three requests outstanding; this response answers the innermost: the provider
        # has not seen the other two yet, so only 3 of its 5 are really left.
        limiter.observe(headers)
    await take(limiter, 3)
    assert clock.now == 1000.0
    await take(limiter, 1)
    assert clock.now - 1000.0 == pytest.approx(0.1)


def test_without_a_limit_header_an_empty_budget_pauses_until_reset() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock)
    limiter.observe({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s"})
    assert limiter.paused_for == pytest.approx(2.0)


def test_responses_without_rate_limit_headers_change_nothing() -> None:
    limiter = VirtualLimiter(Clock())
    limiter.observe({"content-type": "application/json", "x-ratelimit-remaining-requests": "-1"})
    assert limiter.requests_per_second is None
    assert limiter.paused_for == 0


async def test_a_429_pauses_everyone_for_retry_after() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock)
    assert limiter.throttled(retry_after=3.0) == 3.0
    assert limiter.paused_for == 3.0
    await take(limiter, 1)
    assert 3.0 <= clock.now - 1000.0 <= 3.0 * 1.11  # the pause, plus at most 10% jitter


def test_429s_without_retry_after_back_off_exponentially_with_jitter_and_a_cap() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock)
    pauses = []
    for _ in range(12):
        pauses.append(limiter.throttled())
        clock.now += 0.001  # each a new 429 for a request sent after the previous one
    for streak, pause in enumerate(pauses[:6]):
        ceiling = 2.0**streak
        assert ceiling / 2 <= pause <= ceiling
    assert all(pause <= BACKOFF_CAP for pause in pauses)
    assert pauses[-1] >= BACKOFF_CAP / 2


async def test_a_success_ends_the_streak() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock)
    for _ in range(5):
        limiter.throttled()
        clock.now += 0.001
    await take(limiter, 1)
    assert limiter.throttled() <= 1.0


def test_429s_for_requests_sent_before_the_last_one_are_echoes() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock)
    sent = clock.now
    clock.now += 0.01
    first = limiter.throttled(sent_at=sent)
    for _ in range(20):  # the rest of a burst that was in flight together
        limiter.throttled(sent_at=sent)
    assert limiter.throttles == 21
    assert first <= 1.0
    clock.now += 0.01
    assert limiter.throttled(sent_at=clock.now) <= 2.0  # streak 2, not 22


async def test_429s_teach_a_rate_below_what_was_just_too_much() -> None:
    clock = Clock()
    limiter = VirtualLimiter(clock)
    for _ in range(40):  # 40 requests/s succeed for a second
        await take(limiter, 1)
        clock.now += 0.025
    limiter.throttled(retry_after=0.0, sent_at=clock.now)
    rate = limiter.requests_per_second
    assert rate is not None
    assert 0.7 * 40 <= rate <= 0.9 * 40
    clock.now += 5.0
    assert (limiter.requests_per_second or 0) > rate  # and creeps back up


async def test_a_429_makes_waiting_callers_book_again_at_the_new_rate() -> None:
    limiter = RateLimiter("real-clock", requests=Budget(6000))  # 100/s, a burst of 100
    async with limiter.request(0):
        pass
    for _ in range(99):
        async with limiter.request(0):
            pass
    waiter = asyncio.create_task(take(limiter, 1))
    await asyncio.sleep(0)  # booked at 100/s: due in ~10 ms
    limiter.throttled(retry_after=0.2)
    started = time.monotonic()
    await waiter
    assert time.monotonic() - started >= 0.19


# --- sharing ---------------------------------------------------------------------------------


def test_one_limiter_per_provider_key_and_endpoint() -> None:
    first = shared_limiter("openai", "sk-key-one-000000", "http://127.0.0.1:1/v1")
    assert shared_limiter("openai", "sk-key-one-000000", "http://127.0.0.1:1/v1/") is first
    assert shared_limiter("openai", "sk-key-two-000000", "http://127.0.0.1:1/v1") is not first
    assert shared_limiter("openai", "sk-key-one-000000", "http://127.0.0.1:2/v1") is not first
    assert shared_limiter("voyageai", "sk-key-one-000000", "http://127.0.0.1:1/v1") is not first
    assert "sk-key" not in repr(first) and "sk-key" not in first.name


def test_static_budgets_per_provider_win_over_the_global_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "VECTORIZER_RATE_LIMIT_RPM": "100",
        "VECTORIZER_RATE_LIMIT_TPM": "9000",
        "VECTORIZER_OPENAI_RPM": "3000",
        "VECTORIZER_VOYAGEAI_TPM": "oops",
    }
    assert static_budgets("openai", env) == (Budget(3000), Budget(9000))
    with caplog.at_level(logging.WARNING):
        assert static_budgets("voyageai", env) == (Budget(100), Budget(9000))
    assert "VECTORIZER_VOYAGEAI_TPM" in caplog.text
    assert static_budgets("ollama", {}) == (None, None)


def test_shared_limiters_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTORIZER_OPENAI_RPM", "120")
    limiter = shared_limiter("openai", "k", "http://example.invalid")
    assert limiter.requests_per_second == pytest.approx(2.0 * STATIC_SAFETY)


# --- many embed calls against a rate-limited server ------------------------------------------

BUDGET_RPS = 30.0
EMBEDDERS = 8
TEXTS_PER_CALL = 30
INPUTS_PER_REQUEST = 2


def openai_embedders(server: FakeOpenAI, count: int = EMBEDDERS) -> list[Embedder]:
    settings = OpenAIEmbedding(
        implementation="openai",
        model="text-embedding-3-small",
        dimensions=8,
        base_url=server.base_url,
    )
    policy = RequestPolicy(max_concurrent_requests=4, request_timeout=10, retry_budget=60)
    embedders = [make_embedder(settings, api_key=TEST_API_KEY, policy=policy) for _ in range(count)]
    for embedder in embedders:
        embedder.max_inputs_per_request = INPUTS_PER_REQUEST
    return embedders


async def run_against_budget(server: FakeOpenAI) -> tuple[float, int, int]:
    """Every embedder embeds its texts at once; (fraction of the budget, successes, 429s)."""
    embedders = openai_embedders(server)
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            embedder.embed([f"embedder {n} text {i}" for i in range(TEXTS_PER_CALL)])
            for n, embedder in enumerate(embedders)
        )
    )
    elapsed = time.monotonic() - started
    for embedder in embedders:
        await embedder.aclose()
    assert all(result.errors == {} for result in results)
    assert all(vector is not None for result in results for vector in result.vectors)
    assert embedders[0].limiter is embedders[-1].limiter  # one key, one endpoint: one budget
    statuses = [request.status for request in server.requests]
    ok, throttled = statuses.count(200), statuses.count(429)
    assert ok == EMBEDDERS * TEXTS_PER_CALL // INPUTS_PER_REQUEST
    # What the budget admits in that time: one second of burst, then the rate.
    print(f"{ok / (BUDGET_RPS * (elapsed + 1.0)):.2f} of the budget, {throttled} x 429")
    return ok / (BUDGET_RPS * (elapsed + 1.0)), ok, throttled


async def test_headers_keep_many_callers_within_the_budget(fake_openai: FakeOpenAI) -> None:
    fake_openai.configure(budget_rps=BUDGET_RPS)
    fraction, ok, throttled = await run_against_budget(fake_openai)
    assert 0.6 <= fraction <= 1.05
    assert throttled <= ok // 10


async def test_a_static_budget_keeps_many_callers_within_it(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_openai.configure(budget_rps=BUDGET_RPS, rate_limit_headers=False)
    monkeypatch.setenv("VECTORIZER_OPENAI_RPM", str(BUDGET_RPS * 60))
    fraction, ok, throttled = await run_against_budget(fake_openai)
    assert 0.6 <= fraction <= 1.05
    assert throttled <= ok // 10


async def test_429s_alone_are_enough_to_finish_without_failures(fake_openai: FakeOpenAI) -> None:
    fake_openai.configure(budget_rps=BUDGET_RPS, rate_limit_headers=False)
    fraction, ok, throttled = await run_against_budget(fake_openai)
    assert 0.4 <= fraction <= 1.05
    # The first wave goes out before anything is known; after that, few 429s.
    assert throttled <= ok // 2


async def test_a_429_pauses_every_embedder_sharing_the_key(fake_openai: FakeOpenAI) -> None:
    first, second = openai_embedders(fake_openai, 2)
    fake_openai.fail_next(429, retry_after_ms="500")
    one = asyncio.create_task(first.embed(["a"]))
    # wait until the first embedder has received the 429 and paused the shared limiter (the
    # server logging the request is not enough: the client may not have read the answer yet)
    deadline = asyncio.get_running_loop().time() + 5
    while first.limiter.paused_for <= 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.002)
    assert first.limiter.paused_for > 0
    result = await second.embed(["b"])
    assert second.limiter is first.limiter
    await one
    assert result.errors == {}
    throttled_at = fake_openai.requests[0].finished
    later = [request.started - throttled_at for request in fake_openai.requests[1:]]
    assert len(later) == 2
    assert min(later) >= 0.45
    for embedder in (first, second):
        await embedder.aclose()


async def test_throttling_past_the_retry_budget_is_a_vectorizer_error_not_row_errors(
    fake_openai: FakeOpenAI,
) -> None:
    settings = OpenAIEmbedding(
        implementation="openai",
        model="text-embedding-3-small",
        dimensions=8,
        base_url=fake_openai.base_url,
    )
    embedder = make_embedder(settings, policy=RequestPolicy(throttle_budget=0.5))
    fake_openai.fail_next(429, count=1000, retry_after_ms="100")
    with pytest.raises(VectorizerError, match=r"embedding provider unavailable: .*429"):
        await embedder.embed(["a", "b"])
    await embedder.aclose()


def test_throttled_error_is_transient() -> None:
    from vectorizer.errors import TransientError

    assert issubclass(ThrottledError, TransientError)
