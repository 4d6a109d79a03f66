"""The trainer wing: training loops (``loops``), a run on prepared data (``train``), and what a run
writes into its folder (``outputs``)."""
