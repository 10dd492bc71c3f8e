"""A CSV logger that keeps what the run folder already holds, so ``metrics.csv`` of a resumed run has the
epochs before the interruption too."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing ``metrics.csv`` when its folder is not empty; this one appends
    to it (rewriting it only to widen the header when new metric names appear, rows kept)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` appending to the ``metrics.csv`` it finds (the run folder's history survives a resume).

    Args: as ``lightning.pytorch.loggers.CSVLogger``.
    """

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

