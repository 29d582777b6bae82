"""hetex identifiers package: CRIs, record ids, accelerator catalogue and regions (pure, no I/O)."""

from identifiers.specs import specs_dir

__all__ = ["specs_dir"]
