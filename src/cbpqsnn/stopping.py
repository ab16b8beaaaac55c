"""Stopping on SIGTERM within seconds -- one process or every rank of a DDP run -- whatever the
run is doing when the signal lands (``timeout``, a container runtime, SLURM preemption).

Lightning's own SIGTERM handler (``_SignalConnector``) forwards the signal to the ranks the trainer
launched and then calls ``dist.broadcast`` inside the handler. Both hold only for the first trainer
of a run: a later trainer (the CBP stage, every test evaluation) launched no ranks -- they already
run -- so nothing is forwarded, and the broadcast on rank 0 alone has no partner on the other ranks
and waits forever (measured: two ranks alive 90 s after a SIGTERM in the CBP stage, and the issue's
three ranks ten minutes after). :class:`StopOnSigterm` replaces that handler while a trainer runs:
it sets the trainer's stop flag and nothing more (Lightning's loops stop at the end of the batch;
under DDP rank 0's flag also reaches the other ranks through the training loop's per-batch
broadcast), and forwards the signal to the ranks this process launched. In a process started by
``src/train.py`` (:func:`install`) the first SIGTERM also arms a watchdog that ends the process and
those ranks if it has not exited :data:`GRACE_S` seconds later, makes every later trainer stop at
once, and outside any trainer raises ``SIGTERMException`` at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

GRACE_S = 20.0  # after SIGTERM a process that has not exited by then is ended
SIGTERM_EXIT = 128 + signal.SIGTERM

log = logging.getLogger(__name__)
_launched: list[subprocess.Popen] = []  # the DDP ranks this process started (Lightning's launcher)
_watch = threading.Event()  # set by install(): this process ends itself GRACE_S after a SIGTERM
_armed = threading.Event()
_received = threading.Event()  # a SIGTERM reached this process: a later trainer stops at once


def _forward_and_arm() -> None:
    """Pass the signal on to the launched ranks; after install() (a process that ends with its
    run), remember it for later trainers and start the watchdog, once."""
    for process in _launched:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    if _watch.is_set() and not _armed.is_set():
        _received.set()
        _armed.set()
        threading.Thread(target=_watchdog, name="sigterm-watchdog", daemon=True).start()


def _watchdog() -> None:
    time.sleep(GRACE_S)
    log.error("still running %.0f s after SIGTERM: ending the process (and its DDP ranks) now", GRACE_S)
    for process in _launched:
        if process.poll() is None:
            process.kill()
    os._exit(SIGTERM_EXIT)


def _outside_trainer(signum: int, frame: Any) -> None:
    _forward_and_arm()
    raise SIGTERMException  # src/train.py reports it and exits with SIGTERM_EXIT


def install() -> None:
    """For a process that runs one job and exits (``src/train.py``, every DDP rank): SIGTERM
    outside trainers exits at once, and the watchdog is armed by the first SIGTERM (call from the
    main thread)."""
    _watch.set()
    signal.signal(signal.SIGTERM, _outside_trainer)


class StopOnSigterm(L.Callback):
    """While a trainer runs, SIGTERM sets its stop flag instead of Lightning's handler (module
    docstring); it records the ranks a trainer's launcher started, for the forwarding."""

    def _take_over(self, trainer: L.Trainer) -> None:
        launched = getattr(trainer.strategy.launcher, "procs", None)
        if launched:
            _launched[:] = launched
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda signum, frame: self._stop(trainer))
        if _received.is_set():  # it landed as the previous trainer finished: stop this one
            trainer._signal_connector.received_sigterm = True

    @staticmethod
    def _stop(trainer: L.Trainer) -> None:
        log.info("SIGTERM: stopping at the end of the current batch")
        trainer._signal_connector.received_sigterm = True  # what trainer.received_sigterm reads
        _forward_and_arm()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over(trainer)
