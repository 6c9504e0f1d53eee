"""One build job: run the stages, write the manifest, plan a dry run, record the job status."""
