"""Datasets shared by several tasks, each resolved through ``rope_lab.data.fetch`` (user path, public source,
package-registry fallback)."""
