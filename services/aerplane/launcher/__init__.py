"""`aerplane up`: runs the whole stack as local processes for one training run, and writes its report."""
