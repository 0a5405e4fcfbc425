"""Blocks that call the backbone's positional encoding without owning it.

The PE is a child of the backbone only, so its parameters and buffers appear once in ``state_dict``, ``.to()``
moves them once and an optimizer sees them once; every attention block reaches the same object through
:class:`SharedPE` (kept out of ``nn.Module``'s child registry on purpose)."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from rope_lab.pe import PositionalEncoding


class SharedPE(nn.Module):
    """Mixin for a module that uses, but does not own, ``pe``: call :meth:`share_pe` in ``__init__``."""

    def share_pe(self, pe: PositionalEncoding) -> None:
        object.__setattr__(self, "_shared_pe", pe)  # not nn.Module.__setattr__: that would register a child

    @property
    def pe(self) -> PositionalEncoding:
        return self._shared_pe


def pe_users(model: nn.Module, pe: PositionalEncoding) -> Iterator[SharedPE]:
    """Every module inside ``model`` that uses ``pe`` through :class:`SharedPE`."""
    return (m for m in model.modules() if isinstance(m, SharedPE) and m.pe is pe)
