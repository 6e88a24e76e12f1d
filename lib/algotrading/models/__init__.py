"""Models: the workshop's long/short forecaster in PyTorch (`forecast`) and its training entry
point (`train`), which runs in-process for the local backend and as a SageMaker training job."""
