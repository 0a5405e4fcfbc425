"""Context-extension scalings (``pe/scaling=<name>``), one module per family.

The base class and ``none`` live in :mod:`rope_lab.pe.scalings.base`; the registry imports every module here.
"""
