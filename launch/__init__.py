"""Launchers: the same `python -m jaxdiff.main` command (or the points of a sweep) on Cloud TPU VMs or here.

    python -m launch.tpu_vm --name=NAME --zone=ZONE --accelerator_type=v4-8 --config=configs/X.py \
        --workdir=gs://BUCKET/runs/X [--sweep] [--queued] [--spot] [--dry_run] [-- --config.field=value ...]
    python -m launch.local --config=configs/X.py --workdir=workdirs/X [--sweep] [--dry_run] [-- ...]

`launch.common` turns (config, workdir, sweep points, extra flags) into one command per point;
`launch.tpu_vm` wraps those commands in gcloud calls (create or reuse a TPU VM / queued resource, copy and
install the package on every worker, start the run on all workers, tail, fetch, stop, delete) and estimates
the cost; `launch.local` runs them one after another on this machine. Every command is built by a pure
function returning an argument list, so `--dry_run` prints exactly what would run and tests assert it.
"""
