"""The `omniretriever` command line: one console script over model/, registry/, serving/ and pipelines/."""
