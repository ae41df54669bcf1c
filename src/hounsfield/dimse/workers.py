"""Extra DICOM processes sharing the port (SO_REUSEPORT).

pynetdicom serves each association in a Python thread, so all associations of one process share one core (the
GIL). ``serve`` therefore starts ``dicom_processes - 1`` more processes that each run the same DICOM service on
the same port and the same index and file store; the kernel spreads new associations over them. They stop with
the main process: on its SIGTERM (after their in-flight associations finish) or when it dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.process import BaseProcess

from hounsfield.config import Settings

log = logging.getLogger("hounsfield.dimse")


def process_count(settings: Settings) -> int:
    """Processes listening on the DICOM port (0 in the settings: two per core, at most 8)."""
    return settings.dicom_processes or min(8, 2 * (os.cpu_count() or 1))


def _worker(settings: Settings, parent: int) -> None:
    from hounsfield.pacs import Pacs

    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides; Ctrl-C reaches the whole group
    pacs = Pacs(settings, migrate=False)
    pacs.start_dicom(primary=False)
    orphaned = False
    while not stop.wait(0.2):
        if os.getppid() != parent:  # the main process died (SIGKILL): go down with it, as a crash would
            orphaned = True
            break
    pacs.close(grace=0 if orphaned else 30)


def start(settings: Settings) -> list[BaseProcess]:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(settings, os.getpid()), name=f"hounsfield-dicom-{i}",
                               daemon=False) for i in range(1, process_count(settings))]
    for w in workers:
        w.start()
    return workers


def stop(workers: list[BaseProcess], grace: float = 35.0) -> None:
    for w in workers:
        if w.is_alive():
            os.kill(w.pid, signal.SIGTERM)
    for w in workers:
        w.join(grace)
        if w.is_alive():
            log.warning("DICOM process %s did not stop in %.0f s; killing it", w.pid, grace)
            w.kill()
