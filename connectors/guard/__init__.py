"""The guard's decision log (``auditor.guard``) read back as evidence of use for the next audit."""
