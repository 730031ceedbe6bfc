"""How far reading a corpus has got: documents, megabytes and their rates, on the console.

On a terminal one line redraws itself with carriage returns; in a log file or a pipe the same
figures come as whole lines now and then (`use_progress_lines`, as training's progress does).
"""

import sys
import time

from tfllm.callbacks.progress_lines import use_progress_lines

MEGABYTE = 1e6


class ReadProgress:
    """The `progress` callable of `prepare_corpus`: shows documents and bytes read as they grow.

    A terminal gets a line redrawn at most every `redraw_seconds`; any other stream a whole line
    every `every_seconds`, or every `every_documents` documents when that is set. `finish` prints
    one summary line with the rates over the whole read.

    Args:
        stream: where lines go; default `sys.stdout` at the time of printing.
        every_seconds: float. Seconds between lines on a stream that is not a terminal.
        every_documents: int. Documents between lines on such a stream; 0 for none.
        redraw_seconds: float. Seconds between redraws on a terminal.
        clock: a function returning seconds, `time.perf_counter` unless a test passes its own.

    Call arguments:
        documents: int. Documents read so far.
        num_bytes: int. UTF-8 bytes of their text.

    Example:
    ```python
    progress = ReadProgress()
    prepare_corpus(path, out_dir, cleaner=Cleaner(), progress=progress)
    progress.finish()
    # Read 12,000 documents (48.0 MB) in 6.1 s: 1,967 documents/s, 7.87 MB/s
    ```
    """

    def __init__(self, stream=None, every_seconds=10.0, every_documents=0, redraw_seconds=0.1, clock=time.perf_counter):
        if every_seconds <= 0 or redraw_seconds <= 0:
            raise ValueError(
                f"every_seconds and redraw_seconds must be positive. Received: every_seconds={every_seconds}, "
                f"redraw_seconds={redraw_seconds}"
            )
        if every_documents < 0:
            raise ValueError(
                f"every_documents must be 0 (off) or positive. Received: every_documents={every_documents}"
            )
        self.stream = stream
        self.every_seconds = every_seconds
        self.every_documents = every_documents
        self.redraw_seconds = redraw_seconds
        self.clock = clock
        self.documents = 0
        self.num_bytes = 0
        self._start = None
        self._on_terminal = False
        self._last_time = None
        self._last_documents = 0
        self._drawn = 0  # characters of the line a terminal shows now; 0 when none is open

    def __call__(self, documents, num_bytes):
        now = self.clock()
        if self._start is None:
            self._start = self._last_time = now
            # Asked once: an isatty system call per document would cost more than the rest.
            self._on_terminal = not use_progress_lines(self._stream())
        self.documents, self.num_bytes = documents, num_bytes
        if self._on_terminal:
            if now - self._last_time >= self.redraw_seconds:
                self._last_time = now
                self._redraw(self._figures(now))
            return
        due = now - self._last_time >= self.every_seconds or (
            self.every_documents and documents - self._last_documents >= self.every_documents)
        if due:
            self._last_time, self._last_documents = now, documents
            self._print(self._figures(now))

    def summary(self):
        """One line: documents and megabytes read, the time taken and the rates over all of it."""
        return self._figures(self.clock())

    def finish(self):
        """Print the summary line (ending a redrawn line first); nothing when nothing was read."""
        if not self.documents:
            return
        self._print(self.summary())

    def _figures(self, now):
        seconds = now - self._start if self._start is not None else 0.0
        rate = max(seconds, 1e-9)
        return (
            f"Read {self.documents:,} documents ({self.num_bytes / MEGABYTE:,.1f} MB) in {seconds:.1f} s: "
            f"{self.documents / rate:,.0f} documents/s, {self.num_bytes / MEGABYTE / rate:,.2f} MB/s"
        )

    def _stream(self):
        return sys.stdout if self.stream is None else self.stream

    def _redraw(self, line):
        # Spaces over what is left of a longer line drawn before.
        stream = self._stream()
        stream.write("\r" + line.ljust(self._drawn))
        stream.flush()
        self._drawn = len(line)

    def _print(self, line):
        stream = self._stream()
        if self._drawn:
            stream.write("\r" + line.ljust(self._drawn) + "\n")
            self._drawn = 0
        else:
            stream.write(line + "\n")
        stream.flush()
