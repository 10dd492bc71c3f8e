"""Every use densevision makes of a private API of Lightning or jsonargparse, in one place.

Each has no public equivalent today; ``tests/tasks/test_private_apis.py`` checks each one against the
installed version and fails, naming the function here, when the dependency changes (then adapt or
remove it):

- :func:`config_given_by_cli`: the parsed config LightningCLI hands the class it is building (Lightning
  keeps it in ``lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters`` and only
  ``save_hyperparameters`` reads it); tasks need it to know which of their arguments are objects.
- :func:`drop_linked_targets`: jsonargparse (4.53) passes a private ``linked_targets`` keyword to
  ``add_function_arguments``, which does not accept it, when a link targets an argument of a
  ``class_path`` that is a function (a preset such as ``fcdensenet56``).
"""

from __future__ import annotations

from typing import Any


def config_given_by_cli() -> dict[str, Any] | None:
    """The config LightningCLI is instantiating the current class from (``_class_path`` and its
    ``init_args``, values linked from the data module included), or None outside LightningCLI."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    return _given_hyperparameters.get()


def drop_linked_targets(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of ``add_function_arguments`` without jsonargparse's ``linked_targets``: it only marks the
    link targets as not required, which jsonargparse does again after the call."""
    return {k: v for k, v in kwargs.items() if k != "linked_targets"}
