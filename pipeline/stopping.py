"""Stopping on a signal: SIGUSR1 (Slurm's warning before the time limit, forwarded by
launch/slurm/imagenet.sbatch and the torchrun agent) or SIGTERM (preemption, the agent's shutdown) asks
the run to finish its step, checkpoint and exit. A signal may reach one rank only, so every rank agrees
(a collective) before any stops."""
from __future__ import annotations

import logging
import signal
import threading

from pipeline import checkpoint

log = logging.getLogger(__name__)


class StopSignals:
    def __init__(self):
        self.signal: int | None = None  # the signal this process got; 0: another process got one

    def install(self):
        """Early, before set-up: a signal during set-up must not kill a rank mid-resume."""
        def request_stop(signum, frame):
            self.signal = signum
        if threading.current_thread() is not threading.main_thread():
            log.warning("Trainer built outside the main thread: SIGUSR1/SIGTERM will not checkpoint before exiting")
            return
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, request_stop)

    def requested(self, accelerator, collective: bool = True) -> bool:
        """Collective: all processes agree. Between logging steps (collective=False) a single process stops
        at once; several wait for the next check, so the steady state runs no collective."""
        if not collective and accelerator.num_processes > 1:
            return False
        stop = checkpoint.any_process(accelerator, self.signal is not None)
        if stop and self.signal is None:
            self.signal = 0
        return stop

    def cause(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "a signal to another process"
