"""Backbone registry: ``@register_backbone("name")`` on a class with a ``Config`` dataclass.

A backbone class is built as ``cls(cfg, pe, spec)`` where ``spec`` (a :class:`rope_lab.tasks.base.TaskSpec`)
carries what the task decides: vocabulary, number of classes, image/patch sizes, position axes.
"""

from rope_lab.registry import Registry

BACKBONE = Registry("backbone", "rope_lab.backbones")
register_backbone = BACKBONE.register
