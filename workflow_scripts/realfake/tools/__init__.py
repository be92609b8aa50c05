"""Tools beside the workflow, run by make targets, not by rules: the benchmark (bench), the
rehearsals at paper counts and sizes (rehearsal, fullsize), the cost of a plan (cost), the config
reference (reference), the results document (resultsdoc) and a mini-world measurement (look)."""
