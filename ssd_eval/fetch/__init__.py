"""Fetch the model files and the COCO val2017 data, verified and resumable.

Downloads go to ``<dest>.part`` and only a verified file is moved into place, so
a killed run never leaves a file that looks complete; the next run resumes the
``.part`` with an HTTP Range request. Sources may be http(s) URLs, ``file://``
URLs or plain local paths (mirrors, local copies). Every failure the user can fix
is a one-line :class:`~ssd_eval.errors.UserError`.
"""

from ssd_eval.fetch.archive import ZIP_MAX_RATIO, ZIP_MAX_TOTAL_BYTES
from ssd_eval.fetch.ensure import ANNOTATIONS_MEMBER, IMAGES_PREFIX, ensure_coco, ensure_model
from ssd_eval.fetch.transfer import USER_AGENT, download

__all__ = ["ANNOTATIONS_MEMBER", "IMAGES_PREFIX", "USER_AGENT", "ZIP_MAX_RATIO", "ZIP_MAX_TOTAL_BYTES",
           "download", "ensure_coco", "ensure_model"]
