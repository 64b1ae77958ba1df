from kernel.migrations import run_env

run_env()
