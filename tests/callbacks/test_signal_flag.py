import os
import signal

import pytest

from tfllm.callbacks.signal_flag import SignalFlag


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_records_the_signal_instead_of_acting_and_release_restores_the_handlers(number):
    previous = signal.getsignal(number)
    flag = SignalFlag()
    flag.install()
    assert flag.number is None
    os.kill(os.getpid(), number)  # would end the test process (or raise KeyboardInterrupt) otherwise
    assert flag.number == number
    flag.release()
    assert signal.getsignal(number) is previous
    flag.install()  # installing again starts clean
    assert flag.number is None
    flag.release()
