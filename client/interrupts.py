"""Ending a blocking gRPC loop on Ctrl-C without raising KeyboardInterrupt inside grpc.

Python raises KeyboardInterrupt in the main thread at whatever bytecode it has reached when
SIGINT arrives. Inside grpc's stream iterator that can be between a lock's acquire and the
`with` that would release it: the interrupted thread keeps the call's lock, grpc's channel
thread waits for it forever, and channel.close() waits for the channel thread. That is how
`sarah watch` failed to end in full-suite runs; the mirror image of the race, reproduced
under load, ends it with "RuntimeError: cannot release un-acquired lock". So the loop runs
on a worker thread that no KeyboardInterrupt reaches; the main thread only waits for it,
and on Ctrl-C ends it from outside by closing the channel (grpc's own way to cancel calls
in flight from another thread).
"""

import threading
from collections.abc import Callable

# Seconds between looks at a Ctrl-C delivered to another thread; grpc's own waits use 0.1.
_POLL_S = 0.1
# Seconds the worker gets to end after `stop`; it needs far less, this only bounds it.
_FINISH_S = 10.0


def run_until_interrupted(work: Callable[[], None], stop: Callable[[], None]) -> bool:
    """Run `work` on a worker thread until it returns (its exception is raised here) or
    Ctrl-C; then call `stop`, which must end `work`'s calls (close its channel), and
    return True once the worker has ended (or after _FINISH_S: it is a daemon thread).
    What the worker raises after `stop` (the cancelled call's RpcError) is not raised."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as err:  # handed to the main thread, which raises it
            failed.append(err)

    worker = threading.Thread(target=run, name="sarah-worker", daemon=True)
    try:
        worker.start()
        # In slices: SIGINT may be delivered to another thread (grpc's, the worker), and
        # then only sets a flag that this thread checks once it is back in Python code;
        # a join without a timeout would sleep through it. Thread.join copes with a
        # KeyboardInterrupt (CPython bpo-45274); nothing of grpc's runs here meanwhile.
        while worker.is_alive():
            worker.join(_POLL_S)
    except KeyboardInterrupt:
        stop()
        # Let it finish what it was doing (its cancelled call fails at once; a wait before
        # resuming lasts at most the retry policy's max_backoff): a daemon thread still
        # writing to stdout while the interpreter exits can abort it.
        worker.join(_FINISH_S)
        return True
    if failed:
        raise failed[0]
    return False
