"""Hyperparameters of zoo methods that subclass another zoo method.

``SSLMethod.store_hparams`` uses Lightning's frame inspection, which collects the
``__init__`` arguments of every class in the hierarchy: a subclass with another
signature (``MaskedBYOL(MaskedMoCo(GraftedMoCo))``) would save arguments its own
constructor does not take (``objective_args``), and ``load_from_checkpoint``
would fail. :func:`keep_own_hparams` keeps exactly the concrete class's
constructor arguments.
"""

from __future__ import annotations

import inspect

import pytorch_lightning as pl


def keep_own_hparams(method: pl.LightningModule) -> None:
    """Drops saved hyperparameters that ``type(method).__init__`` does not take.

    Call at the end of the subclass ``__init__``, after the base class saved
    them; outer (subclass) values already override inner ones there.
    """
    accepted = inspect.signature(type(method).__init__).parameters
    method.remove_ignored_hparams([k for k in method.hparams if k not in accepted])
