"""`modelplane fetch`: bring a model from a URI into a Triton-style repository folder.

The package is split by concern: `uris` (parse), `layout` (where files land, pure), one module per
scheme (`local`, `http_client`, `s3`, `gcs`, `hf`), `transfer` (resume, retry, verify), `staging`
(the hidden partial folder, the manifest, the swap) and `pipeline` (the whole fetch).
"""

from modelplane_runtime.fetch.command import main

__all__ = ["main"]
