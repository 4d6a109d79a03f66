"""The advisor wing: per-cut measurements (``measure``), the plan from them (``advise``), and the
study that runs every strategy on controlled cells to check and calibrate the plan (``study``)."""
