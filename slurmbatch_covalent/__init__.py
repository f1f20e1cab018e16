"""A drop-in Covalent Slurm executor on the slurmbatch SDK."""
