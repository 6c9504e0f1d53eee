"""`sortformer-build-publish`: a finished, verified release onto the Hugging Face model repo the
Swift runtime downloads from (read the release, refuse what is unfit, stage, describe, upload)."""
