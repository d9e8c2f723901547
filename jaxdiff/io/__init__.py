"""Input and output of a run: its directory layout (`RunDir`), file writes on local disks or `gs://`
(`paths`), metrics (`writers`), Orbax checkpoints (`checkpoints`) and figures (`figures`)."""
