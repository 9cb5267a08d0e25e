"""What is computed from the draws: convergence diagnostics, reductions, dimension, critical
points, comparisons between experiments, and the landscape glue that runs them on a store."""
