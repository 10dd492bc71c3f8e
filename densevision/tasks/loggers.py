"""A CSV logger that keeps what the run folder already holds, so ``metrics.csv`` of a resumed run has the
epochs before the interruption too."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        return [], []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` appending to the ``metrics.csv`` it finds (the run folder's history survives a resume).

    Lightning's writer deletes an existing ``metrics.csv`` when it starts (and warns that it will); this
    logger reads the file first and writes its rows back, so new rows follow them (the header widens when
    new metric names appear, rows kept).

    Args: as ``lightning.pytorch.loggers.CSVLogger``.
    """

    @property
    def experiment(self) -> ExperimentWriter:
        if not getattr(self, "_history_restored", False):
            self._history_restored = True
            keys, rows = _read_rows(Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE)
            with warnings.catch_warnings():
                # the deletion it announces is undone below
                warnings.filterwarnings("ignore", message="Experiment logs directory .* is not empty")
                writer = super().experiment
            if keys and isinstance(writer, ExperimentWriter):
                with open(writer.metrics_file_path, "w", newline="") as file:
                    out = csv.DictWriter(file, fieldnames=keys)
                    out.writeheader()
                    out.writerows(rows)
                writer.metrics_keys = list(keys)
            return writer
        return super().experiment
