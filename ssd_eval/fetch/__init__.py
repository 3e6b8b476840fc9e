"""Fetch the model files and the COCO val2017 data, verified and resumable, from http(s), ``file://`` or local
paths. A killed run never leaves a file that looks complete, and every failure the user can fix is a one-line
:class:`~ssd_eval.errors.UserError`."""

from ssd_eval.fetch.archive import ZIP_MAX_RATIO, ZIP_MAX_TOTAL_BYTES
from ssd_eval.fetch.ensure import ANNOTATIONS_MEMBER, IMAGES_PREFIX, ensure_coco, ensure_model
from ssd_eval.fetch.transfer import USER_AGENT, download

__all__ = ["ANNOTATIONS_MEMBER", "IMAGES_PREFIX", "USER_AGENT", "ZIP_MAX_RATIO", "ZIP_MAX_TOTAL_BYTES",
           "download", "ensure_coco", "ensure_model"]
