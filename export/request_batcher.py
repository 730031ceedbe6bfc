"""Concurrent `generate` requests merged into shared signature calls: `RequestBatcher`.

One decoding call over eight prompts costs a CPU far less than eight calls over one (the loop's
fixed costs are paid once, and the matrix products of a step use the CPU better over a batch),
so concurrent clients gain by sharing calls rather than each running a decoding loop of its own.
`tfllm serve` queues the requests to a `generate` signature (prompts string (batch,), scalar
`max_new_tokens`, `temperature`, `top_k`, `top_p`, `seed`) once they have been checked as any
request is; one worker thread takes the queue, waits up to `--batch-timeout-ms` for more (0: no
wait; the wait starts when the worker is free, so requests that queued during a call also wait
for the clients that call answers), merges those it may into calls of at most `--max-batch-size`
prompts and hands each request its own rows of the outputs. Requests that arrive while a call
runs wait for the next round.

Grouping rule: requests share a call only when that call gives each exactly the answer it would
get alone. They must have the same `max_new_tokens` (the packer cuts long prompts from the left
to leave room for it, and the completions end there), and be either
  - greedy (`temperature` 0, with a valid `top_k` >= 0 and 0 < `top_p` <= 1): `top_k`, `top_p`
    and `seed` do not change a greedy answer, so they are left out of the grouping; or
  - sampled with a fresh seed (`seed` < 0) and the same `temperature`, `top_k` and `top_p`:
    nothing is there to reproduce.
A sampled request with `seed` >= 0 runs in a call of its own: the graph's stateless draws depend
on the row's position in the batch, so merging would change its answer. So does any request the
rule does not cover (no prompt, an invalid setting), so that the graph answers it as before.

Order: the calls of one round start in the order of their first request's arrival (first come,
first served), on up to `batch_threads` threads at once (TF Serving's `num_batch_threads`), and
the next round starts once they have all ended. With several threads, the merged call of most
prompts is halved between its requests while the round holds fewer calls than threads and each
half keeps at least `MIN_SPLIT_ROWS` prompts: on a CPU, XLA runs a small decoding call on about
one core, so two half calls on two cores end sooner than one whole call (gpt-tiny, 96 new tokens,
2 cores: 8 prompts in one call 28-30 ms, in two calls of 4 at once 21-24 ms). Each half reads
all the weights again, so where weight reads dominate (a large model) `batch_threads=1` keeps
calls whole. A merged call is padded up to the next size of `batch_sizes(max_batch_size)`
(powers of two, and `max_batch_size` itself) with copies of its first prompt, whose answers are
dropped: XLA compiles the decoding loop once per batch size, and the padding bounds how many
sizes a server ever compiles. If a merged call fails (say one prompt the tokenizer refuses),
each of its requests runs again alone and gets its own answer or error. `batching=False`
(`tfllm serve --no-batching`) runs every request alone, in the thread that received it, as soon
as it arrives; the statistics are kept either way.
"""

import collections
import concurrent.futures
import dataclasses
import logging
import math
import os
import threading
import time

import numpy as np

GENERATE_INPUTS = ("prompts", "max_new_tokens", "temperature", "top_k", "top_p", "seed")
DEFAULT_TIMEOUT_MS = 5
# The fewest prompts either half of a merged call may hold when it is halved across threads: a
# half of one prompt would read all the weights for a single row.
MIN_SPLIT_ROWS = 2
# The calls `stats()` lists one by one.
RECENT_BATCHES = 50

logger = logging.getLogger(__name__)


def is_generate(specs):
    """Whether a signature with input specs `specs` (name to `tf.TensorSpec`) takes `generate`'s inputs."""
    if set(specs) != set(GENERATE_INPUTS):
        return False
    return specs["prompts"].shape.rank == 1 and all(specs[name].shape.rank == 0 for name in GENERATE_INPUTS[1:])


def group_key(arrays):
    """What a request's call must share with the requests merged with it; None to run it alone.

    `arrays` holds the request's `generate` inputs as NumPy arrays; see the module docstring.
    """
    if arrays["prompts"].shape[0] == 0:
        return None
    max_new_tokens, temperature, top_k, top_p, seed = (arrays[name].item() for name in GENERATE_INPUTS[1:])
    if temperature == 0 and top_k >= 0 and 0 < top_p <= 1:
        return ("greedy", max_new_tokens)
    if temperature > 0 and math.isfinite(temperature) and seed < 0:
        return ("sampled", max_new_tokens, temperature, top_k, top_p)
    return None


def batch_sizes(max_batch_size):
    """The sizes a merged call is padded to: powers of two below `max_batch_size`, then itself."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch_size:
        sizes.append(sizes[-1] * 2)
    return sizes + [max_batch_size] if max_batch_size > 1 else sizes


@dataclasses.dataclass(eq=False)
class Request:
    """One queued request: its signature's name and `call`, its input arrays, where its answer goes,
    and (computed) its number of prompts and its group key (None: alone)."""

    signature: str
    call: object
    arrays: dict
    future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)

    def __post_init__(self):
        self.rows = self.arrays["prompts"].shape[0]
        key = group_key(self.arrays)
        self.key = None if key is None else (self.signature, *key)


def plan(requests, max_batch_size):
    """The calls that answer `requests`: lists of requests, each list one signature call.

    Requests with the same `key` join the open call of their group until it would exceed
    `max_batch_size` prompts; a request without a key gets a call of its own. The calls come in
    the order of their first request.
    """
    calls, open_calls = [], {}
    for request in requests:
        key = request.key
        call = open_calls.get(key) if key is not None else None
        if call is None or rows(call) + request.rows > max_batch_size:
            call = []
            calls.append(call)
            if key is not None:
                open_calls[key] = call
        call.append(request)
    return calls


def spread(calls, threads, min_rows=MIN_SPLIT_ROWS):
    """`calls` (of `plan`) with merged calls halved until `threads` of them can run at once.

    The call of most prompts that can be halved is halved first, between two of its requests, as
    evenly as their prompts allow and with at least `min_rows` prompts on each side; the halves
    take its place in the order. Stops when there are `threads` calls or none can be halved.
    """
    calls = list(calls)
    while len(calls) < threads:
        halvings = [(rows(call), index, cut) for index, call in enumerate(calls)
                    if (cut := halving_point(call, min_rows)) is not None]
        if not halvings:
            break
        _, index, cut = max(halvings, key=lambda halving: (halving[0], -halving[1]))
        calls[index:index + 1] = [calls[index][:cut], calls[index][cut:]]
    return calls


def halving_point(call, min_rows):
    """The index that cuts `call` (a list of requests) into two calls of nearest prompt counts,
    each of at least `min_rows` prompts; None if there is none."""
    total, before, best = rows(call), 0, None
    for cut in range(1, len(call)):
        before += call[cut - 1].rows
        if min(before, total - before) >= min_rows and (best is None or abs(total - 2 * before) < best[0]):
            best = (abs(total - 2 * before), cut)
    return None if best is None else best[1]


def rows(call):
    """The number of prompts of a call (a list of requests)."""
    return sum(request.rows for request in call)


def default_batch_threads():
    """The threads that run merged calls at once by default: one per core this process may use,
    as TF Serving's `num_batch_threads`; one where a GPU is visible, which runs one call at a time
    and gains from larger ones."""
    import tensorflow as tf  # noqa: PLC0415  the batcher itself needs NumPy only

    if tf.config.list_physical_devices("GPU"):
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class RequestBatcher:
    """Runs `generate` requests, merging the concurrent ones that may share a call.

    The worker thread starts with the first request to merge, so a batcher that only ever sees
    other signatures costs nothing. `stop()` answers whatever is queued, then ends the thread.

    Args:
        max_batch_size: int. The most prompts in one call.
        batch_timeout_ms: int >= 0. How long the worker, once free, waits for more requests.
        batching: bool. False runs each request alone as soon as it arrives.
        pad: bool. Pad merged calls to the sizes of `batch_sizes(max_batch_size)`.
        batch_threads: int >= 1. How many calls of a round run at once; see the module docstring.

    Example:
    ```python
    batcher = RequestBatcher(max_batch_size=32, batch_timeout_ms=5)
    outputs = batcher.run("generate", call, arrays)   # call(arrays) -> {"text": ..., "num_tokens": ...}
    batcher.stop()
    ```
    """

    def __init__(self, max_batch_size, batch_timeout_ms=DEFAULT_TIMEOUT_MS, batching=True, pad=True, batch_threads=1):
        for name, value, least in (("batch_timeout_ms", batch_timeout_ms, 0), ("batch_threads", batch_threads, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}. Received: {name}={value!r}")
        self.max_batch_size = max_batch_size
        self.batch_timeout_ms = batch_timeout_ms
        self.batching = batching
        self.batch_threads = batch_threads
        # The threads beside the worker that run a round's calls; started with their first call.
        self._helpers = concurrent.futures.ThreadPoolExecutor(batch_threads - 1, "request-batcher-call") \
            if batch_threads > 1 else None
        self.sizes = batch_sizes(max_batch_size) if pad else None
        self._stats = BatchStats()
        self._queue = collections.deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._worker = None

    def run(self, signature, call, arrays):
        """`call(arrays)`'s outputs (name to NumPy array), from a call this request may share.

        Raises whatever the request's own call raised.
        """
        request = Request(signature, call, arrays)
        with self._changed:
            queued = self.batching and not self._stopping
            if queued:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._work, name="request-batcher", daemon=True)
                    self._worker.start()
                self._queue.append(request)
                self._changed.notify_all()
        if not queued:
            self._run_alone(request)
        return request.future.result()

    def stop(self, timeout=None):
        """Answers the queued requests, then ends the worker; False if it still runs after `timeout` s."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            worker = self._worker
        stopped = True
        if worker is not None:
            worker.join(timeout)
            stopped = not worker.is_alive()
        if self._helpers is not None:
            self._helpers.shutdown(wait=stopped)
        return stopped

    @property
    def running(self):
        """Whether the worker thread runs."""
        return self._worker is not None and self._worker.is_alive()

    def queue_length(self):
        with self._changed:
            return len(self._queue)

    def stats(self):
        """The settings, the queue and the counts of the calls run so far, as a JSON object."""
        return {"batching": self.batching, "batch_timeout_ms": self.batch_timeout_ms,
                "max_batch_size": self.max_batch_size, "batch_threads": self.batch_threads,
                "queue_length": self.queue_length(), **self._stats.snapshot()}

    def _work(self):
        while True:
            requests = self._take()
            if not requests:
                return
            self._run_round(spread(plan(requests, self.max_batch_size), self.batch_threads))

    def _run_round(self, calls):
        """Runs `calls` in order, up to `batch_threads` at once: this thread and the helpers each
        take the next call as they come free. Returns once all have ended."""
        pending = collections.deque(calls)

        def run_pending():
            while True:
                try:
                    call = pending.popleft()  # atomic: each call is taken once
                except IndexError:
                    return
                if call[0].key is None:
                    self._run_alone(call[0])
                else:
                    self._run_merged(call)

        helpers = [self._helpers.submit(run_pending) for _ in range(min(self.batch_threads, len(calls)) - 1)]
        run_pending()
        for helper in helpers:
            helper.result()

    def _take(self):
        """The queued requests, once they fill a call or `batch_timeout_ms` after the worker found
        them; [] to stop.

        The wait starts when the worker is free, not when the first request arrived: requests
        that queued while a call ran still wait for the clients that call is answering, whose
        next requests are on their way. Otherwise two halves of the clients would take turns in
        calls of half the size.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._queue or self._stopping)
            if self._queue:
                deadline = time.monotonic() + self.batch_timeout_ms / 1000
                while not self._stopping and rows(self._queue) < self.max_batch_size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
            requests = list(self._queue)
            self._queue.clear()
            return requests

    def _run_alone(self, request):
        start = time.perf_counter()
        try:
            request.future.set_result(request.call(request.arrays))
        except Exception as error:  # noqa: BLE001  the request's thread answers it
            request.future.set_exception(error)
        self._record(request.signature, [request], 0, start)

    def _run_merged(self, requests):
        """One call for `requests` (a group of `plan`), or one each if that call fails."""
        prompts = [request.arrays["prompts"] for request in requests]
        count = rows(requests)
        size = min((s for s in self.sizes if s >= count), default=count) if self.sizes else count
        if len(requests) == 1 and size == count:
            self._run_alone(requests[0])
            return
        start = time.perf_counter()
        try:
            padding = np.repeat(prompts[0][:1], size - count)
            outputs = requests[0].call({**requests[0].arrays, "prompts": np.concatenate([*prompts, padding])})
            for name, array in outputs.items():
                if np.ndim(array) == 0 or len(array) != size:
                    raise ValueError(f"output {name!r} of shape {np.shape(array)} does not have {size} rows")
        except Exception as error:  # noqa: BLE001  each request is run alone to find its own answer
            logger.debug("a merged call of %d requests failed (%s); running each alone", len(requests), error)
            self._stats.fallback()
            for request in requests:
                self._run_alone(request)
            return
        first = 0
        for request in requests:
            request.future.set_result({name: array[first:first + request.rows] for name, array in outputs.items()})
            first += request.rows
        self._record(requests[0].signature, requests, size - count, start)

    def _record(self, signature, requests, padding, start):
        milliseconds = (time.perf_counter() - start) * 1000
        prompts = rows(requests)
        self._stats.record(len(requests), prompts, padding, milliseconds)
        logger.debug("%s: one call for %d requests, %d rows + %d padding, %.1f ms, %d queued",
                     signature, len(requests), prompts, padding, milliseconds, self.queue_length())


class BatchStats:
    """Counts of the calls a `RequestBatcher` ran, safe to update from several threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = self.rows = self.batches = self.padding_rows = self.fallbacks = 0
        self.max_requests = self.max_rows = 0
        self.histogram = collections.Counter()  # requests per call -> calls
        self.recent = collections.deque(maxlen=RECENT_BATCHES)

    def record(self, requests, rows, padding, milliseconds):
        with self._lock:
            self.requests += requests
            self.rows += rows
            self.batches += 1
            self.padding_rows += padding
            self.max_requests = max(self.max_requests, requests)
            self.max_rows = max(self.max_rows, rows)
            self.histogram[requests] += 1
            self.recent.append({"requests": requests, "rows": rows, "padding_rows": padding,
                                "ms": round(milliseconds, 1)})

    def fallback(self):
        with self._lock:
            self.fallbacks += 1

    def snapshot(self):
        """The counts as a JSON object (see export/server.py for what each means)."""
        with self._lock:
            batches = max(self.batches, 1)
            return {
                "requests": self.requests,
                "rows": self.rows,
                "batches": self.batches,
                "merged_batches": self.batches - self.histogram[1],
                "mean_batch_requests": round(self.requests / batches, 3),
                "max_batch_requests": self.max_requests,
                "mean_batch_rows": round(self.rows / batches, 3),
                "max_batch_rows": self.max_rows,
                "padding_rows": self.padding_rows,
                "fallbacks": self.fallbacks,
                "batch_requests_histogram": {str(size): count for size, count in sorted(self.histogram.items())},
                "recent_batches": list(self.recent),
            }
