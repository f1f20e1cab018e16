"""slurmbatch: run Python functions as Slurm jobs over SSH, under asyncio or trio."""
