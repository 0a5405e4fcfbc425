"""Context-extension scalings (``pe/scaling=<name>``), one module per family.

The base class and ``none`` live in :mod:`rope_lab.pe.scaling`; the registry imports every module here.
"""
