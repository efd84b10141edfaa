"""``stop_on_signals``: the first SIGINT/SIGTERM only asks the trainer to stop after its
iteration; a second one, or one during the final evaluation, interrupts at once; the previous
handlers come back afterwards. (Through the CLI: ``tests/reliability/test_interrupt.py``.)"""

import os
import signal
from types import SimpleNamespace

import pytest

from reid_plugins.engine.defaults import resume_command, stop_on_signals


def _trainer(iteration=3, max_iter=10):
    return SimpleNamespace(iter=iteration, max_iter=max_iter, _stop_signal=0)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_sets_the_flag_second_interrupts(signum):
    before = signal.getsignal(signum)
    trainer = _trainer()
    with stop_on_signals(trainer):
        os.kill(os.getpid(), signum)
        assert trainer._stop_signal == signum  # training goes on to the end of the iteration
        with pytest.raises(KeyboardInterrupt, match="received twice"):
            os.kill(os.getpid(), signum)
    assert signal.getsignal(signum) is before


def test_signal_during_the_final_evaluation_interrupts_at_once():
    trainer = _trainer(iteration=10, max_iter=10)
    with stop_on_signals(trainer):
        with pytest.raises(KeyboardInterrupt, match="after training"):
            os.kill(os.getpid(), signal.SIGTERM)
    assert trainer._stop_signal == 0


def test_resume_command_puts_resume_before_the_overrides():
    argv = ["tools/train_net.py", "--config-file", "a b.yaml", "--overwrite", "SOLVER.STEPS",
            "[1, 2]", "OUTPUT_DIR", "out"]  # fmt: skip
    assert resume_command(argv) == (
        "python tools/train_net.py --resume --config-file 'a b.yaml' SOLVER.STEPS '[1, 2]' "
        "OUTPUT_DIR out"
    )
