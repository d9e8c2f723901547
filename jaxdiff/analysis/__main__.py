"""`python -m jaxdiff.analysis --workdirs DIR [DIR ...] --out DIR`: tables and figures of a set of runs."""

from __future__ import annotations

import argparse
import sys

from jaxdiff import timescales
from jaxdiff.analysis.report import report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m jaxdiff.analysis', description=__doc__)
  parser.add_argument('--workdirs', nargs='+', required=True,
                      help='run directories, or directories above them (searched for metrics.jsonl)')
  parser.add_argument('--out', required=True, help='output directory for the tables and figures')
  parser.add_argument('--quality_key', default=None,
                      help='recompute tau_gen from this metric (default: each run\'s summary.json)')
  parser.add_argument('--tau_gen_rel_tol', type=float, default=None,
                      help='recompute tau_gen with this tolerance (default: as each run recorded it)')
  parser.add_argument('--tau_gen_reference', choices=timescales.QUALITY_REFERENCES, default=None,
                      help="recompute tau_gen with the tolerance relative to the best value ('best') or to the "
                           "drop from the first evaluation to the best ('drop')")
  parser.add_argument('--bootstrap', type=int, default=2000, help='bootstrap resamples of the fits')
  parser.add_argument('--level', type=float, default=0.95, help='confidence level of the intervals')
  parser.add_argument('--no_figures', action='store_true', help='tables only')
  args = parser.parse_args(argv)
  try:
    out = report(args.workdirs, args.out, quality_key=args.quality_key, num_bootstrap=args.bootstrap,
                 level=args.level, figures=not args.no_figures, tau_gen_rel_tol=args.tau_gen_rel_tol,
                 tau_gen_reference=args.tau_gen_reference)
  except ValueError as e:
    print(f'jaxdiff.analysis: error: {e}', file=sys.stderr)
    return 2
  print(out['markdown'])
  return 0


if __name__ == '__main__':
  sys.exit(main())
