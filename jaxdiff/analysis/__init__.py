"""From many runs to scaling laws: tau_gen / tau_mem per run, their fits against n and width, the collapse
plots, the (n, p) phase diagram and paper 3's normalized step (SPEC sections 1, 2, 5 and "Definitions").

    python -m jaxdiff.analysis --workdirs DIR [DIR ...] --out DIR

or, in a notebook,

    from jaxdiff import analysis
    runs = analysis.load_runs(['workdirs/sweep'])
    rows = analysis.run_table(runs)
    fits = analysis.scaling_fits(rows)
    analysis.report(['workdirs/sweep'], 'workdirs/sweep/analysis')   # everything below, written to disk

`report` writes runs.csv (one row per run), fits.csv (exponents with bootstrap intervals),
local_exponents.csv (tau_mem's exponent between consecutive n), phase.csv, runs.md (all of them as Markdown),
summary.json, and the figures tau_vs_n.png, collapse_fmem.png, collapse_quality.png,
collapse_losses.png, normalized.png, phase.png, and collapse_T_<variable>.png (f_mem and the loss gap against
paper 3's normalized step, one per swept variable: n, batch_size, learning_rate, width).
"""

from jaxdiff.analysis.fits import (fit_scaling, local_exponents, normalization_reference, normalized_step,
                                   phase_diagram, scaling_fits)
from jaxdiff.analysis.report import report, write_csv, write_markdown
from jaxdiff.analysis.runs import Run, find_run_dirs, load_run, load_runs, run_info, run_table

__all__ = ['Run', 'find_run_dirs', 'load_run', 'load_runs', 'run_info', 'run_table', 'fit_scaling',
           'scaling_fits', 'local_exponents', 'phase_diagram', 'normalization_reference', 'normalized_step',
           'report', 'write_csv', 'write_markdown']
