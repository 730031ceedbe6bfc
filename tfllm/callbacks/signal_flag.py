"""SIGTERM/SIGINT turned into a flag that training acts on between steps."""

import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalFlag:
    """While installed, SIGTERM and SIGINT (preemption, Ctrl-C) only record their number.

    Saving inside a signal handler could interrupt a running TensorFlow call, so callbacks check
    `number` at the end of a step instead. `release()` puts back the handlers of before; Keras
    skips `on_train_end` when an exception ends `fit`, so whoever catches one releases too.
    """

    def __init__(self):
        self.number = None
        self._previous = {}

    def install(self):
        self.number = None
        for number in SIGNALS:
            self._previous[number] = signal.signal(number, self._record)

    def _record(self, number, frame):
        self.number = number

    def release(self):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
