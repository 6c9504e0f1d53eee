"""The stage registry: every stage of a build declared once, read by the build, the dry run and the cache."""
