"""The job controller's core: run records, the stage state machine, and executors."""
